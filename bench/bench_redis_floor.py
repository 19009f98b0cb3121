"""What one Redis read costs a grpc.aio handler, whatever the handler does around it.

The Feature Store's one-entity target (GetFeatures p50 <= 1.3x the empty-RPC floor,
bench_features.py) assumes the read costs less than 30% of an empty RPC. This measures the
least a handler can do for it, in one bare grpc.aio server (no interceptors, no access log)
started by this script, subjects alternating per repetition:

  empty     a handler that returns at once: the floor
  redis     one redis-py MGET of one record (a GetFeatures record, about 530 bytes) over the
            pool the mesh uses (BlockingConnectionPool), parsed with orjson: the least GetFeatures
            does for one entity
  raw       the same MGET written on a plain asyncio stream and parsed with hiredis's reader
            (no client library): what a hand-written client would save, for the record
  hundred   one redis-py MGET of 100 records, parsed: the least a 100-entity read does

    python bench/bench_redis_floor.py [--quick] [--reps N] [--calls N]
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import _harness as h
import grpc

from ml_serving_tools import stack

RECORD = (b'["0123456789abcdef",1700000000000000,1700000000000000,[1,2,3,4,5,1.5,2.5,3.5,4.5,5.5,"US",'
          b'"mobile","segment-3","d41d8cd98f00b204e9800998ecf8427e",true,false,[1,2,3,4,5],["c1","c2","c3"],'
          b'[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8],[0.1,0.2,0.3]]]')
SUBJECTS = ("empty", "redis", "raw", "hundred")


async def serve(port: int, prefix: str) -> None:
    import hiredis
    import orjson
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(h.REDIS_URL, max_connections=64, timeout=2, socket_timeout=2)
    client = aioredis.Redis(connection_pool=pool)
    keys = [f"{prefix}:{i}" for i in range(100)]
    await client.mset({key: RECORD for key in keys})
    url = pool.connection_kwargs
    reader_stream, writer = await asyncio.open_connection(url.get("host", "127.0.0.1"), url.get("port", 6379))
    parser, lock = hiredis.Reader(), asyncio.Lock()
    one_raw = hiredis.pack_command(("MGET", keys[0]))
    if url.get("db"):
        writer.write(hiredis.pack_command(("SELECT", url["db"])))
        parser.feed(await reader_stream.read(64))
        parser.gets()

    async def empty(request, context):
        return b""

    async def one(request, context):
        orjson.loads(b"[" + b",".join(await client.mget(keys[:1])) + b"]")
        return b""

    async def raw(request, context):
        async with lock:
            writer.write(one_raw)
            reply = parser.gets()
            while reply is False:
                parser.feed(await reader_stream.read(65536))
                reply = parser.gets()
        orjson.loads(b"[" + b",".join(reply) + b"]")
        return b""

    async def hundred(request, context):
        orjson.loads(b"[" + b",".join(await client.mget(keys)) + b"]")
        return b""

    handlers = {"empty": empty, "redis": one, "raw": raw, "hundred": hundred}
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Floor", {name: grpc.unary_unary_rpc_method_handler(f) for name, f in handlers.items()}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()  # until SIGTERM; main() removes the keys


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=None, help="sequential calls per subject and repetition "
                                                          "(default 3000, 500 with --quick)")
    args = p.parse_args()
    reps, calls = h.reps_of(args), args.calls or (500 if args.quick else 3000)
    port, prefix = stack.free_port(), f"bench-floor-{uuid.uuid4().hex[:8]}"
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), prefix],
                              stdout=subprocess.PIPE, text=True)
    try:
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the bench server did not start")
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            callers = {name: channel.unary_unary(f"/bench.Floor/{name}") for name in SUBJECTS}

            def run(name: str):
                cpu0 = h.cpu_seconds(server.pid)
                latencies = h.sequential_latencies(callers[name], b"", calls, warmup=calls // 10)
                return latencies, (h.cpu_seconds(server.pid) - cpu0) / (calls + calls // 10) * 1e6

            h.progress(f"{calls} sequential calls per subject x {reps} repetitions")
            runs = h.alternating(reps, {name: (lambda name=name: run(name)) for name in SUBJECTS})
    finally:
        server.terminate()
        server.wait(timeout=10)
        import redis
        with redis.Redis.from_url(h.REDIS_URL) as client:
            client.delete(*[f"{prefix}:{i}" for i in range(100)])
    p50 = {name: [h.percentile(lat, 50) for lat, _ in runs[name]] for name in SUBJECTS}
    cpu = {name: [c for _, c in runs[name]] for name in SUBJECTS}
    h.result(f"# bench_redis_floor: bare grpc.aio server, {calls} sequential calls, {reps} reps")
    h.result(h.ratio_line("one redis-py MGET + parse, p50", p50["redis"], p50["empty"], "ms", "empty handler"))
    h.result(h.ratio_line("one hand-written MGET + parse, p50", p50["raw"], p50["empty"], "ms", "empty handler"))
    h.result(h.ratio_line("100-record redis-py MGET + parse, p50", p50["hundred"], p50["redis"], "ms", "one record"))
    h.result("# " + h.ratio_line("server cpu/call, one redis-py MGET", cpu["redis"], cpu["empty"], "us",
                                 "empty handler"))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        asyncio.run(serve(int(sys.argv[2]), sys.argv[3]))
        raise SystemExit(0)
    raise SystemExit(main())

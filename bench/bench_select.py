"""Select over direct gRPC against the empty-RPC floor (grpc.health.v1.Health/Check), same server.

Both go through the same server interceptors; the difference is what Select itself costs
(a snapshot of the posteriors, Thompson sampling, a signed decision id, the pull tally). Per repetition, in
alternating order: sequential latency (blocking calls on one reused channel, raw bytes in
and out, requests built once) and throughput at 64 in flight (grpc.aio, one channel).

    python bench/bench_select.py [--quick] [--reps N] [--access-log on|off]
"""

from __future__ import annotations

import asyncio

import _harness as h
import grpc

ARMS = 10


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=None, help="sequential calls per repetition (default 2000)")
    p.add_argument("--window", type=float, default=None, help="throughput window in seconds (default 3)")
    p.add_argument("--in-flight", type=int, default=64)
    args = p.parse_args()
    reps = h.reps_of(args)
    calls = args.calls or (300 if args.quick else 2000)
    window = args.window or (1.0 if args.quick else 3.0)
    warmup = 50 if args.quick else 300

    with h.Mesh("select", access_log=args.access_log == "on", keep_logs=args.keep_logs) as mesh:
        bandit = "bench-select"
        with grpc.insecure_channel(mesh.grpc_addr) as channel:
            h.create_bandit(channel, bandit, ARMS)
            h.check_select(channel, bandit)
            select = h.raw_unary(channel, h.BANDIT_SERVICE + "Select")
            health = h.raw_unary(channel, h.HEALTH_CHECK)
            select_req, health_req = h.select_request_bytes(bandit), h.health_request_bytes()

            h.progress(f"sequential: {calls} calls x {reps} repetitions (after {warmup} warm-up calls)")
            seq = h.alternating(reps, {
                "floor": lambda: h.sequential_latencies(health, health_req, calls, warmup),
                "select": lambda: h.sequential_latencies(select, select_req, calls, warmup),
            })

        async def throughput(method: str, request: bytes) -> tuple[float, float]:
            """(calls per second, server CPU microseconds per call) at args.in_flight in flight."""
            async with grpc.aio.insecure_channel(mesh.grpc_addr) as channel:
                call = h.raw_unary(channel, method)
                rate, done, cpu = await h.closed_loop_throughput(
                    call, lambda i: request, args.in_flight, window, warmup_s=0.3 if args.quick else 0.5,
                    probe=lambda: h.cpu_seconds(mesh.pid))
                return rate, cpu / done * 1e6

        h.progress(f"throughput: {args.in_flight} in flight, {window} s windows x {reps} repetitions")
        tput = h.alternating(reps, {
            "floor": lambda: asyncio.run(throughput(h.HEALTH_CHECK, health_req)),
            "select": lambda: asyncio.run(throughput(h.BANDIT_SERVICE + "Select", select_req)),
        })

    log = f"access log {args.access_log}"
    p50 = {k: [h.percentile(v, 50) for v in seq[k]] for k in seq}
    p99 = {k: [h.percentile(v, 99) for v in seq[k]] for k in seq}
    h.result(f"# bench_select: Select ({ARMS} arms) vs Health/Check floor, direct gRPC, {calls} sequential "
             f"calls, {args.in_flight} in flight x {window} s, {reps} reps, {log}")
    h.result(h.ratio_line("select p50", p50["select"], p50["floor"], "ms", "floor", target=1.3))
    h.result(h.ratio_line("select p99", p99["select"], p99["floor"], "ms", "floor"))
    rate = {k: [r for r, _ in v] for k, v in tput.items()}
    cpu = {k: [c for _, c in v] for k, v in tput.items()}
    h.result(h.ratio_line(f"select throughput@{args.in_flight}", rate["select"], rate["floor"], "req/s", "floor",
                          higher_is_better=True))
    h.result(h.ratio_line(f"select server cpu/call@{args.in_flight}", cpu["select"], cpu["floor"], "us", "floor"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Reward ingestion in rewards per second: BatchReward against single Reward RPCs (the baseline).

Every reward names its bandit and arm directly (no decision id) and carries a unique
event id, so each one is counted (nothing is deduplicated away). Requests are built as
raw protobuf bytes before the timed window, so the client spends its time sending.
Per repetition, in alternating order: single Reward at 64 in flight, BatchReward of
100 and of 1000 rewards at a few in flight; the event-id keys are deleted between runs.

    python bench/bench_rewards.py [--quick] [--reps N] [--access-log on|off]
"""

from __future__ import annotations

import asyncio
import itertools

import _harness as h
import grpc
from mnbara.mlserving.bandit.v1 import bandit_pb2

ARMS = 10
BANDIT = "bench-rewards"
_run = itertools.count()


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# RewardRequest without its event id (field 5), for every arm and reward value.
_TEMPLATES = [
    bandit_pb2.RewardRequest(bandit=BANDIT, arm_id=f"arm-{arm}", reward=reward).SerializeToString()
    for arm in range(ARMS) for reward in (0.0, 1.0)
]


def reward_item(tag: str, i: int) -> bytes:
    """A serialised RewardRequest with event id `tag-i` (field order does not matter to parsers)."""
    event_id = f"{tag}-{i}".encode()
    return _TEMPLATES[(i * 7) % len(_TEMPLATES)] + b"\x2a" + _varint(len(event_id)) + event_id


def batch_bytes(tag: str, start: int, size: int) -> bytes:
    """A serialised BatchRewardRequest of `size` rewards (repeated field 1)."""
    parts = []
    for i in range(start, start + size):
        item = reward_item(tag, i)
        parts.append(b"\x0a" + _varint(len(item)) + item)
    return b"".join(parts)


async def ingest(addr: str, method: str, pool: list[bytes], per_request: int, in_flight: int,
                 window: float, warmup: float) -> float:
    async with grpc.aio.insecure_channel(addr, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        call = h.raw_unary(channel, method)
        rate, done, _ = await h.closed_loop_throughput(call, pool.__getitem__, in_flight, window, warmup,
                                                    limit=len(pool))
    if done == 0:
        raise RuntimeError("no request completed in the window")
    return rate * per_request


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--window", type=float, default=None, help="seconds per measurement (default 3)")
    p.add_argument("--batch-sizes", default="100,1000")
    p.add_argument("--batch-in-flight", type=int, default=4)
    p.add_argument("--single-in-flight", type=int, default=64)
    p.add_argument("--pool", type=int, default=None,
                   help="rewards pre-built per measurement, the cap if the server is fast (default 200000)")
    args = p.parse_args()
    reps = h.reps_of(args)
    window = args.window or (1.0 if args.quick else 3.0)
    warmup = 0.3 if args.quick else 0.5
    pool_size = args.pool or (60_000 if args.quick else 200_000)
    sizes = [int(s) for s in args.batch_sizes.split(",") if s]
    counts: dict[str, list[int]] = {}

    with h.Mesh("rewards", access_log=args.access_log == "on", keep_logs=args.keep_logs) as mesh:
        with grpc.insecure_channel(mesh.grpc_addr) as channel:
            h.create_bandit(channel, BANDIT, ARMS)
            # Sanity: a batch of unique events is counted whole, and a single reward is not a duplicate.
            check = bandit_pb2.BatchRewardResponse.FromString(
                h.raw_unary(channel, h.BANDIT_SERVICE + "BatchReward")(batch_bytes("check", 0, 10), timeout=10))
            assert check.applied_count == 10 and check.duplicate_count == 0, check
            single = bandit_pb2.RewardResponse.FromString(
                h.raw_unary(channel, h.BANDIT_SERVICE + "Reward")(reward_item("check", 99), timeout=10))
            assert not single.duplicate and single.bandit == BANDIT, single

        def run_single() -> float:
            tag = f"s{next(_run)}"
            pool = [reward_item(tag, i) for i in range(min(pool_size, 60_000))]
            try:
                return asyncio.run(ingest(mesh.grpc_addr, h.BANDIT_SERVICE + "Reward", pool, 1,
                                          args.single_in_flight, window, warmup))
            finally:
                mesh.delete_keys(f"bandit:{{{BANDIT}}}:ev:{tag}-*")

        def run_batch(size: int):
            def run() -> float:
                tag = f"b{size}r{next(_run)}"
                pool = [batch_bytes(tag, n * size, size) for n in range(max(pool_size // size, 2 * args.batch_in_flight))]
                try:
                    return asyncio.run(ingest(mesh.grpc_addr, h.BANDIT_SERVICE + "BatchReward", pool, size,
                                              args.batch_in_flight, window, warmup))
                finally:
                    counts.setdefault(f"batch{size}", []).append(
                        mesh.delete_keys(f"bandit:{{{BANDIT}}}:ev:{tag}-*"))
            return run

        h.progress(f"single at {args.single_in_flight} in flight vs batches {sizes} at {args.batch_in_flight} "
                   f"in flight, {window} s windows x {reps} repetitions")
        subjects = {"single": run_single}
        subjects.update({f"batch{s}": run_batch(s) for s in sizes})
        rates = h.alternating(reps, subjects)

    h.result(f"# bench_rewards: rewards/s, unique event ids, single Reward x{args.single_in_flight} in flight "
             f"vs BatchReward x{args.batch_in_flight} in flight, {window} s windows, {reps} reps, "
             f"access log {args.access_log}")
    h.result(f"reward single@{args.single_in_flight} {h.fmt(h.median(rates['single']))} rewards/s "
             f"(median of {reps}, range {h.fmt(min(rates['single']))}-{h.fmt(max(rates['single']))})")
    for s in sizes:
        key = f"batch{s}"
        h.result(h.ratio_line(f"reward batch{s}@{args.batch_in_flight}", rates[key], rates["single"],
                              "rewards/s", "single", higher_is_better=True))
        used = max(counts.get(key, [0]))
        if used >= (max(pool_size // s, 2 * args.batch_in_flight) * s):
            h.result(f"  note: batch{s} used its whole pool of {used} rewards before the window ended "
                     f"(the rate is still over the time taken); raise --pool for a full window")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Resident memory of one mesh server hosting all five services.

Per repetition: start the server (MESH_SERVICES=all), make a few calls (Health/Check,
then CreateBandit, Select, Reward, GetStats), let it settle, read VmRSS from /proc/<pid>/status.
Then, as a second figure, RSS after a short load (sequential Selects and a batch of rewards).

    python bench/bench_rss.py [--quick] [--reps N]
"""

from __future__ import annotations

import time

import _harness as h
import grpc
from mnbara.mlserving.bandit.v1 import bandit_pb2

TARGET_MB = 150.0


def one(args, calls: int) -> tuple[float, float, float]:
    with h.Mesh("rss", services="all", access_log=args.access_log == "on", keep_logs=args.keep_logs) as mesh:
        with grpc.insecure_channel(mesh.grpc_addr) as channel:
            health = h.raw_unary(channel, h.HEALTH_CHECK)
            health(h.health_request_bytes(), timeout=10)
            h.create_bandit(channel, "bench-rss", 10)
            h.check_select(channel, "bench-rss")
            reward = channel.unary_unary(h.BANDIT_SERVICE + "Reward",
                                         request_serializer=bandit_pb2.RewardRequest.SerializeToString,
                                         response_deserializer=bandit_pb2.RewardResponse.FromString)
            reward(bandit_pb2.RewardRequest(bandit="bench-rss", arm_id="arm-1", reward=1.0, event_id="e1"), timeout=10)
            stats = channel.unary_unary(h.BANDIT_SERVICE + "GetStats",
                                        request_serializer=bandit_pb2.GetStatsRequest.SerializeToString,
                                        response_deserializer=bandit_pb2.GetStatsResponse.FromString)
            stats(bandit_pb2.GetStatsRequest(bandit="bench-rss"), timeout=10)
            time.sleep(1.0)
            idle = h.rss_mb(mesh.pid)

            select = h.raw_unary(channel, h.BANDIT_SERVICE + "Select")
            h.sequential_latencies(select, h.select_request_bytes("bench-rss"), calls, 0)
            batch = h.raw_unary(channel, h.BANDIT_SERVICE + "BatchReward")
            items = [bandit_pb2.RewardRequest(bandit="bench-rss", arm_id=f"arm-{i % 10}", reward=float(i % 2),
                                              event_id=f"load-{i}") for i in range(1000)]
            batch(bandit_pb2.BatchRewardRequest(rewards=items).SerializeToString(), timeout=30)
            time.sleep(0.5)
            loaded = h.rss_mb(mesh.pid)
            peak = h.rss_mb(mesh.pid, "VmHWM")
    return idle, loaded, peak


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    args = p.parse_args()
    reps = args.reps or (1 if args.quick else 3)
    calls = 300 if args.quick else 2000
    runs = []
    for rep in range(reps):
        runs.append(one(args, calls))
        h.progress(f"run {rep + 1}/{reps}: idle {runs[-1][0]:.1f} MB, after load {runs[-1][1]:.1f} MB")
    idle = [r[0] for r in runs]
    loaded = [r[1] for r in runs]
    peak = [r[2] for r in runs]
    ok = h.median(idle) < TARGET_MB
    h.result(f"# bench_rss: one server, MESH_SERVICES=all, {reps} fresh starts, access log {args.access_log}")
    h.result(f"rss idle {h.median(idle):.1f} MB (median of {reps}, range {min(idle):.1f}-{max(idle):.1f}) "
             f"[target < {TARGET_MB:.0f} MB: {'met' if ok else 'MISSED'}]")
    h.result(f"rss after {calls} selects + 1000 rewards {h.median(loaded):.1f} MB, peak (VmHWM) "
             f"{h.median(peak):.1f} MB (median of {reps})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What the decision log costs Select, and how fast EvaluatePolicy replays a million decisions.

1. Select p50 with the log on (PostgreSQL, in a database of its own) against the same mesh
   code with the log off (BANDIT_DECISION_LOG=false), two mesh processes, same run, in
   alternating order: sequential latency over direct gRPC (one reused channel, raw bytes).
   Target: at most 1.05x.
2. EvaluatePolicy over 1,000,000 logged decisions (written straight into the log's tables,
   20 arms, half of them rewarded), a fixed and a learning candidate, over gRPC: seconds,
   reading from PostgreSQL included. Target: under 60 s.

    python bench/bench_decision_log.py [--quick] [--reps N] [--decisions N]
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone

import _harness as h
import grpc
import numpy as np
from mnbara.mlserving.bandit.v1 import bandit_pb2 as pb

from ml_serving_server.services.bandit.domain.decision_log import LoggedDecision, LoggedReward, decision_key
from ml_serving_server.services.bandit.postgres_decision_log import PostgresDecisionLog
from ml_serving_tools import devservices
from ml_serving_tools.paths import STATE_DIR

ARMS = 10


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=None, help="sequential calls per repetition (default 2000)")
    p.add_argument("--decisions", type=int, default=None, help="decisions EvaluatePolicy replays (default 1e6)")
    args = p.parse_args()
    reps, calls = h.reps_of(args), args.calls or (300 if args.quick else 2000)
    decisions = args.decisions or (100_000 if args.quick else 1_000_000)
    h._stop_on_sigterm()
    server = devservices.ensure_postgres(STATE_DIR)
    dbname = f"bench_decision_log_{uuid.uuid4().hex[:8]}"
    url = devservices.create_database_if_missing(server, dbname)
    try:
        select_overhead(url, args, reps, calls)
        evaluation(url, args, decisions)
    finally:
        devservices.drop_database(server, dbname)
    return 0


def select_overhead(url: str, args, reps: int, calls: int) -> None:
    warmup = 50 if args.quick else 300
    common = {"MESH_SERVICES": "bandit"}
    with h.Mesh("log-off", access_log=args.access_log == "on", env={**common, "BANDIT_DECISION_LOG": "false"}) as off, \
            h.Mesh("log-on", access_log=args.access_log == "on", env={**common, "DATABASE_URL": url}) as on, \
            grpc.insecure_channel(off.grpc_addr) as off_channel, grpc.insecure_channel(on.grpc_addr) as on_channel:
        selects = {}
        for label, channel in (("off", off_channel), ("on", on_channel)):
            h.create_bandit(channel, "bench-log", ARMS)
            h.check_select(channel, "bench-log")
            selects[label] = h.raw_unary(channel, h.BANDIT_SERVICE + "Select")
        request = h.select_request_bytes("bench-log")
        h.progress(f"sequential: {calls} calls x {reps} repetitions, log off and on")
        seq = h.alternating(reps, {label: (lambda call=call: h.sequential_latencies(call, request, calls, warmup))
                                   for label, call in selects.items()})
        listed = pb.ListDecisionsResponse.FromString(h.raw_unary(on_channel, h.BANDIT_SERVICE + "ListDecisions")(
            pb.ListDecisionsRequest(bandit="bench-log", page_size=1).SerializeToString(), timeout=30))
        assert listed.decisions and listed.decisions[0].propensity > 0, "the log holds no decisions"
    p50 = {k: [h.percentile(v, 50) for v in seq[k]] for k in seq}
    h.result(f"# bench_decision_log: Select ({ARMS} arms) with the decision log on vs off, direct gRPC, "
             f"{calls} sequential calls, {reps} reps")
    h.result(h.ratio_line("select p50 with the decision log", p50["on"], p50["off"], "ms", "log off", target=1.05))


def evaluation(url: str, args, n: int) -> None:
    with h.Mesh("ope", env={"MESH_SERVICES": "bandit", "DATABASE_URL": url,
                            "BANDIT_EVALUATION_MAX_DECISIONS": str(n)}) as mesh, \
            grpc.insecure_channel(mesh.grpc_addr) as channel:
        incarnation = create_ope_bandit(channel)
        h.progress(f"writing {n} logged decisions")
        asyncio.run(write_log(url, "bench-ope", incarnation, n))
        evaluate = channel.unary_unary(h.BANDIT_SERVICE + "EvaluatePolicy",
                                       request_serializer=pb.EvaluatePolicyRequest.SerializeToString,
                                       response_deserializer=pb.EvaluatePolicyResponse.FromString)
        for label, request in (
                ("fixed candidate", pb.EvaluatePolicyRequest(bandit="bench-ope", arm_probabilities={"arm-3": 1.0})),
                ("learning candidate", pb.EvaluatePolicyRequest(bandit="bench-ope",
                                                                policy=pb.CandidatePolicy(discount=0.001)))):
            started = time.perf_counter()
            reply = evaluate(request, timeout=600)
            took = time.perf_counter() - started
            assert reply.decision_count == n, reply.decision_count
            h.result(f"evaluate_policy {label} over {n} decisions: {took:.1f} s [target < 60 s: "
                     f"{'met' if took < 60 else 'missed'}] (IPS {reply.estimates[0].value:.4f})")


def create_ope_bandit(channel) -> int:
    """The bandit the written log belongs to; returns its incarnation (creation time in microseconds)."""
    created = pb.CreateBanditResponse.FromString(h.raw_unary(channel, h.BANDIT_SERVICE + "CreateBandit")(
        pb.CreateBanditRequest(bandit=pb.Bandit(name="bench-ope", arms=[pb.Arm(id=f"arm-{i}") for i in range(20)]))
        .SerializeToString(), timeout=10))
    return int(created.bandit.create_time.ToDatetime(timezone.utc).timestamp() * 1_000_000)


async def write_log(url: str, bandit: str, incarnation: int, n: int, batch: int = 50_000) -> None:
    """`n` decisions over 20 arms (uniform logging: propensity 1/20), half rewarded, in a known world."""
    log = PostgresDecisionLog(url, timeout_s=60, evaluation_timeout_s=600)
    rng = np.random.default_rng(1)
    means = np.linspace(0.1, 0.5, 20)
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    try:
        for offset in range(0, n, batch):
            rows, rewards = [], []
            for i in range(offset, min(n, offset + batch)):
                arm = int(rng.integers(20))
                decision_id = f"d2.bench-{i}"
                key, at = decision_key(decision_id), start + timedelta(microseconds=i)
                rows.append(LoggedDecision(bandit, incarnation, key, decision_id, at, "", tuple(range(20)), (arm,),
                                           (0.0,), 1 / 20, (1 / 20,), (), "thompson"))
                if i % 2:
                    rewards.append(LoggedReward(bandit, incarnation, key, arm, float(rng.random() < means[arm]), at))
            await log.write(rows, rewards)
    finally:
        await log.close()


if __name__ == "__main__":
    raise SystemExit(main())

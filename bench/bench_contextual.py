"""SelectContextual against Select, over direct gRPC, same server, same run.

One bandit with 10 arms and a 10-value context, first taught by 500 contextual rewards so
its models are not the prior. Per repetition, in alternating order, sequential latency
(blocking calls on one reused channel, raw bytes in and out, requests built once) of:
Select, SelectContextual, and a Reward of each kind's decision (event ids fresh per call).

    python bench/bench_contextual.py [--quick] [--reps N] [--arms N] [--dimension D]
"""

from __future__ import annotations

import itertools

import _harness as h
import grpc
import numpy as np
from mnbara.mlserving.bandit.v1 import bandit_pb2


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=None, help="sequential calls per repetition (default 2000)")
    p.add_argument("--arms", type=int, default=10)
    p.add_argument("--dimension", type=int, default=10)
    args = p.parse_args()
    reps, calls = h.reps_of(args), args.calls or (300 if args.quick else 2000)
    warmup = 50 if args.quick else 300
    rng = np.random.default_rng(0)
    context = [float(v) for v in rng.random(args.dimension)]

    with h.Mesh("contextual", access_log=args.access_log == "on", keep_logs=args.keep_logs) as mesh:
        bandit = "bench-contextual"
        with grpc.insecure_channel(mesh.grpc_addr) as channel:
            h.create_bandit(channel, bandit, args.arms, context_dimension=args.dimension)
            select = h.raw_unary(channel, h.BANDIT_SERVICE + "Select")
            contextual = h.raw_unary(channel, h.BANDIT_SERVICE + "SelectContextual")
            reward = h.raw_unary(channel, h.BANDIT_SERVICE + "Reward")
            contextual_req = bandit_pb2.SelectContextualRequest(bandit=bandit, context=context,
                                                                user_id="bench-user").SerializeToString()
            teach(reward, contextual, bandit, args.dimension, rng)
            select_req = h.select_request_bytes(bandit)
            rewards = {kind: reward_requests(call, request, calls + warmup)
                       for kind, call, request in (("select", select, select_req),
                                                   ("contextual", contextual, contextual_req))}
            h.progress(f"sequential: {calls} calls x {reps} repetitions (after {warmup} warm-up calls)")
            seq = h.alternating(reps, {
                "select": lambda: h.sequential_latencies(select, select_req, calls, warmup),
                "contextual": lambda: h.sequential_latencies(contextual, contextual_req, calls, warmup),
                "reward of select": lambda: latencies_of_each(reward, next(rewards["select"]), calls, warmup),
                "reward of contextual": lambda: latencies_of_each(reward, next(rewards["contextual"]), calls,
                                                                  warmup),
            })

    p50 = {k: [h.percentile(v, 50) for v in seq[k]] for k in seq}
    h.result(f"# bench_contextual: SelectContextual vs Select ({args.arms} arms, context of {args.dimension}), "
             f"direct gRPC, {calls} sequential calls, {reps} reps, access log {args.access_log}")
    h.result(h.ratio_line("select_contextual p50", p50["contextual"], p50["select"], "ms", "Select", target=1.3))
    h.result(h.ratio_line("reward of a contextual decision p50", p50["reward of contextual"],
                          p50["reward of select"], "ms", "reward of a Select decision"))
    return 0


def teach(reward, contextual, bandit: str, dimension: int, rng: np.random.Generator, n: int = 500) -> None:
    """`n` contextual decisions, each rewarded: models with evidence, as in production."""
    for i in range(n):
        x = [float(v) for v in rng.random(dimension)]
        reply = bandit_pb2.SelectContextualResponse.FromString(contextual(
            bandit_pb2.SelectContextualRequest(bandit=bandit, context=x).SerializeToString(), timeout=10))
        reward(bandit_pb2.RewardRequest(decision_id=reply.decision_id, reward=float(x[0] > 0.5),
                                        event_id=f"teach-{i}").SerializeToString(), timeout=10)


def reward_requests(select_call, select_request: bytes, n: int):
    """Per repetition, `n` reward requests of fresh decisions (made here, outside the timing)."""
    counter = itertools.count()
    while True:
        batch = []
        for _ in range(n):
            reply = bandit_pb2.SelectResponse.FromString(select_call(select_request, timeout=10))
            batch.append(bandit_pb2.RewardRequest(decision_id=reply.decision_id, reward=1.0,
                                                  event_id=f"bench-{next(counter)}").SerializeToString())
        yield batch


def latencies_of_each(call, requests: list[bytes], n: int, warmup: int) -> list[float]:
    """Each request once, the first `warmup` untimed; sorted latencies in milliseconds."""
    for request in requests[:warmup]:
        call(request)
    return h.sequential_latencies_of(call, requests[warmup:warmup + n])


if __name__ == "__main__":
    raise SystemExit(main())

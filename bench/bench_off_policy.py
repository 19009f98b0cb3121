"""Off-policy evaluation over 1,000,000 synthetic logged decisions, in process (no server, no database).

Target: OPE over 1,000,000 logged decisions in under a minute, reading the log from PostgreSQL
included, so the computation here should stay well under 30 s per case. Cases: context-free
(20 arms) and contextual (d = 10, 20 arms), each with a fixed candidate distribution and learning
candidates replayed on the log; IPS, SNIPS and DR together. Building the synthetic log is not timed.

    python bench/bench_off_policy.py [--quick] [--reps N] [--rows N]

One line per case on stdout (best of the repetitions); progress on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from ml_serving_server.services.bandit.domain.off_policy import CandidatePolicy, LoggedDecisions, evaluate

ARMS = 20
DIMENSION = 10
TARGET_SECONDS = 30.0


def softmax_choices(logits: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One draw per row from softmax(logits): the chosen arm and its exact probability."""
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    chosen = (probabilities.cumsum(axis=1) < rng.random(logits.shape[0])[:, None]).sum(axis=1)
    chosen = np.minimum(chosen, logits.shape[1] - 1)  # a cumsum a rounding short of 1
    return chosen, probabilities[np.arange(logits.shape[0]), chosen]


def context_free_log(rows: int, rng: np.random.Generator) -> LoggedDecisions:
    means = rng.uniform(0.05, 0.3, ARMS)
    chosen, propensity = softmax_choices(np.tile(5.0 * means, (rows, 1)), rng)
    reward = (rng.random(rows) < means[chosen]).astype(float)
    return LoggedDecisions(chosen, propensity, reward, ARMS)


def contextual_log(rows: int, rng: np.random.Generator) -> LoggedDecisions:
    theta = rng.normal(0.0, 0.3, (ARMS, DIMENSION))
    contexts = np.column_stack([np.ones(rows), rng.standard_normal((rows, DIMENSION - 1))])
    means = contexts @ theta.T
    chosen, propensity = softmax_choices(means, rng)
    reward = means[np.arange(rows), chosen] + 0.5 * rng.standard_normal(rows)
    return LoggedDecisions(chosen, propensity, reward, ARMS, contexts=contexts)


CASES = {
    "context-free, fixed candidate": ("free", CandidatePolicy.fixed({arm: 1.0 for arm in range(0, ARMS, 2)})),
    "context-free, thompson candidate": ("free", CandidatePolicy("thompson")),
    "context-free, thompson candidate, discount 0.001": ("free", CandidatePolicy("thompson", discount=0.001)),
    "contextual d=10, fixed candidate": ("contextual", CandidatePolicy.fixed({arm: 1.0 for arm in range(ARMS)})),
    "contextual d=10, linear_thompson candidate": ("contextual", CandidatePolicy("linear_thompson", exploration=0.5)),
    "contextual d=10, lin_ucb candidate": ("contextual", CandidatePolicy("lin_ucb", exploration=0.5)),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="100,000 decisions, one repetition")
    p.add_argument("--reps", type=int, default=None, help="repetitions per case (default 2, 1 with --quick)")
    p.add_argument("--rows", type=int, default=None, help="logged decisions (default 1,000,000)")
    p.add_argument("--access-log", choices=("on", "off"), default=None, help="ignored: no server here (run_all.py passes it)")
    args = p.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    reps = args.reps or (1 if args.quick else 2)
    rng = np.random.default_rng(2024)
    print(f"building {rows:,} synthetic decisions per log", file=sys.stderr, flush=True)
    logs = {"free": context_free_log(rows, rng), "contextual": contextual_log(rows, rng)}
    for name, (which, candidate) in CASES.items():
        timings = []
        for rep in range(reps):
            started = time.perf_counter()
            evaluation = evaluate(logs[which], candidate, ("ips", "snips", "dr"), np.random.default_rng(rep))
            timings.append(time.perf_counter() - started)
        best = min(timings)
        figures = " ".join(f"{e.estimator.value}={e.value:.4f}" for e in evaluation.estimates)
        verdict = "ok" if best < TARGET_SECONDS * rows / 1_000_000 else "MISSED"
        print(f"{name:<50} {best:6.2f} s for {rows:,} decisions ({verdict}; {figures})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

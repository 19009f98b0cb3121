"""Seeded learning simulations for the bandit policies (no I/O, no server).

    python bench/bandit_learning.py          # prints these tables and Select timings last

Small per-round sanity tables; the comparison with MABWiser and Vowpal Wabbit is in
bandit_benchmark. tests/bandit/unit/test_learning.py runs the same functions and asserts on
the numbers.
"""

from __future__ import annotations

import sys
import timeit
from dataclasses import dataclass

import numpy as np

from ml_serving_server.services.bandit.domain.policy import (
    BetaPosterior,
    LinearArmState,
    linear_thompson_select,
    linucb_select,
    thompson_select,
)

# Ten Bernoulli arms: nine mediocre ones spread over 0.10..0.45 and one clear best at 0.60.
BERNOULLI_MEANS = (0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.45, 0.60)
BERNOULLI_ROUNDS = 10_000

# Contextual: x = (1, u1..u4), u ~ U(0, 1). Arm 0 pays 0.55 whatever the context; arm j
# (1..4) pays 0.15 + 0.7 * u_j. Without context arm 0 is best (0.55 vs 0.50 on average);
# with it, the best arm changes from one request to the next. The model is exactly linear.
LINEAR_WEIGHTS = np.array(
    [
        [0.55, 0.0, 0.0, 0.0, 0.0],
        [0.15, 0.7, 0.0, 0.0, 0.0],
        [0.15, 0.0, 0.7, 0.0, 0.0],
        [0.15, 0.0, 0.0, 0.7, 0.0],
        [0.15, 0.0, 0.0, 0.0, 0.7],
    ]
)
LINEAR_ROUNDS = 5_000
LINEAR_EXPLORATION = 0.5  # Bernoulli noise has sd <= 0.5
RIDGE_LAMBDA = 1.0


@dataclass(frozen=True)
class Result:
    policy: str
    rounds: int
    reward: float  # realised cumulative reward
    regret: float  # expected (pseudo) regret against the known-means oracle
    pulls: tuple[int, ...]
    best_pulls: int  # rounds that pulled that round's best arm (what the oracle pulls)

    @property
    def best_share(self) -> float:
        return self.best_pulls / self.rounds


def simulate_bernoulli(policy: str, seed: int, means=BERNOULLI_MEANS, rounds: int = BERNOULLI_ROUNDS) -> Result:
    """One pull per round; policy is 'thompson', 'uniform' or 'oracle'."""
    means_arr = np.asarray(means)
    arm_ids = [f"arm{i}" for i in range(len(means))]
    index = {a: i for i, a in enumerate(arm_ids)}
    best = int(np.argmax(means_arr))
    # Separate streams: every policy faces the same reward coins, round by round.
    env_rng, policy_rng = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    coins = env_rng.random(rounds)
    posteriors = {a: BetaPosterior(1.0, 1.0) for a in arm_ids}
    pulls = np.zeros(len(means), dtype=int)
    reward = 0.0
    for t in range(rounds):
        if policy == "thompson":
            arm = index[thompson_select(posteriors, 1, policy_rng)[0][0]]
        elif policy == "uniform":
            arm = int(policy_rng.integers(len(means)))
        else:
            arm = best
        r = float(coins[t] < means_arr[arm])
        old = posteriors[arm_ids[arm]]
        posteriors[arm_ids[arm]] = BetaPosterior(old.alpha + r, old.beta + 1.0 - r)
        pulls[arm] += 1
        reward += r
    regret = float(pulls @ (means_arr[best] - means_arr))
    return Result(policy, rounds, reward, regret, tuple(int(p) for p in pulls), int(pulls[best]))


def simulate_linear(policy: str, seed: int, rounds: int = LINEAR_ROUNDS) -> Result:
    """policy: 'linear_thompson', 'linucb', 'thompson' (context-free), 'uniform' or 'oracle'."""
    n_arms, d = LINEAR_WEIGHTS.shape
    arm_ids = [f"arm{i}" for i in range(n_arms)]
    index = {a: i for i, a in enumerate(arm_ids)}
    env_rng, policy_rng = np.random.default_rng([seed, 10]), np.random.default_rng([seed, 11])
    contexts = np.column_stack([np.ones(rounds), env_rng.random((rounds, d - 1))])
    probs = contexts @ LINEAR_WEIGHTS.T  # (rounds, arms), all within [0.15, 0.85]
    coins = env_rng.random(rounds)
    linear = {a: LinearArmState.initial(d, RIDGE_LAMBDA) for a in arm_ids}
    beta = {a: BetaPosterior(1.0, 1.0) for a in arm_ids}
    pulls = np.zeros(n_arms, dtype=int)
    reward = regret = 0.0
    best_pulls = 0
    for t in range(rounds):
        x = contexts[t]
        if policy == "linear_thompson":
            chosen = linear_thompson_select(linear, x, 1, LINEAR_EXPLORATION, policy_rng)[0][0]
        elif policy == "linucb":
            chosen = linucb_select(linear, x, 1, LINEAR_EXPLORATION)[0][0]
        elif policy == "thompson":
            chosen = thompson_select(beta, 1, policy_rng)[0][0]
        elif policy == "uniform":
            chosen = arm_ids[int(policy_rng.integers(n_arms))]
        else:
            chosen = arm_ids[int(np.argmax(probs[t]))]
        arm = index[chosen]
        r = float(coins[t] < probs[t, arm])
        linear[chosen] = linear[chosen].updated(x, r)
        old = beta[chosen]
        beta[chosen] = BetaPosterior(old.alpha + r, old.beta + 1.0 - r)
        pulls[arm] += 1
        reward += r
        regret += probs[t].max() - probs[t, arm]
        best_pulls += int(arm == int(np.argmax(probs[t])))
    return Result(policy, rounds, reward, float(regret), tuple(int(p) for p in pulls), best_pulls)


BERNOULLI_POLICIES = ("thompson", "uniform", "oracle")
LINEAR_POLICIES = ("linear_thompson", "linucb", "thompson", "uniform", "oracle")


def format_table(title: str, results: list[Result]) -> str:
    lines = [title, f"{'policy':<16}{'reward':>10}{'regret':>10}{'best-arm share':>16}  pulls"]
    for r in results:
        lines.append(f"{r.policy:<16}{r.reward:>10.0f}{r.regret:>10.1f}{r.best_share:>15.1%}  {list(r.pulls)}")
    return "\n".join(lines)


def time_selects(repeats: int = 20_000) -> dict[str, float]:
    """Microseconds per call, 10 arms."""
    rng = np.random.default_rng(0)
    posteriors = {f"arm{i}": BetaPosterior(1.0 + 10 * i, 50.0) for i in range(10)}
    out = {"thompson_select": timeit.timeit(lambda: thompson_select(posteriors, 1, rng), number=repeats) / repeats * 1e6}
    for d in (8, 32):
        states = {}
        for i in range(10):
            s = LinearArmState.initial(d, RIDGE_LAMBDA)
            for _ in range(20):
                s = s.updated(rng.normal(size=d), float(rng.random()))
            states[f"arm{i}"] = s
        x = rng.normal(size=d)
        n = repeats // 5
        out[f"linear_thompson_select d={d}"] = (
            timeit.timeit(lambda: linear_thompson_select(states, x, 1, 1.0, rng), number=n) / n * 1e6
        )
        out[f"linucb_select d={d}"] = timeit.timeit(lambda: linucb_select(states, x, 1, 1.0), number=n) / n * 1e6
    return out


def run_simulations(seed: int = 2024) -> str:
    bernoulli = [simulate_bernoulli(p, seed) for p in BERNOULLI_POLICIES]
    linear = [simulate_linear(p, seed) for p in LINEAR_POLICIES]
    text = "\n\n".join(
        [
            format_table(f"Bernoulli, means {list(BERNOULLI_MEANS)}, {BERNOULLI_ROUNDS} rounds, seed {seed}", bernoulli),
            format_table(f"Linear contextual, d=5, 5 arms, {LINEAR_ROUNDS} rounds, seed {seed}", linear),
        ]
    )
    print(text)
    return text


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    run_simulations(int(argv[0]) if argv else 2024)
    print()
    for name, micros in time_selects().items():
        print(f"{name:<28}{micros:8.1f} us")

"""Seeded learning simulations: do the policies actually learn?

`python bench/bandit_learning.py` prints the same tables; run pytest with -s to see them here.
"""

from __future__ import annotations

import pytest

from ml_serving_tools import bandit_simulation as sim

SEED = 2024


@pytest.fixture(scope="module")
def bernoulli():
    results = {p: sim.simulate_bernoulli(p, SEED) for p in sim.BERNOULLI_POLICIES}
    print("\n" + sim.format_table(f"Bernoulli {list(sim.BERNOULLI_MEANS)}, seed {SEED}", list(results.values())))
    return results


@pytest.fixture(scope="module")
def linear():
    results = {p: sim.simulate_linear(p, SEED) for p in sim.LINEAR_POLICIES}
    print("\n" + sim.format_table(f"Linear contextual d=5, 5 arms, seed {SEED}", list(results.values())))
    return results


def test_thompson_pulls_the_best_arm_over_90_percent_of_all_10000_rounds(bernoulli):
    thompson = bernoulli["thompson"]
    assert thompson.rounds == 10_000 and sum(thompson.pulls) == 10_000
    # Share over the whole run, exploration included (not a trailing window).
    assert thompson.best_share > 0.90


def test_thompson_regret_is_far_below_uniform(bernoulli):
    thompson, uniform, oracle = bernoulli["thompson"], bernoulli["uniform"], bernoulli["oracle"]
    assert oracle.regret == 0.0
    # Uniform's regret is linear in T (about 0.27 per round); Thompson's grows like log T.
    assert uniform.regret == pytest.approx(10_000 * (0.60 - sum(sim.BERNOULLI_MEANS) / 10), rel=0.05)
    assert thompson.regret < 0.1 * uniform.regret
    assert thompson.reward > 1.5 * uniform.reward
    assert thompson.reward > 0.95 * oracle.reward


def test_linear_thompson_beats_context_free_and_uniform(linear):
    lin_ts, ts, uniform, oracle = (linear[p] for p in ("linear_thompson", "thompson", "uniform", "oracle"))
    assert lin_ts.reward > 1.15 * ts.reward
    assert lin_ts.reward > 1.15 * uniform.reward
    assert lin_ts.regret < 0.3 * ts.regret
    assert lin_ts.reward > 0.9 * oracle.reward


def test_linucb_also_learns_the_context(linear):
    linucb, ts, uniform = linear["linucb"], linear["thompson"], linear["uniform"]
    assert linucb.reward > 1.1 * ts.reward
    assert linucb.regret < 0.4 * uniform.regret


def test_context_free_thompson_finds_the_best_average_arm(linear):
    # Without context arm0 (0.55) beats the others (0.50 on average): most pulls go there.
    assert linear["thompson"].pulls[0] > 0.6 * sim.LINEAR_ROUNDS

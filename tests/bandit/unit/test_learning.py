"""Seeded learning simulations: do the policies actually learn?

The first tests run bandit_simulation's small tables; the rest check the building blocks of
`python bench/bandit_learning.py` (no MABWiser or Vowpal Wabbit needed) and the behaviour it
relies on: discounting that beats no discounting after a drift, defaults that learn. Run
pytest with -s to see the numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

from ml_serving_server.services.bandit.domain.forgetting import FADE_RATIO, block_weights
from ml_serving_server.services.bandit.domain.policy import (
    DEFAULT_LINEAR_THOMPSON_EXPLORATION,
    DEFAULT_LINUCB_EXPLORATION,
    BetaPosterior,
    LinearArmState,
    linear_thompson_select,
    linucb_select,
    thompson_select,
)
from ml_serving_tools import bandit_benchmark as bench
from ml_serving_tools import bandit_simulation as sim
from ml_serving_tools.bandit_agents import (
    AgentSpec,
    BetaThompsonAgent,
    LinearAgent,
    noise_variance_posteriors,
)
from ml_serving_tools.bandit_environments import clipped_gaussian_mean

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


# ----- the benchmark's building blocks (bench/bandit_learning.py); no library needed -----


def _feed(agent, n_events: int, n_arms: int, dim: int, seed: int = 5):
    rng = np.random.default_rng(seed)
    contexts = np.column_stack([np.ones(n_events), rng.normal(size=(n_events, dim - 1))]) if dim else None
    agent.learn(rng.integers(0, n_arms, n_events), (rng.random(n_events) < 0.3).astype(float), contexts)
    return agent


def test_beta_agent_picks_exactly_what_thompson_select_picks():
    agent = _feed(BetaThompsonAgent(6, seed=3, discount=0.01), 200, 6, 0)
    posteriors = {f"a{i}": BetaPosterior(1 + s, 1 + f) for i, (s, f) in enumerate(zip(agent.successes, agent.failures))}
    rng = np.random.default_rng([3, 1])  # the agent's own stream
    expected = [int(thompson_select(posteriors, 1, rng)[0][0][1:]) for _ in range(40)]
    assert agent.choose(None, 40).tolist() == expected


@pytest.mark.parametrize("method", ["ts", "ucb"])
def test_linear_agent_picks_exactly_what_the_policy_functions_pick(method):
    agent = _feed(LinearAgent(5, 4, seed=9, method=method, exploration=0.3, discount=0.002), 300, 5, 4)
    states = {f"a{i}": LinearArmState.from_sums(agent.xx[i], agent.rx[i], 1.0) for i in range(5)}
    contexts = np.column_stack([np.ones(30), np.random.default_rng(1).normal(size=(30, 3))])
    rng = np.random.default_rng([9, 2])
    expected = []
    for x in contexts:
        if method == "ts":
            chosen = linear_thompson_select(states, x, 1, 0.3, rng)
        else:
            chosen = linucb_select(states, x, 1, 0.3)
        expected.append(int(chosen[0][0][1:]))
    assert agent.choose(contexts, 30).tolist() == expected


def test_discount_forgets_an_arms_evidence_on_its_rewards_and_fades_every_arm_on_any():
    keep, fades = 0.9, 1 - 0.1 / FADE_RATIO
    one_by_one = BetaThompsonAgent(3, seed=0, discount=0.1)
    for arm, reward in [(0, 1.0), (1, 0.0), (0, 1.0)]:
        one_by_one.learn(np.array([arm]), np.array([reward]), None)
    # By hand: arm 0's first success fades twice and is forgotten once, by its own next reward.
    assert one_by_one.successes == pytest.approx([fades * fades * keep + 1.0, 0.0, 0.0])
    assert one_by_one.failures == pytest.approx([0.0, fades, 0.0])
    batched = BetaThompsonAgent(3, seed=0, discount=0.1)
    batched.learn(np.array([0, 1, 0]), np.array([1.0, 0.0, 1.0]), None)
    assert batched.successes == pytest.approx(one_by_one.successes)
    assert batched.failures == pytest.approx(one_by_one.failures)


def test_block_weights_count_later_rewards_of_the_same_arm_and_of_all():
    f = 1 - 0.5 / FADE_RATIO
    weights, keep = block_weights(np.array([1, 0, 1, 2, 1]), 4, 0.5)
    assert weights == pytest.approx([0.25 * f**4, f**3, 0.5 * f**2, f, 1.0])
    assert keep == pytest.approx([0.5 * f**5, 0.125 * f**5, 0.5 * f**5, f**5])
    weights, keep = block_weights(np.array([1, 0]), 3, 0.0)
    assert weights == pytest.approx([1.0, 1.0]) and keep == pytest.approx([1.0, 1.0, 1.0])
    weights, keep = block_weights(np.zeros(5000, dtype=int), 1, 0.5)  # underflows to 0, never NaN
    assert weights[0] == 0.0 and weights[-1] == 1.0 and keep[0] == 0.0


def test_linear_discount_keeps_the_ridge_prior():
    f = 1 - 0.5 / FADE_RATIO
    agent = LinearAgent(2, 2, seed=0, discount=0.5)
    x = np.array([[1.0, 2.0], [1.0, 0.0], [1.0, 2.0]])
    agent.learn(np.array([0, 1, 0]), np.array([1.0, 0.5, 0.0]), x)
    first = 0.5 * f * f  # arm 0's first reward: forgotten by its second, faded by both later rewards
    assert agent.precision()[0] == pytest.approx(np.eye(2) + (first + 1) * np.array([[1.0, 2.0], [2.0, 4.0]]))
    assert agent.precision()[1] == pytest.approx(np.eye(2) + f * np.array([[1.0, 0.0], [0.0, 0.0]]))
    assert agent.rx[0] == pytest.approx([first, 2 * first]) and agent.rx[1] == pytest.approx([0.5 * f, 0.0])
    assert agent.count == pytest.approx([first + 1, f]) and agent.rr == pytest.approx([first, 0.25 * f])


def test_clipped_gaussian_mean_matches_monte_carlo():
    noise = np.random.default_rng(0).standard_normal(400_000)
    for mean in (0.0, 0.05, 0.5, 0.97):
        assert clipped_gaussian_mean(np.array(mean), 0.2) == pytest.approx(np.clip(mean + 0.2 * noise, 0, 1).mean(), abs=1e-3)


def test_drift_turns_the_best_arm_into_the_worst():
    instance = bench.DRIFT.build(0)
    before, after = instance.means(0, 1)[0], instance.means(bench.DRIFT.rounds - 1, bench.DRIFT.rounds)[0]
    assert np.argmax(before) == np.argmin(after)
    assert instance.means(9_999, 10_001)[:, np.argmax(before)].tolist() == [before.max(), after.min()]


def test_noise_variance_posterior_recovers_the_noise_level():
    rng = np.random.default_rng(4)
    x = np.column_stack([np.ones(4000), rng.normal(size=(4000, 2))])
    r = x @ np.array([0.5, 0.1, -0.2]) + 0.15 * rng.standard_normal(4000)
    precision = (np.eye(3) + x.T @ x)[None]
    shape, rate = noise_variance_posteriors(precision, (x.T @ r)[None], np.array([4000.0]), np.array([r @ r]))
    assert np.sqrt(rate / (shape - 1)) == pytest.approx(0.15, rel=0.03)  # posterior mean of sigma^2, square-rooted


def _drift_regrets(discount: float) -> list[float]:
    spec = AgentSpec("t", "ours", "thompson", discount=discount)
    return [bench.run_episode(bench.DRIFT, seed, spec) for seed in range(3)]


def test_discounted_thompson_beats_undiscounted_when_the_best_arm_turns_worst():
    discounted, plain = _drift_regrets(bench.DRIFT_DISCOUNT), _drift_regrets(0.0)
    print(f"\ndrift regret, 3 seeds: discount {bench.DRIFT_DISCOUNT}: {np.round(discounted)}, none: {np.round(plain)}")
    assert np.mean(discounted) < 0.65 * np.mean(plain)  # measured: about 0.53x
    assert max(discounted) < min(plain)  # on every seed, not just on average


def test_the_chosen_defaults_learn_on_a_spread_environment():
    # 20 arms, d=10, Bernoulli rewards: the service's common case.
    scenario = next(s for s in bench.SPREAD if s.name == "spread d=10 arms=20 bern")
    specs = {
        "ts": AgentSpec("ts", "ours", "ts", DEFAULT_LINEAR_THOMPSON_EXPLORATION),
        "ucb": AgentSpec("ucb", "ours", "ucb", DEFAULT_LINUCB_EXPLORATION),
        "old ts": AgentSpec("old ts", "ours", "ts", 1.0),
    }
    regret = {name: np.mean([bench.run_episode(scenario, seed, spec) for seed in (0, 1)]) for name, spec in specs.items()}
    uniform = np.mean([bench.uniform_regret(scenario, seed) for seed in (0, 1)])
    print(f"\n{scenario.name}, 2 seeds: " + ", ".join(f"{k} {v:.0f}" for k, v in regret.items()) + f", uniform {uniform:.0f}")
    assert uniform == pytest.approx(2245, rel=0.01)
    assert regret["ts"] < 0.35 * uniform  # measured: about 0.29
    assert regret["ucb"] < 0.35 * uniform  # about 0.27
    assert regret["ts"] < 0.6 * regret["old ts"]  # about 0.49: the old default 1.0 over-explores

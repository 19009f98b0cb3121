"""Bandit policy maths: pure functions, seeded generators, no I/O."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import FrozenInstanceError

import numpy as np
import pytest

from ml_serving_server.services.bandit.domain.policy import (
    BetaPosterior,
    LinearArmState,
    credible_interval,
    linear_thompson_select,
    linucb_select,
    thompson_select,
)


def _posteriors(n: int = 10) -> dict[str, BetaPosterior]:
    return {f"arm{i}": BetaPosterior(1.0 + i, 1.0 + 2 * i) for i in range(n)}


# --- Beta-Bernoulli Thompson sampling -------------------------------------------------------


def test_beta_posterior_mean_and_validation():
    assert BetaPosterior(3.0, 1.0).mean == pytest.approx(0.75)
    with pytest.raises(FrozenInstanceError):
        BetaPosterior(1.0, 1.0).alpha = 2.0  # type: ignore[misc]
    for alpha, beta in [(0.0, 1.0), (1.0, -1.0), (float("nan"), 1.0), (1.0, float("inf"))]:
        with pytest.raises(ValueError):
            BetaPosterior(alpha, beta)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_thompson_select_returns_k_distinct_candidates_best_first(k):
    posteriors = _posteriors()
    chosen = thompson_select(posteriors, k, np.random.default_rng(7))
    ids = [arm for arm, _ in chosen]
    draws = [draw for _, draw in chosen]
    assert len(ids) == k and len(set(ids)) == k
    assert set(ids) <= set(posteriors)
    assert draws == sorted(draws, reverse=True)
    assert all(0.0 < d < 1.0 for d in draws)


def test_thompson_select_only_picks_from_the_arms_passed():
    subset = {a: p for a, p in _posteriors().items() if a in {"arm2", "arm5", "arm9"}}
    rng = np.random.default_rng(1)
    seen = {arm for _ in range(200) for arm, _ in thompson_select(subset, 2, rng)}
    assert seen == {"arm2", "arm5", "arm9"}


def test_thompson_select_is_one_vectorised_draw_per_arm():
    # Same seed: the draws are exactly one rng.beta call over the parameter arrays.
    posteriors = _posteriors()
    chosen = dict(thompson_select(posteriors, 10, np.random.default_rng(42)))
    alphas = np.array([p.alpha for p in posteriors.values()])
    betas = np.array([p.beta for p in posteriors.values()])
    expected = np.random.default_rng(42).beta(alphas, betas)
    assert [chosen[a] for a in posteriors] == pytest.approx(list(expected), abs=0)


@pytest.mark.parametrize("k", [0, 11])
def test_thompson_select_rejects_k_out_of_range(k):
    with pytest.raises(ValueError):
        thompson_select(_posteriors(), k, np.random.default_rng(0))


def test_thompson_select_favours_a_much_better_posterior():
    posteriors = {f"weak{i}": BetaPosterior(10.0, 90.0) for i in range(9)}
    posteriors["strong"] = BetaPosterior(90.0, 10.0)
    rng = np.random.default_rng(3)
    wins = sum(thompson_select(posteriors, 1, rng)[0][0] == "strong" for _ in range(2000))
    assert wins == 2000  # the posteriors barely overlap


def test_thompson_select_win_rate_matches_the_posterior_probability():
    # X ~ Beta(2, 1), Y ~ Beta(1, 2): P(X > Y) = integral of 2x * (2x - x^2) dx = 5/6.
    posteriors = {"x": BetaPosterior(2.0, 1.0), "y": BetaPosterior(1.0, 2.0)}
    rng = np.random.default_rng(11)
    n = 20_000
    wins = sum(thompson_select(posteriors, 1, rng)[0][0] == "x" for _ in range(n))
    assert wins / n == pytest.approx(5 / 6, abs=0.01)  # ~4 standard errors


# --- credible intervals ---------------------------------------------------------------------


def test_credible_interval_of_uniform_prior():
    assert credible_interval(1.0, 1.0) == pytest.approx((0.025, 0.975), abs=1e-12)
    assert credible_interval(1.0, 1.0, level=0.5) == pytest.approx((0.25, 0.75), abs=1e-12)


@pytest.mark.parametrize("b", [1.0, 3.0, 20.0])
def test_credible_interval_matches_closed_form_quantiles(b):
    # Beta(1, b) has CDF 1 - (1 - x)^b, so its q-quantile is 1 - (1 - q)^(1/b);
    # Beta(b, 1) has CDF x^b, so its q-quantile is q^(1/b).
    assert credible_interval(1.0, b) == pytest.approx((1 - 0.975 ** (1 / b), 1 - 0.025 ** (1 / b)), rel=1e-10)
    assert credible_interval(b, 1.0, 0.9) == pytest.approx((0.05 ** (1 / b), 0.95 ** (1 / b)), rel=1e-10)


def test_credible_interval_contains_the_mean_and_narrows_with_evidence():
    widths = []
    for pulls in [0, 10, 100, 1000, 10_000]:
        posterior = BetaPosterior(1.0 + 0.3 * pulls, 1.0 + 0.7 * pulls)
        low, high = credible_interval(posterior.alpha, posterior.beta)
        assert 0.0 <= low < posterior.mean < high <= 1.0
        widths.append(high - low)
    assert all(later < earlier for earlier, later in zip(widths, widths[1:]))
    assert widths[-1] < 0.02
    # Symmetric posterior, symmetric interval; a wider level gives a wider interval.
    low, high = credible_interval(5.0, 5.0)
    assert low + high == pytest.approx(1.0)
    assert credible_interval(5.0, 5.0, 0.99)[0] < low


@pytest.mark.parametrize("args", [(0.0, 1.0, 0.95), (1.0, -2.0, 0.95), (1.0, 1.0, 0.0), (1.0, 1.0, 1.0)])
def test_credible_interval_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        credible_interval(*args)


def test_policy_module_keeps_scipy_out_of_the_idle_server():
    # Importing the policy loads no scipy; a credible interval loads scipy.special, never scipy.stats.
    code = (
        "import sys\n"
        "from ml_serving_server.services.bandit.domain import policy\n"
        "assert not any(m.startswith('scipy') for m in sys.modules), 'scipy imported eagerly'\n"
        "policy.credible_interval(2.0, 3.0)\n"
        "assert 'scipy.special' in sys.modules\n"
        "assert 'scipy.stats' not in sys.modules, 'scipy.stats imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --- linear contextual state ----------------------------------------------------------------


def test_linear_state_initial_is_the_ridge_prior():
    state = LinearArmState.initial(4, 2.5)
    np.testing.assert_array_equal(state.precision, 2.5 * np.eye(4))
    np.testing.assert_array_equal(state.target, np.zeros(4))
    assert state.dimension == 4
    for dimension, ridge in [(0, 1.0), (3, 0.0), (3, -1.0)]:
        with pytest.raises(ValueError):
            LinearArmState.initial(dimension, ridge)


def test_linear_state_updated_matches_the_closed_form_and_is_pure():
    rng = np.random.default_rng(5)
    xs, rewards = rng.normal(size=(50, 6)), rng.random(50)
    initial = LinearArmState.initial(6, 0.5)
    state = initial
    for x, r in zip(xs, rewards):
        state = state.updated(x, r)
    np.testing.assert_allclose(state.precision, 0.5 * np.eye(6) + xs.T @ xs, rtol=1e-12)
    np.testing.assert_allclose(state.target, xs.T @ rewards, rtol=1e-12)
    np.testing.assert_array_equal(initial.precision, 0.5 * np.eye(6))  # untouched
    np.testing.assert_array_equal(initial.target, np.zeros(6))
    # from_sums rebuilds the same state from the raw sums a store keeps.
    rebuilt = LinearArmState.from_sums(xs.T @ xs, xs.T @ rewards, 0.5)
    np.testing.assert_allclose(rebuilt.precision, state.precision, rtol=1e-12)
    np.testing.assert_allclose(rebuilt.target, state.target, rtol=1e-12)


@pytest.mark.parametrize("context", [np.ones(3), np.ones((1, 4)), np.array([1.0, np.nan, 0.0, 0.0])])
def test_linear_state_update_validates_the_context(context):
    with pytest.raises(ValueError):
        LinearArmState.initial(4, 1.0).updated(context, 1.0)
    with pytest.raises(ValueError):
        LinearArmState.initial(4, 1.0).updated(np.ones(4), float("nan"))


def test_linear_state_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        LinearArmState(np.eye(3), np.zeros(4))


# --- linear selection -----------------------------------------------------------------------


def _trained_states(rng: np.random.Generator, rounds: int = 200) -> dict[str, LinearArmState]:
    """'first' pays on feature 1, 'second' on feature 2, 'dud' never; contexts are noisy one-hots."""
    weights = {"first": np.array([0.0, 0.9, 0.1]), "second": np.array([0.0, 0.1, 0.9]), "dud": np.zeros(3)}
    states = {arm: LinearArmState.initial(3, 1.0) for arm in weights}
    for _ in range(rounds):
        x = np.array([1.0, *rng.random(2)])
        for arm, w in weights.items():
            states[arm] = states[arm].updated(x, float(w @ x + rng.normal(0, 0.05)))
    return states


def test_linucb_ranks_the_arm_that_fits_the_context_first():
    states = _trained_states(np.random.default_rng(0))
    assert [a for a, _ in linucb_select(states, np.array([1.0, 1.0, 0.0]), 3, 0.5)] == ["first", "second", "dud"]
    assert [a for a, _ in linucb_select(states, np.array([1.0, 0.0, 1.0]), 3, 0.5)] == ["second", "first", "dud"]


def test_linear_thompson_ranks_the_arm_that_fits_the_context_first():
    states = _trained_states(np.random.default_rng(0))
    rng = np.random.default_rng(1)
    firsts = [linear_thompson_select(states, np.array([1.0, 1.0, 0.0]), 2, 0.5, rng)[0][0] for _ in range(500)]
    assert firsts.count("first") / len(firsts) > 0.98
    seconds = [linear_thompson_select(states, np.array([1.0, 0.0, 1.0]), 1, 0.5, rng)[0][0] for _ in range(500)]
    assert seconds.count("second") / len(seconds) > 0.98


def test_linucb_scores_match_the_closed_form():
    states = _trained_states(np.random.default_rng(2), rounds=5)
    x = np.array([1.0, 0.3, -0.7])
    for arm, score in linucb_select(states, x, 3, 1.7):
        inverse = np.linalg.inv(states[arm].precision)
        expected = (inverse @ states[arm].target) @ x + 1.7 * np.sqrt(x @ inverse @ x)
        assert score == pytest.approx(expected, rel=1e-9)


def test_linear_thompson_score_has_the_posterior_predictive_distribution():
    # theta ~ N(A^-1 b, v^2 A^-1) makes theta.x ~ N(theta_hat.x, v^2 x^T A^-1 x).
    state = _trained_states(np.random.default_rng(3), rounds=3)["first"]
    x = np.array([1.0, 0.5, 0.2])
    inverse = np.linalg.inv(state.precision)
    mean, sd = (inverse @ state.target) @ x, 0.8 * np.sqrt(x @ inverse @ x)
    rng = np.random.default_rng(4)
    scores = np.array([linear_thompson_select({"a": state}, x, 1, 0.8, rng)[0][1] for _ in range(20_000)])
    assert scores.mean() == pytest.approx(mean, abs=4 * sd / np.sqrt(len(scores)))
    assert scores.std() == pytest.approx(sd, rel=0.03)


def test_linucb_breaks_exact_ties_in_arm_order():
    states = {arm: LinearArmState.initial(2, 1.0) for arm in ["c", "a", "b"]}
    assert [a for a, _ in linucb_select(states, np.array([1.0, 0.0]), 3, 1.0)] == ["c", "a", "b"]


def test_linear_selection_survives_degenerate_precision():
    # A slightly asymmetric A (rounding in stored sums) and a singular one (corrupt state)
    # must still produce finite, best-first scores rather than an exception.
    good = LinearArmState.initial(3, 1.0).updated(np.array([1.0, 0.0, 0.0]), 1.0)
    skewed = LinearArmState(good.precision + np.triu(np.full((3, 3), 1e-12), 1), good.target)
    singular = LinearArmState(np.zeros((3, 3)), np.zeros(3))
    states = {"good": good, "skewed": skewed, "singular": singular}
    x = np.array([1.0, 0.5, 0.0])
    for chosen in (linucb_select(states, x, 3, 1.0), linear_thompson_select(states, x, 3, 1.0, np.random.default_rng(0))):
        scores = [s for _, s in chosen]
        assert len(chosen) == 3 and all(np.isfinite(scores))
        assert scores == sorted(scores, reverse=True)


def test_linear_selection_validates_shapes():
    states = {"a": LinearArmState.initial(3, 1.0), "b": LinearArmState.initial(3, 1.0)}
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        linucb_select(states, np.ones(4), 1, 1.0)
    with pytest.raises(ValueError):
        linear_thompson_select(states, np.ones(2), 1, 1.0, rng)
    with pytest.raises(ValueError):
        linucb_select(states, np.ones(3), 3, 1.0)  # k > number of arms
    mixed = {"a": LinearArmState.initial(3, 1.0), "b": LinearArmState.initial(4, 1.0)}
    with pytest.raises(ValueError):
        linucb_select(mixed, np.ones(3), 1, 1.0)

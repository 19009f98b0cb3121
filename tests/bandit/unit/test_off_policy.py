"""Off-policy evaluation against simulations whose true value is known.

Each simulation logs decisions of a stochastic logging policy with known propensities in an
environment with known means. The truth for a fixed candidate is sum_a pi(a) mu(x_i, a) averaged
over the decisions; for a learning candidate it is the same with the candidate's replayed pi_i,
computed here by an independent, slow reference: one reward at a time, exact probabilities.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import betainc, betaln, log_ndtr

from ml_serving_server.services.bandit.domain.forgetting import fade
from ml_serving_server.services.bandit.domain.off_policy import (
    CandidateKind,
    CandidatePolicy,
    Estimator,
    LoggedDecisions,
    candidate_probabilities,
    evaluate,
)
from ml_serving_server.services.bandit.domain.propensity import thompson_choice_probabilities

ALL = ("ips", "snips", "dr")

# ----- context-free Bernoulli world -----

MEANS = np.array([0.25, 0.40, 0.55, 0.35, 0.30])
LOGGING = np.exp([0.0, 0.4, 0.8, 0.2, -0.2]) / np.exp([0.0, 0.4, 0.8, 0.2, -0.2]).sum()


def bernoulli_log(seed: int, rows: int = 20_000, offered: np.ndarray | None = None) -> LoggedDecisions:
    """Softmax logging over the offered arms (all when offered is None), Bernoulli(MEANS) rewards."""
    rng = np.random.default_rng(seed)
    allowed = np.ones((rows, len(MEANS)), dtype=bool) if offered is None else offered
    probabilities = LOGGING * allowed
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    chosen = (probabilities.cumsum(axis=1) < rng.random(rows)[:, None]).sum(axis=1)
    reward = (rng.random(rows) < MEANS[chosen]).astype(float)
    return LoggedDecisions(chosen, probabilities[np.arange(rows), chosen], reward, len(MEANS), offered=offered)


def beta_first_exact(alpha: np.ndarray, beta: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """P(arm first) for Beta draws over the allowed arms: integral of f_i prod_{j != i} F_j on a fine grid."""
    z = np.linspace(0.0, 1.0, 20_001)[1:-1]
    arms = np.flatnonzero(allowed)
    a, b = alpha[arms, None], beta[arms, None]
    log_pdf = (a - 1) * np.log(z) + (b - 1) * np.log1p(-z) - betaln(a, b)
    cdf = betainc(a, b, z)
    others = np.prod(cdf, axis=0) / np.maximum(cdf, 1e-300)
    result = np.zeros(len(alpha))
    result[arms] = np.trapezoid(np.exp(log_pdf) * others, z, axis=1)
    return result


def forgetting_keep(discount: float, rewarded: int, arm_count: int) -> np.ndarray:
    """Per arm, what one reward to `rewarded` keeps of its evidence: every arm fades, the
    rewarded one is also forgotten (domain/forgetting.py, written out one event at a time)."""
    keep = np.full(arm_count, 1.0 - fade(discount))
    keep[rewarded] *= 1.0 - discount
    return keep


def reference_thompson_replay(log: LoggedDecisions, candidate: CandidatePolicy, update_every: int) -> np.ndarray:
    """(N, n) exact pi_i of a replayed Beta Thompson candidate: one reward event at a time."""
    n = log.arm_count
    successes, failures = np.zeros(n), np.zeros(n)
    offered = np.ones((len(log), n), dtype=bool) if log.offered is None else log.offered
    pi = np.zeros((len(log), n))
    cache: dict[bytes, np.ndarray] = {}
    for i in range(len(log)):
        if i % update_every == 0:
            alpha, beta = candidate.prior_alpha + successes, candidate.prior_beta + failures
            cache = {}
        key = offered[i].tobytes()
        if key not in cache:
            cache[key] = beta_first_exact(alpha, beta, offered[i])
        pi[i] = cache[key]
        if log.rewarded is None or log.rewarded[i]:
            keep = forgetting_keep(candidate.discount, log.chosen[i], n)
            successes *= keep
            failures *= keep
            successes[log.chosen[i]] += log.reward[i]
            failures[log.chosen[i]] += 1 - log.reward[i]
    return pi


# ----- linear contextual world -----

THETA = np.array([[0.5, 0.3, 0.0], [0.4, -0.2, 0.3], [0.6, 0.0, -0.3], [0.3, 0.1, 0.1]])
LOGGING_THETA = THETA + np.array([[0.1, -0.1, 0.2], [-0.1, 0.2, 0.0], [0.0, 0.1, 0.1], [0.2, 0.0, -0.2]])
NOISE = 0.1


def linear_log(seed: int, rows: int = 20_000) -> tuple[LoggedDecisions, np.ndarray]:
    """Contexts [1, u1, u2], softmax logging on slightly wrong weights, reward x.theta_a + N(0, 0.1^2).
    Returns the log and the (N, n) true means."""
    rng = np.random.default_rng(seed)
    contexts = np.column_stack([np.ones(rows), rng.standard_normal((rows, 2))])
    logits = 2.0 * contexts @ LOGGING_THETA.T
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    chosen = (probabilities.cumsum(axis=1) < rng.random(rows)[:, None]).sum(axis=1)
    means = contexts @ THETA.T
    reward = means[np.arange(rows), chosen] + NOISE * rng.standard_normal(rows)
    log = LoggedDecisions(chosen, probabilities[np.arange(rows), chosen], reward, len(THETA), contexts=contexts)
    return log, means


def gaussian_first_exact(mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(m, n) P(arm first) for independent N(mean, scale^2) scores, by Gauss-Hermite quadrature:
    P(i first) = E_u[ prod_{j != i} Phi((mean_i + scale_i u - mean_j) / scale_j) ]."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(120)
    weights = weights / math.sqrt(2 * math.pi)
    value = mean[:, :, None] + scale[:, :, None] * nodes  # (m, i, u)
    z = (value[:, :, None, :] - mean[:, None, :, None]) / scale[:, None, :, None]  # (m, i, j, u)
    log_cdf = log_ndtr(z)
    n = mean.shape[1]
    log_cdf[:, np.arange(n), np.arange(n), :] = 0.0
    return np.exp(log_cdf.sum(axis=2)) @ weights


def reference_linear_replay(log: LoggedDecisions, candidate: CandidatePolicy, update_every: int) -> np.ndarray:
    """(N, n) exact pi_i of a replayed linear candidate, one reward event at a time."""
    n, d = log.arm_count, log.context_dimension
    outer, target = np.zeros((n, d, d)), np.zeros((n, d))
    pi = np.zeros((len(log), n))
    for start in range(0, len(log), update_every):
        rows = slice(start, min(start + update_every, len(log)))
        x = log.contexts[rows]
        precision = candidate.ridge_lambda * np.eye(d) + outer
        mean = np.stack([x @ np.linalg.solve(precision[a], target[a]) for a in range(n)], axis=1)
        spread = np.stack(
            [np.sqrt(np.einsum("md,md->m", x, np.linalg.solve(precision[a], x.T).T)) for a in range(n)], axis=1
        )
        scores = mean + candidate.exploration * spread
        if candidate.kind is CandidateKind.LIN_UCB:
            masked = scores if log.offered is None else np.where(log.offered[rows], scores, -np.inf)
            pi[rows] = np.eye(n)[np.argmax(masked, axis=1)]
        else:
            pi[rows] = gaussian_first_exact(mean, candidate.exploration * spread)
        for i in range(rows.start, rows.stop):
            if log.rewarded is None or log.rewarded[i]:
                keep = forgetting_keep(candidate.discount, log.chosen[i], n)
                outer *= keep[:, None, None]
                target *= keep[:, None]
                outer[log.chosen[i]] += np.outer(log.contexts[i], log.contexts[i])
                target[log.chosen[i]] += log.reward[i] * log.contexts[i]
    return pi


# ----- checks -----


def assert_estimates_cover(evaluation, truth: float, names=ALL) -> None:
    """Every estimate within 3 standard errors of the truth, and the truth inside its 95% interval."""
    estimates = {e.estimator.value: e for e in evaluation.estimates}
    for name in names:
        e = estimates[name]
        standard_error = (e.upper - e.lower) / (2 * 1.959963984540054)
        assert e.lower < truth < e.upper, (name, e, truth)
        assert abs(e.value - truth) < 3 * standard_error, (name, e, truth)


def by_name(evaluation) -> dict:
    return {e.estimator.value: e for e in evaluation.estimates}


# ----- context-free -----


def test_fixed_candidate_on_bernoulli_log():
    log = bernoulli_log(seed=1)
    candidate = CandidatePolicy.fixed({0: 0.2, 2: 0.5, 4: 0.3})
    truth = 0.2 * 0.25 + 0.5 * 0.55 + 0.3 * 0.30  # 0.415
    evaluation = evaluate(log, candidate, ALL, np.random.default_rng(1))
    assert evaluation.decision_count == 20_000
    # E[w] = 1 and E[w^2] = sum pi^2 / p = 1.77: the weighted estimate is worth ~11,270 decisions.
    pi = np.array([0.2, 0.0, 0.5, 0.0, 0.3])
    assert evaluation.effective_sample_size == pytest.approx(20_000 / (pi**2 / LOGGING).sum(), rel=0.03)
    assert evaluation.logged_value == pytest.approx(log.reward.mean())
    assert evaluation.logged_value == pytest.approx(LOGGING @ MEANS, abs=0.01)  # 0.412
    assert_estimates_cover(evaluation, truth)
    assert by_name(evaluation)["ips"].value == pytest.approx(0.415, abs=0.012)


def test_fixed_candidate_is_renormalised_over_the_offered_arms():
    rng = np.random.default_rng(102)  # not the log's seed: the mask must not correlate with its draws
    offered = np.ones((20_000, 5), dtype=bool)
    offered[rng.random(20_000) < 0.5, 2] = False  # the best arm is missing half the time
    log = bernoulli_log(seed=2, offered=offered)
    candidate = CandidatePolicy.fixed({1: 0.25, 2: 0.75})
    per_row = np.where(offered[:, 2], 0.25 * MEANS[1] + 0.75 * MEANS[2], MEANS[1])
    truth = float(per_row.mean())  # about (0.5125 + 0.40) / 2
    evaluation = evaluate(log, candidate, ALL, rng)
    assert_estimates_cover(evaluation, truth)
    assert truth == pytest.approx(0.456, abs=0.005)


@pytest.mark.parametrize("discount", [0.0, 0.002])
def test_learning_thompson_candidate_on_bernoulli_log(discount):
    log = bernoulli_log(seed=3)
    candidate = CandidatePolicy(CandidateKind.THOMPSON, prior_alpha=2.0, prior_beta=2.0, discount=discount)
    pi = reference_thompson_replay(log, candidate, update_every=1000)
    truth = float((pi @ MEANS).mean())
    evaluation = evaluate(log, candidate, ALL, np.random.default_rng(3), update_every=1000)
    assert_estimates_cover(evaluation, truth)
    # It learns: well above the logging policy's 0.412, on the way to the best arm's 0.55.
    assert 0.5 < truth < 0.55


def test_thompson_replay_matches_the_one_event_at_a_time_reference():
    rng = np.random.default_rng(104)
    offered = np.ones((3000, 5), dtype=bool)
    offered[rng.random(3000) < 0.3, 1] = False
    log = bernoulli_log(seed=4, rows=3000, offered=offered)
    log = LoggedDecisions(log.chosen, log.propensity, log.reward, 5, offered=offered, rewarded=rng.random(3000) < 0.8)
    candidate = CandidatePolicy("thompson", prior_alpha=1.0, prior_beta=3.0, discount=0.01)
    reference = reference_thompson_replay(log, candidate, update_every=250)
    replayed = candidate_probabilities(log, candidate, rng, update_every=250, replay_samples=100_000)
    logged = reference[np.arange(3000), log.chosen]
    assert np.abs(replayed - logged).max() < 0.01  # 100,000 draws: standard error <= 0.0016


def test_logged_thompson_propensities_from_monte_carlo():
    """The production path: a live Thompson policy logs propensity() of a 1000-draw Monte Carlo estimate.

    Means close together keep every arm's propensity above ~0.01 over 3000 decisions; when the live
    policy starves an arm (p << 1/samples), any IPS estimate for a candidate that wants it falls apart."""
    rng = np.random.default_rng(5)
    means = np.array([0.45, 0.50, 0.55])
    alpha, beta = np.ones(3), np.ones(3)
    rows = 3000
    chosen, propensity, reward = np.zeros(rows, int), np.zeros(rows), np.zeros(rows)
    for i in range(rows):
        chosen[i] = int(np.argmax(rng.beta(alpha, beta)))
        propensity[i] = thompson_choice_probabilities(alpha, beta, 1, rng, samples=1000).propensity(chosen[i])
        reward[i] = float(rng.random() < means[chosen[i]])
        alpha[chosen[i]] += reward[i]
        beta[chosen[i]] += 1 - reward[i]
    log = LoggedDecisions(chosen, propensity, reward, 3)
    candidate = CandidatePolicy.fixed({0: 0.2, 1: 0.3, 2: 0.5})
    evaluation = evaluate(log, candidate, ALL, rng)
    truth = 0.2 * 0.45 + 0.3 * 0.50 + 0.5 * 0.55  # 0.515
    # Over 60 seeds SNIPS and DR covered the truth 95-97% of the time, IPS only ~88% (90% with
    # exact propensities too: its rare huge weights make the normal interval too narrow).
    assert_estimates_cover(evaluation, truth, names=("snips", "dr"))
    ips = by_name(evaluation)["ips"]
    assert abs(ips.value - truth) < 1.5 * (ips.upper - ips.lower)  # within ~3 standard errors
    assert np.bincount(chosen).argmax() == 2  # the live policy found the best arm


# ----- linear contextual -----


def test_fixed_candidate_on_linear_log_and_dr_is_tighter_than_ips():
    log, means = linear_log(seed=6)
    distribution = {0: 0.1, 1: 0.2, 2: 0.3, 3: 0.4}
    truth = float((means @ np.array([0.1, 0.2, 0.3, 0.4])).mean())
    evaluation = evaluate(log, CandidatePolicy.fixed(distribution), ALL, np.random.default_rng(6))
    assert_estimates_cover(evaluation, truth)
    estimates = by_name(evaluation)
    width = {name: e.upper - e.lower for name, e in estimates.items()}
    # The ridge reward model is the true model here: DR only pays for the noise.
    assert width["dr"] < 0.5 * width["ips"]
    assert truth == pytest.approx(0.43, abs=0.01)  # the intercepts: contexts average [1, 0, 0]


@pytest.mark.parametrize("discount", [0.0, 0.001])
def test_learning_linear_thompson_candidate_on_linear_log(discount):
    log, means = linear_log(seed=7)
    candidate = CandidatePolicy("linear_thompson", exploration=0.5, ridge_lambda=1.0, discount=discount)
    pi = reference_linear_replay(log, candidate, update_every=500)
    truth = float(np.einsum("mn,mn->m", pi, means).mean())
    evaluation = evaluate(log, candidate, ALL, np.random.default_rng(7), update_every=500)
    assert_estimates_cover(evaluation, truth)
    # It learns: near the best arm per context (0.755 on average), far above the logging policy.
    assert truth > 0.7 > evaluation.logged_value + 0.1


def test_linucb_replay_matches_the_one_event_at_a_time_reference_exactly():
    log, _ = linear_log(seed=8, rows=2000)
    rng = np.random.default_rng(108)
    offered = rng.random((2000, 4)) < 0.8
    offered[np.arange(2000), log.chosen] = True
    log = LoggedDecisions(
        log.chosen, log.propensity, log.reward, 4, log.contexts, offered=offered, rewarded=rng.random(2000) < 0.9
    )
    candidate = CandidatePolicy("lin_ucb", exploration=0.8, ridge_lambda=2.0, discount=0.01)
    reference = reference_linear_replay(log, candidate, update_every=7)
    replayed = candidate_probabilities(log, candidate, rng, update_every=7)
    assert replayed.tolist() == reference[np.arange(2000), log.chosen].tolist()
    assert 0.2 < replayed.mean() < 0.8  # it agrees with the logged arm sometimes, not always


# ----- options and edge cases -----


def test_weight_clipping_caps_each_weight():
    log = bernoulli_log(seed=9, rows=1000)
    candidate = CandidatePolicy.fixed({2: 1.0})
    evaluation = evaluate(log, candidate, ["ips"], np.random.default_rng(9), max_weight=2.0)
    clipped = by_name(evaluation)["ips"]
    weights = np.minimum((log.chosen == 2) / log.propensity, 2.0)
    assert clipped.value == pytest.approx(float((weights * log.reward).mean()))
    # Every weight is 0 or the cap: ESS is the number of rows that logged arm 2 (~33%).
    assert evaluation.effective_sample_size == pytest.approx((log.chosen == 2).sum(), abs=1e-6)
    unclipped = by_name(evaluate(log, candidate, ["ips"], np.random.default_rng(9)))["ips"]
    assert clipped.value < unclipped.value  # 1 / p(arm 2) = 3.04 > 2: the cap bites


def test_snips_is_nan_when_no_logged_arm_has_candidate_probability():
    log = LoggedDecisions(np.array([0, 1, 0]), np.full(3, 0.5), np.array([1.0, 0.0, 1.0]), 3)
    evaluation = evaluate(log, CandidatePolicy.fixed({2: 1.0}), ["ips", "snips"], np.random.default_rng(0))
    estimates = by_name(evaluation)
    assert (estimates["ips"].value, estimates["ips"].lower, estimates["ips"].upper) == (0.0, 0.0, 0.0)
    assert evaluation.effective_sample_size == 0.0
    assert math.isnan(estimates["snips"].value)


def test_a_single_decision_has_an_unbounded_interval():
    log = LoggedDecisions(np.array([1]), np.array([0.5]), np.array([1.0]), 2)
    estimate = evaluate(log, CandidatePolicy.fixed({1: 1.0}), [Estimator.IPS], np.random.default_rng(0)).estimates[0]
    assert (estimate.value, estimate.lower, estimate.upper) == (2.0, -math.inf, math.inf)


@pytest.mark.parametrize(
    "columns, message",
    [
        (dict(propensity=[0.5, 0.0, 0.5]), "row 1: propensity"),
        (dict(propensity=[0.5, 0.5, float("nan")]), "row 2: propensity"),
        (dict(propensity=[0.5, 1.5, 0.5]), "row 1: propensity"),
        (dict(propensity=[0.5, 0.5]), r"propensity must have shape \(3,\)"),
        (dict(chosen=[0, 3, 1]), "row 1: chosen arm 3 is outside the 3 arms"),
        (dict(chosen=[0.0, 1.0, 1.0]), "integer arm indices"),
        (dict(reward=[1.0, float("inf"), 0.0]), "row 1: reward must be finite"),
        (dict(contexts=np.ones((2, 2))), r"contexts must have shape \(3, d\)"),
        (dict(offered=np.array([[True, False, True]] * 3)), "row 1: chosen arm 1 was not offered"),
        (dict(offered=np.ones((3, 2), dtype=bool)), r"offered must have shape \(3, 3\)"),
        (dict(rewarded=[1, 0, 1]), "rewarded must be a bool array"),
    ],
)
def test_bad_logs_are_rejected(columns, message):
    base = dict(chosen=[0, 1, 2], propensity=[0.5, 0.5, 0.5], reward=[1.0, 0.0, 1.0], arm_count=3)
    with pytest.raises(ValueError, match=message):
        LoggedDecisions(**{**base, **columns})


def test_bad_requests_are_rejected():
    rng = np.random.default_rng(0)
    empty = LoggedDecisions(np.array([], dtype=int), np.array([]), np.array([]), 3)
    with pytest.raises(ValueError, match="no decisions"):
        evaluate(empty, CandidatePolicy.fixed({0: 1.0}), ALL, rng)
    log = LoggedDecisions(np.array([0, 1]), np.full(2, 0.5), np.array([1.0, 0.5]), 2)
    with pytest.raises(ValueError, match="needs contexts"):
        evaluate(log, CandidatePolicy("lin_ucb"), ALL, rng)
    with pytest.raises(ValueError, match="'median' is not a valid Estimator"):
        evaluate(log, CandidatePolicy.fixed({0: 1.0}), ["median"], rng)
    with pytest.raises(ValueError, match="outside the 2 arms"):
        evaluate(log, CandidatePolicy.fixed({5: 1.0}), ALL, rng)
    with pytest.raises(ValueError, match="row 0: a thompson candidate needs rewards in"):
        evaluate(LoggedDecisions(np.array([0]), np.ones(1), np.array([2.0]), 2), CandidatePolicy("thompson"), ALL, rng)
    offered = np.array([[True, False], [False, True]])
    masked = LoggedDecisions(np.array([0, 1]), np.ones(2), np.ones(2), 2, offered=offered)
    with pytest.raises(ValueError, match="row 1: the candidate gives no probability"):
        evaluate(masked, CandidatePolicy.fixed({0: 1.0}), ALL, rng)
    for bad in (dict(discount=1.0), dict(prior_alpha=0.0), dict(ridge_lambda=0.0), dict(exploration=-1.0)):
        with pytest.raises(ValueError):
            CandidatePolicy("thompson", **bad)
    with pytest.raises(ValueError):
        CandidatePolicy.fixed({0: -0.5, 1: 1.5})
    with pytest.raises(ValueError):
        CandidatePolicy("greedy")

"""Choice probabilities of the bandit policies: seeded Monte Carlo checked against exact values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import betaln, ndtr

from ml_serving_server.services.bandit.domain.propensity import (
    deterministic_choice_probabilities,
    deterministic_first_choice_batch,
    gaussian_choice_probabilities,
    gaussian_first_choice_batch,
    gaussian_first_choice_by_quadrature,
    thompson_choice_probabilities,
    thompson_first_choice,
)


def _rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


def beta_beats(a_y: int, b_y: int, a_x: int, b_x: int) -> float:
    """Exact P(Y > X) for independent Y ~ Beta(a_y, b_y), X ~ Beta(a_x, b_x), integer a_y.

    Expand P(Y > x) = 1 - I_x(a_y, b_y) as a finite sum over i < a_y and integrate each term against X."""
    terms = [
        betaln(a_x + i, b_x + b_y) - math.log(b_y + i) - betaln(1 + i, b_y) - betaln(a_x, b_x) for i in range(a_y)
    ]
    return float(np.exp(terms).sum())


# ----- Beta Thompson sampling -----


@pytest.mark.parametrize("k", [1, 3, 7])
def test_thompson_probabilities_sum_to_one_first_and_k_in_top_k(k):
    alpha, beta = np.arange(1.0, 8.0), np.arange(7.0, 0.0, -1.0)
    result = thompson_choice_probabilities(alpha, beta, k, _rng())
    assert result.samples == 3000
    assert result.first.sum() == pytest.approx(1.0)
    assert result.top_k.sum() == pytest.approx(k)
    assert ((result.first <= result.top_k) & (result.top_k <= 1.0)).all()
    # Arm 6 (Beta(7, 1), mean 0.875) leads; arm 0 (Beta(1, 7)) almost never does.
    assert result.first.argmax() == 6 and result.first[0] < 0.01


def test_closed_form_helper_agrees_with_symmetry():
    assert beta_beats(3, 3, 3, 3) == pytest.approx(0.5)
    assert beta_beats(1, 1, 1, 1) == pytest.approx(0.5)
    assert beta_beats(2, 1, 1, 1) == pytest.approx(2 / 3)  # max-of-two-uniforms density 2y
    assert beta_beats(5, 2, 3, 4) + beta_beats(3, 4, 5, 2) == pytest.approx(1.0)


@pytest.mark.parametrize("params", [(5, 2, 3, 4), (12, 30, 10, 31), (1, 1, 2, 1)])
def test_two_beta_arms_match_the_closed_form(params):
    a_y, b_y, a_x, b_x = params
    exact = beta_beats(a_y, b_y, a_x, b_x)
    samples = 200_000
    result = thompson_choice_probabilities(np.array([a_x, a_y], float), np.array([b_x, b_y], float), 1, _rng(), samples)
    # 4 standard errors of a 200,000-draw frequency
    tolerance = 4 * math.sqrt(exact * (1 - exact) / samples)
    assert result.first[1] == pytest.approx(exact, abs=tolerance)
    assert result.first[0] == pytest.approx(1 - exact, abs=tolerance)


def test_default_samples_keep_the_error_below_one_percent():
    exact = beta_beats(12, 30, 10, 31)  # about 0.39: near the worst case p(1 - p)
    errors = [
        thompson_choice_probabilities(np.array([10.0, 12.0]), np.array([31.0, 30.0]), 1, _rng(seed)).first[1] - exact
        for seed in range(40)
    ]
    assert np.sqrt(np.mean(np.square(errors))) < 0.011  # documented: at most 0.0091


def test_propensity_is_never_zero_and_its_inverse_is_nearly_unbiased():
    # Arm 1 is first with probability p = Phi(-2.326) = 0.01 (two Gaussian arms).
    gap = 2.3263478740408408 * math.sqrt(2.0)
    p = float(ndtr(-gap / math.sqrt(2.0)))
    mean, scale = np.array([0.0, -gap]), np.ones(2)
    rng = _rng(11)
    inverses = [1.0 / gaussian_choice_probabilities(mean, scale, 1, rng, 1000).propensity(1) for _ in range(400)]
    # E[1/propensity] = (1 - (1 - p)^1001) / p = 99.996 for p = 0.01
    assert np.mean(inverses) == pytest.approx((1 - (1 - p) ** 1001) / p, abs=5.0)
    rare = gaussian_choice_probabilities(np.array([0.0, -6.0]), np.ones(2), 1, rng, 1000)
    assert rare.first[1] == 0.0 and rare.propensity(1) == pytest.approx(1 / 1001)


def test_thompson_rejects_bad_input():
    rng = _rng()
    with pytest.raises(ValueError, match="same shape"):
        thompson_choice_probabilities(np.ones(3), np.ones(2), 1, rng)
    with pytest.raises(ValueError, match="positive"):
        thompson_choice_probabilities(np.array([1.0, 0.0]), np.ones(2), 1, rng)
    with pytest.raises(ValueError, match="k must be between 1 and 2"):
        thompson_choice_probabilities(np.ones(2), np.ones(2), 3, rng)
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        thompson_choice_probabilities(np.ones((2, 2)), np.ones((2, 2)), 1, rng)


# ----- Gaussian (linear Thompson) -----


def test_two_gaussian_arms_match_the_normal_cdf():
    mean, scale = np.array([0.3, 0.5]), np.array([0.2, 0.4])
    exact = float(ndtr((0.5 - 0.3) / math.hypot(0.2, 0.4)))  # P(X1 > X0) = 0.6726
    result = gaussian_choice_probabilities(mean, scale, 1, _rng(), 100_000)
    assert result.first[1] == pytest.approx(exact, abs=0.006)
    assert result.top_k.sum() == pytest.approx(1.0)


def test_gaussian_with_zero_scale_is_deterministic_and_ties_keep_arm_order():
    result = gaussian_choice_probabilities(np.array([0.2, 0.9, 0.9, 0.5]), np.zeros(4), 2, _rng())
    assert result.samples == 0
    assert result.first.tolist() == [0.0, 1.0, 0.0, 0.0]
    assert result.top_k.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert result.propensity(1) == 1.0


def test_gaussian_mixing_zero_and_positive_scales():
    # Arm 0 sits at 0 exactly; arm 1 is N(0, 1): each is first half the time. Arms 2 and 3 tie
    # exactly at -1 (zero scale): when arm 1 drops below -1, the tie for second goes to arm 2.
    mean, scale = np.array([0.0, 0.0, -1.0, -1.0]), np.array([0.0, 1.0, 0.0, 0.0])
    result = gaussian_choice_probabilities(mean, scale, 2, _rng(), 40_000)
    assert result.samples == 40_000
    assert result.first == pytest.approx([0.5, 0.5, 0.0, 0.0], abs=0.01)
    assert result.top_k[0] == 1.0 and result.top_k[3] == 0.0
    assert result.top_k[2] == pytest.approx(ndtr(-1.0), abs=0.01)  # 0.1587
    assert result.top_k.sum() == pytest.approx(2.0)


@pytest.mark.parametrize(
    "mean, scale",
    [((0.3, 0.5), (0.2, 0.4)), ((0.0, 0.001), (1.0, 0.001)), ((0.0, 5.0), (1.0, 0.01)), ((0.0, 0.0), (1e-4, 1.0))],
)
def test_quadrature_matches_the_normal_cdf_for_two_arms(mean, scale):
    result = gaussian_first_choice_by_quadrature(np.array(mean), np.array(scale))
    exact = float(ndtr((mean[1] - mean[0]) / math.hypot(*scale)))
    assert result.samples == 0
    assert result.first == pytest.approx([1 - exact, exact], abs=1e-9)
    assert result.top_k.tolist() == result.first.tolist()


def test_quadrature_agrees_with_sampling_over_many_arms_of_very_different_scales():
    rng = _rng(0)
    mean = rng.normal(0.0, 0.3, 8)
    scale = rng.uniform(0.01, 0.5, 8) * np.array([1, 0.02, 1, 1, 0.02, 1, 1, 0.02])
    exact = gaussian_first_choice_by_quadrature(mean, scale).first
    assert exact.sum() == pytest.approx(1.0, abs=1e-9)
    sampled = gaussian_choice_probabilities(mean, scale, 1, rng, 400_000).first
    assert np.abs(exact - sampled).max() < 0.003  # 4 standard errors of 400,000 draws


def test_quadrature_with_zero_scales_follows_the_tie_rule():
    # Arms 0 and 2 sit at 1 exactly (arm 0 wins their tie); arm 1 ~ N(0, 1) beats them when above 1.
    result = gaussian_first_choice_by_quadrature(np.array([1.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0]))
    assert result.first == pytest.approx([ndtr(1.0), 1 - ndtr(1.0), 0.0], abs=1e-9)
    deterministic = gaussian_first_choice_by_quadrature(np.array([0.5, 0.7, 0.7]), np.zeros(3))
    assert deterministic.first.tolist() == [0.0, 1.0, 0.0]
    assert deterministic.propensity(1) == 1.0


def test_gaussian_rejects_negative_or_non_finite_scale():
    with pytest.raises(ValueError, match="non-negative"):
        gaussian_choice_probabilities(np.zeros(2), np.array([1.0, -1.0]), 1, _rng())
    with pytest.raises(ValueError, match="finite"):
        gaussian_choice_probabilities(np.zeros(2), np.array([1.0, np.nan]), 1, _rng())


# ----- LinUCB -----


def test_linucb_ties_follow_arm_order():
    result = deterministic_choice_probabilities(np.array([3.0, 1.0, 3.0, 3.0]), 2)
    assert result.first.tolist() == [1.0, 0.0, 0.0, 0.0]
    assert result.top_k.tolist() == [1.0, 0.0, 1.0, 0.0]
    batch = deterministic_first_choice_batch(np.array([[3.0, 1.0, 3.0], [0.0, 2.0, 2.0]]))
    assert batch.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    allowed = np.array([[False, True, True], [True, False, True]])
    assert deterministic_first_choice_batch(np.array([[3.0, 1.0, 3.0], [0.0, 2.0, 2.0]]), allowed).tolist() == [
        [0.0, 0.0, 1.0],
        [0.0, 0.0, 1.0],
    ]


# ----- batches (what off-policy evaluation calls) -----


def test_gaussian_batch_is_unbiased_and_beats_plain_sampling():
    rng = _rng(3)
    rows, repeats = 400, 100
    mean = np.column_stack([np.zeros(rows), rng.normal(0.0, 0.5, rows)])
    scale = np.column_stack([np.full(rows, 0.3), rng.uniform(0.1, 0.6, rows)])
    exact = ndtr((mean[:, 1] - mean[:, 0]) / np.hypot(scale[:, 0], scale[:, 1]))
    estimates = np.mean([gaussian_first_choice_batch(mean, scale, rng)[:, 1] for _ in range(repeats)], axis=0)
    error = estimates - exact
    assert np.mean(error) == pytest.approx(0.0, abs=0.003)
    # 400 draws per decision; a plain 0/1 frequency would have an RMS error of 0.020 here.
    plain = np.sqrt(np.mean(exact * (1 - exact) / (4 * repeats)))
    assert plain == pytest.approx(0.020, abs=0.002)
    assert np.sqrt(np.mean(error**2)) < 0.7 * plain


def test_gaussian_batch_respects_allowed_arms_and_zero_scales():
    mean = np.array([[0.0, 1.0, 0.5], [0.0, 1.0, 0.5], [0.2, 0.2, 0.2]])
    scale = np.array([[0.1, 0.1, 0.1], [0.1, 0.1, 0.1], [0.0, 0.0, 0.0]])
    allowed = np.array([[True, False, True], [True, False, False], [True, True, True]])
    result = gaussian_first_choice_batch(mean, scale, _rng(), samples=64, allowed=allowed)
    assert result[0, 1] == 0.0 and result[0, 2] == pytest.approx(1.0, abs=1e-4)  # 5 sd ahead
    assert result[1].tolist() == [1.0, 0.0, 0.0]  # the only allowed arm
    assert result[2].tolist() == [1.0, 0.0, 0.0]  # deterministic tie: the first arm


def test_thompson_first_choice_per_offered_set():
    alpha, beta = np.array([5.0, 3.0, 12.0]), np.array([2.0, 4.0, 30.0])
    p01 = beta_beats(3, 4, 5, 2)  # P(arm 1 beats arm 0)
    p12 = beta_beats(12, 30, 3, 4)  # P(arm 2 beats arm 1)
    allowed = np.array([[True, True, False], [False, True, True], [True, True, False]])
    result = thompson_first_choice(alpha, beta, _rng(), 100_000, allowed)
    assert result[0] == pytest.approx([1 - p01, p01, 0.0], abs=0.006)
    assert result[1] == pytest.approx([0.0, 1 - p12, p12], abs=0.006)
    assert result[2].tolist() == result[0].tolist()
    every_arm = thompson_first_choice(alpha, beta, _rng(), 100_000)
    assert every_arm.shape == (3,) and every_arm.sum() == pytest.approx(1.0)


def test_thompson_first_choice_with_many_offered_sets_stays_unbiased():
    rng = _rng(5)
    alpha, beta = np.array([2.0, 3.0, 4.0, 5.0]), np.array([5.0, 4.0, 3.0, 2.0])
    # All 15 non-empty subsets of 4 arms, 300 decisions each: past the shared-set limit.
    subsets = np.array([[(s >> i) & 1 == 1 for i in range(4)] for s in range(1, 16)])
    allowed = np.repeat(subsets, 300, axis=0)
    result = thompson_first_choice(alpha, beta, rng, 4000, allowed)
    assert (result[~allowed] == 0).all() and result.sum(axis=1) == pytest.approx(np.ones(len(allowed)))
    per_subset = result.reshape(15, 300, 4).mean(axis=1)
    reference = np.stack([thompson_first_choice(alpha, beta, rng, 100_000, subset[None])[0] for subset in subsets])
    assert np.abs(per_subset - reference).max() < 0.03


def test_batches_reject_bad_allowed_masks():
    mean, scale = np.zeros((2, 3)), np.ones((2, 3))
    with pytest.raises(ValueError, match=r"allowed must be a bool array of shape \(2, 3\)"):
        gaussian_first_choice_batch(mean, scale, _rng(), allowed=np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="row 1 allows no arm"):
        deterministic_first_choice_batch(mean, np.array([[True, False, False], [False, False, False]]))
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        thompson_first_choice(np.ones(3), np.ones(3), _rng(), 100, np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match=r"shape \(N, n\)"):
        gaussian_first_choice_batch(np.zeros(3), np.ones(3), _rng())

"""Adaptive allocation maths: probability of being best, weights within floor and ceiling, when
weights move, and a simulated experiment in which the bandit's weights follow the better variant."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_serving_server.errors import InvalidArgument
from ml_serving_server.services.router.domain.allocation import (
    MIN_MOVE_BPS,
    Allocation,
    AllocationMode,
    check_allocation,
    probability_best,
    reallocate,
    weights_within,
)
from ml_serving_server.services.router.domain.statistics import Counts, MetricKind

BINARY, NUMERIC = MetricKind.BINARY, MetricKind.NUMERIC
THOMPSON = AllocationMode.THOMPSON


def rng(seed: int = 7) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- probability of being best ---------------------------------------------------------------


def test_a_clearly_better_rate_is_almost_surely_best():
    best = probability_best(BINARY, {"a": Counts(2000, 200), "b": Counts(2000, 300)}, rng())
    assert best["b"] > 0.999 and best["a"] < 0.001
    assert sum(best.values()) == pytest.approx(1.0)


def test_equal_evidence_splits_about_evenly():
    best = probability_best(BINARY, {"a": Counts(1000, 100), "b": Counts(1000, 100), "c": Counts(1000, 100)}, rng())
    assert all(abs(p - 1 / 3) < 0.02 for p in best.values())


def test_no_data_is_an_even_split_not_a_winner():
    best = probability_best(BINARY, {"a": Counts(0), "b": Counts(0)}, rng())
    assert abs(best["a"] - 0.5) < 0.02


def test_numeric_means_compare_with_their_spread():
    def counts(n, mean, sd):
        return Counts(n, sum=n * mean, sum_sq=(n - 1) * sd * sd + n * mean * mean)

    sure = probability_best(NUMERIC, {"a": counts(1000, 10.0, 2.0), "b": counts(1000, 10.5, 2.0)}, rng())
    unsure = probability_best(NUMERIC, {"a": counts(1000, 10.0, 40.0), "b": counts(1000, 10.5, 40.0)}, rng())
    assert sure["b"] > 0.99
    assert 0.5 < unsure["b"] < 0.8  # same lift, 20 times the noise: far from decided


# --- weights within floor and ceiling ----------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=2, max_size=8), st.data())
def test_weights_sum_to_10000_within_floor_and_ceiling(shares, data):
    n = len(shares)
    floor = data.draw(st.integers(0, 10_000 // n))
    ceiling = data.draw(st.integers(max(floor, -(-10_000 // n)), 10_000))
    weights = weights_within({f"v{i}": s for i, s in enumerate(shares)}, floor, ceiling)
    assert sum(weights.values()) == 10_000
    assert all(floor <= w <= ceiling for w in weights.values())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.01, 1), min_size=2, max_size=6))
def test_without_bounds_weights_are_proportional_to_the_shares(shares):
    weights = weights_within({f"v{i}": s for i, s in enumerate(shares)}, 0, 10_000)
    total = sum(shares)
    assert all(abs(weights[f"v{i}"] - 10_000 * s / total) < 1.0 for i, s in enumerate(shares))


def test_a_share_over_the_ceiling_goes_to_the_others_and_the_floor_holds():
    weights = weights_within({"a": 0.98, "b": 0.015, "c": 0.005}, 1000, 7000)
    assert weights["a"] == 7000 and min(weights["b"], weights["c"]) >= 1000 and sum(weights.values()) == 10_000


def test_impossible_bounds_are_refused():
    with pytest.raises(ValueError):
        weights_within({"a": 0.5, "b": 0.5}, 6000, 10_000)


# --- when weights move --------------------------------------------------------------------------


ADAPTIVE = Allocation(THOMPSON, floor_bps=1000, ceiling_bps=10_000, interval_s=60, min_exposures=100)


def test_nothing_moves_before_every_variant_has_min_exposures():
    counts = {"control": Counts(5000, 500), "treatment": Counts(99, 60)}
    assert reallocate("click", BINARY, [("control", 5000), ("treatment", 5000)], counts, ADAPTIVE, rng()) is None


def test_a_move_smaller_than_the_minimum_is_not_made():
    counts = {"control": Counts(1000, 100), "treatment": Counts(1000, 100)}
    near = weights_within(probability_best(BINARY, counts, rng(3)), 1000, 10_000)
    current = [("control", near["control"]), ("treatment", near["treatment"])]
    assert reallocate("click", BINARY, current, counts, ADAPTIVE, rng(3)) is None
    assert MIN_MOVE_BPS > 0


def test_a_reallocation_carries_the_figures_behind_it():
    counts = {"control": Counts(1000, 100), "treatment": Counts(1000, 200)}
    change = reallocate("click", BINARY, [("control", 5000), ("treatment", 5000)], counts, ADAPTIVE, rng())
    assert change is not None
    assert change.weights == {"control": 1000, "treatment": 9000}
    control, treatment = change.figures
    assert (control.variant, control.exposures, control.mean) == ("control", 1000, 0.1)
    assert (treatment.weight_before_bps, treatment.weight_after_bps) == (5000, 9000)
    assert treatment.probability_best > 0.999
    assert "treatment 5000->9000" in change.reason() and "click" in change.reason()


@pytest.mark.parametrize("allocation, field", [
    (Allocation(THOMPSON, floor_bps=5001), "a.floor_bps"),
    (Allocation(THOMPSON, floor_bps=-1), "a.floor_bps"),
    (Allocation(THOMPSON, ceiling_bps=4999), "a.ceiling_bps"),
    (Allocation(THOMPSON, floor_bps=3000, ceiling_bps=2999), "a.ceiling_bps"),
    (Allocation(THOMPSON, ceiling_bps=10_001), "a.ceiling_bps"),
    (Allocation(THOMPSON, interval_s=9.9), "a.interval"),
    (Allocation(THOMPSON, interval_s=float("nan")), "a.interval"),
    (Allocation(THOMPSON, min_exposures=-1), "a.min_exposures"),
])
def test_allocations_that_cannot_hold_name_their_field(allocation, field):
    with pytest.raises(InvalidArgument) as raised:
        check_allocation(allocation, 2, "a")
    assert raised.value.field == field


def test_a_fixed_allocation_keeps_no_bandit_settings():
    assert check_allocation(Allocation(AllocationMode.FIXED, floor_bps=9999), 3, "a") == Allocation()


# --- a simulated experiment -------------------------------------------------------------------


def simulate(rates: dict[str, float], rounds: int, users_per_round: int, allocation: Allocation | None, seed: int):
    """Users arrive in rounds, split by the current weights, and convert at the variants' true
    rates; with an allocation the weights are recomputed after each round. Returns the final
    weights and the conversions lost against always serving the best variant (regret)."""
    draw = np.random.default_rng(seed)
    names = list(rates)
    weights = {name: 10_000 // len(names) for name in names}
    weights[names[0]] += 10_000 - sum(weights.values())
    counts = {name: Counts(0) for name in names}
    regret = 0.0
    for _ in range(rounds):
        split = draw.multinomial(users_per_round, [weights[n] / 10_000 for n in names])
        for name, users in zip(names, split):
            converted = int(draw.binomial(users, rates[name]))
            counts[name] = Counts(counts[name].n + int(users), counts[name].successes + converted)
            regret += users * (max(rates.values()) - rates[name])
        if allocation is not None:
            change = reallocate("click", BINARY, list(weights.items()), counts, allocation, draw)
            if change is not None:
                weights = change.weights
    return weights, regret


def test_the_weights_follow_the_better_variant_and_lose_less_than_a_fixed_split():
    rates = {"control": 0.10, "b": 0.11, "c": 0.14}
    allocation = Allocation(THOMPSON, floor_bps=500, ceiling_bps=10_000, interval_s=60, min_exposures=200)
    adaptive_regret, fixed_regret = [], []
    for seed in range(6):
        weights, regret = simulate(rates, rounds=30, users_per_round=600, allocation=allocation, seed=seed)
        assert weights["c"] >= 8900 and max(weights["control"], weights["b"]) <= 600, (seed, weights)
        adaptive_regret.append(regret)
        fixed_regret.append(simulate(rates, rounds=30, users_per_round=600, allocation=None, seed=seed)[1])
    assert np.median(adaptive_regret) < 0.5 * np.median(fixed_regret)


def test_with_no_difference_the_weights_do_not_settle_on_one_variant():
    rates = {"control": 0.10, "b": 0.10}
    allocation = Allocation(THOMPSON, floor_bps=1000, ceiling_bps=10_000, interval_s=60, min_exposures=200)
    settled = 0
    for seed in range(12):
        weights, _ = simulate(rates, rounds=20, users_per_round=500, allocation=allocation, seed=seed)
        settled += max(weights.values()) == 9000
    assert settled <= 6  # a tie keeps moving back and forth; it is not a confident winner

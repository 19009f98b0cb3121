"""Router statistics, simulated: seeded A/B tests and canaries read after every batch.

Peeking after each of 50 batches, the always-valid (mSPRT) results declare a difference
between equal variants in at most the nominal 5% of runs (plus a 3-sigma binomial margin),
while a fixed-horizon test read the same way does not (so these tests can fail); with a real
lift they declare the right winner. Canaries: a +20-point error rate is rolled back within a
batch or two, an equal one (almost) never. No I/O, fixed seeds, a few seconds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ml_serving_server.services.router.domain.statistics import (
    ComparisonVerdict,
    Counts,
    ExperimentVerdict,
    MetricKind,
    VariantInput,
    canary_check,
    compare,
    experiment_results,
)

ALPHA = 0.05
BATCHES = 50


def _ceiling(rate: float, runs: int) -> float:
    """The nominal rate plus three binomial standard errors over `runs` runs."""
    return rate + 3 * math.sqrt(rate * (1 - rate) / runs)


def _binary_runs(runs: int, rates: tuple[float, float], batch: int = 200, seed: int = 1):
    """Per run, the comparison after every batch (batch users per variant each time)."""
    for run in range(runs):
        rng = np.random.default_rng([seed, run])
        conversions = rng.binomial(batch, rates, size=(BATCHES, 2)).cumsum(axis=0)
        yield [compare(MetricKind.BINARY, Counts(batch * (b + 1), int(conversions[b, 0])),
                       Counts(batch * (b + 1), int(conversions[b, 1])))
               for b in range(BATCHES)]


def _declared(looks) -> ComparisonVerdict | None:
    """The first conclusive verdict of a run, if any."""
    for look in looks:
        if look.verdict in (ComparisonVerdict.VARIANT_BETTER, ComparisonVerdict.VARIANT_WORSE):
            return look.verdict
    return None


# --- no lift: false positives under continuous monitoring ------------------------------------


@pytest.fixture(scope="module")
def null_binary_runs():
    return list(_binary_runs(500, (0.10, 0.10)))


def test_always_valid_false_positive_rate_stays_nominal_when_read_after_every_batch(null_binary_runs):
    runs = len(null_binary_runs)
    false_positives = sum(_declared(looks) is not None for looks in null_binary_runs)
    assert false_positives / runs <= _ceiling(ALPHA, runs)  # measured: 4 / 500 = 0.008
    # and the reported p-value never dips below alpha (its intervals never exclude 0) more often
    below = sum(any(look.p_value < ALPHA for look in looks[1:]) for looks in null_binary_runs)
    assert below / runs <= _ceiling(ALPHA, runs)


def test_fixed_horizon_test_read_after_every_batch_exceeds_nominal(null_binary_runs):
    """The same runs, judged by the classical p-value at every look: the peeking problem."""
    runs = len(null_binary_runs)
    naive = sum(any(look.fixed_horizon_p_value < ALPHA for look in looks) for looks in null_binary_runs)
    assert naive / runs > 3 * ALPHA  # measured: 148 / 500 = 0.296
    # read once, at the end, it is fine: the problem is the peeking, not the test
    once = sum(looks[-1].fixed_horizon_p_value < ALPHA for looks in null_binary_runs)
    assert once / runs <= _ceiling(ALPHA, runs)  # measured: 22 / 500 = 0.044


def test_numeric_metric_false_positive_rate_stays_nominal_with_skewed_values():
    """Revenue-like values: 70% of users spend nothing, the others an exponential amount."""
    runs, batch, false_positives, naive = 150, 200, 0, 0
    for run in range(runs):
        rng = np.random.default_rng([2, run])
        values = rng.binomial(1, 0.3, (BATCHES, 2, batch)) * rng.exponential(10.0, (BATCHES, 2, batch))
        sums, squares = values.sum(axis=2).cumsum(axis=0), (values * values).sum(axis=2).cumsum(axis=0)
        looks = [compare(MetricKind.NUMERIC, Counts(batch * (b + 1), 0, sums[b, 0], squares[b, 0]),
                         Counts(batch * (b + 1), 0, sums[b, 1], squares[b, 1])) for b in range(BATCHES)]
        false_positives += _declared(looks) is not None
        naive += any(look.fixed_horizon_p_value < ALPHA for look in looks)
    assert false_positives / runs <= _ceiling(ALPHA, runs)  # measured: 2 / 150 = 0.013
    assert naive / runs > 3 * ALPHA  # measured: 39 / 150 = 0.26


def test_experiment_verdict_with_three_equal_variants_stays_nominal_under_peeking():
    """The whole-experiment verdict (Bonferroni over two treatments, uneven split 50/25/25)."""
    runs, batch, concluded = 200, 400, 0
    for run in range(runs):
        rng = np.random.default_rng([3, run])
        users = rng.multinomial(batch, [0.5, 0.25, 0.25], size=BATCHES)
        conversions = rng.binomial(users, 0.05)
        users, conversions = users.cumsum(axis=0), conversions.cumsum(axis=0)
        for b in range(BATCHES):
            variants = [VariantInput(name, weight, Counts(int(users[b, i]), int(conversions[b, i])), control=i == 0)
                        for i, (name, weight) in enumerate([("control", 5000), ("a", 2500), ("b", 2500)])]
            verdict = experiment_results(MetricKind.BINARY, variants).verdict
            if verdict in (ExperimentVerdict.TREATMENT_BETTER, ExperimentVerdict.CONTROL_BETTER):
                concluded += 1
                break
    assert concluded / runs <= _ceiling(ALPHA, runs)  # measured: 1 / 200


# --- a real lift: the right winner ---------------------------------------------------------------


def test_real_lift_is_declared_in_the_right_direction():
    """10% -> 12% conversion, 200 users per variant per batch: found, and never backwards."""
    verdicts = [_declared(looks) for looks in _binary_runs(100, (0.10, 0.12), seed=4)]
    assert ComparisonVerdict.VARIANT_WORSE not in verdicts
    assert verdicts.count(ComparisonVerdict.VARIANT_BETTER) >= 90  # measured: 98 / 100 (97 / 100 for the drop)
    worse = [_declared(looks) for looks in _binary_runs(100, (0.12, 0.10), seed=5)]
    assert ComparisonVerdict.VARIANT_BETTER not in worse
    assert worse.count(ComparisonVerdict.VARIANT_WORSE) >= 90


def test_experiment_names_the_lifted_variant_the_winner():
    rng = np.random.default_rng(6)
    users, conversions = np.zeros(3, dtype=int), np.zeros(3, dtype=int)
    rates = np.array([0.10, 0.10, 0.13])
    declared = None
    for _ in range(BATCHES):
        new = rng.multinomial(600, [1 / 3] * 3)
        users += new
        conversions += rng.binomial(new, rates)
        results = experiment_results(MetricKind.BINARY, [
            VariantInput(name, 3333, Counts(int(users[i]), int(conversions[i])), control=i == 0)
            for i, name in enumerate(["control", "same", "better"])])
        if results.verdict is ExperimentVerdict.TREATMENT_BETTER:
            declared = results.winning_variant
            break
    assert declared == "better"


def test_numeric_lift_is_declared_better():
    rng = np.random.default_rng(7)
    sums, squares, n, found = np.zeros(2), np.zeros(2), 0, None
    for _ in range(BATCHES):
        values = rng.binomial(1, 0.3, (2, 400)) * rng.exponential(10.0, (2, 400)) * np.array([[1.0], [1.25]])
        sums += values.sum(axis=1)
        squares += (values * values).sum(axis=1)
        n += 400
        found = _declared([compare(MetricKind.NUMERIC, Counts(n, 0, sums[0], squares[0]),
                                   Counts(n, 0, sums[1], squares[1]))])
        if found:
            break
    assert found is ComparisonVerdict.VARIANT_BETTER


# --- canaries ------------------------------------------------------------------------------------


def _canary_runs(runs: int, stable_rate: float, canary_rate: float, *, seed: int, stable_batch: int = 900,
                 canary_batch: int = 100, **thresholds) -> list[int | None]:
    """Per run, the batch after which the canary was first judged breached (None: never)."""
    firsts: list[int | None] = []
    for run in range(runs):
        rng = np.random.default_rng([seed, run])
        errors = rng.binomial([stable_batch, canary_batch], [stable_rate, canary_rate], size=(BATCHES, 2)).cumsum(0)
        first = None
        for b in range(BATCHES):
            check = canary_check(stable_batch * (b + 1), int(errors[b, 0]), canary_batch * (b + 1),
                                 int(errors[b, 1]), **thresholds)
            if check.breached:
                first = b
                break
        firsts.append(first)
    return firsts


def test_canary_with_twenty_points_more_errors_is_rolled_back_quickly():
    firsts = _canary_runs(200, 0.01, 0.21, seed=8, max_increase=0.01)
    # measured: 198 / 200 after the 1st batch (100 canary requests), 2 after the 2nd
    assert all(first is not None and first <= 2 for first in firsts)
    relative = _canary_runs(200, 0.01, 0.21, seed=9, max_relative_increase=1.0)  # allowed: twice stable's rate
    assert all(first is not None and first <= 2 for first in relative)


def test_canary_as_good_as_stable_is_not_rolled_back():
    # exactly at the threshold (equal rates, no allowance): the hardest null case
    at_threshold = _canary_runs(500, 0.05, 0.05, seed=10)
    assert sum(first is not None for first in at_threshold) / 500 <= _ceiling(ALPHA, 500)  # measured: 6 / 500 = 0.012
    # a realistic allowance of one point: equal rates are far inside it
    allowed = _canary_runs(500, 0.05, 0.05, seed=11, max_increase=0.01)
    assert sum(first is not None for first in allowed) == 0
    # no errors anywhere
    assert all(first is None for first in _canary_runs(100, 0.0, 0.0, seed=12))


def test_canary_just_within_an_absolute_threshold_is_not_rolled_back_beyond_nominal():
    firsts = _canary_runs(300, 0.05, 0.06, seed=13, max_increase=0.01)
    assert sum(first is not None for first in firsts) / 300 <= _ceiling(ALPHA, 300)

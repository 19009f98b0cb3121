"""The latency histogram: buckets, their stored scheme, and quantiles within the resolution."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from ml_serving_server.services.router.domain.latency import (
    GROWTH,
    LAST_BUCKET,
    MAX_MS,
    MIN_MS,
    bucket_of,
    quantile,
    representative,
)

RESOLUTION = math.sqrt(GROWTH) - 1  # the representative is within this of any latency in its bucket


def histogram(latencies) -> Counter:
    return Counter(bucket_of(x) for x in latencies)


def exact_quantile(latencies, q: float) -> float:
    ordered = sorted(latencies)
    return ordered[max(1, math.ceil(round(q * len(ordered), 9))) - 1]


def test_the_stored_scheme_does_not_drift():
    # Stored histograms depend on these: a change here must be a deliberate migration.
    assert (MIN_MS, MAX_MS, GROWTH, LAST_BUCKET) == (0.01, 600_000.0, 1.02, 904)
    assert [bucket_of(x) for x in (1.0, 10.0, 100.0, 1000.0)] == [232, 348, 465, 581]


@pytest.mark.parametrize("latency", [math.nan, -1.0, -math.inf, 0.0, 1e-9, MIN_MS, MIN_MS * 1.019])
def test_tiny_negative_and_nan_latencies_are_bucket_0(latency):
    assert bucket_of(latency) == 0


@pytest.mark.parametrize("latency", [MAX_MS, MAX_MS * 10, 1e300, math.inf])
def test_huge_latencies_are_clamped_to_the_last_bucket(latency):
    assert bucket_of(latency) == LAST_BUCKET


def test_buckets_are_monotone_and_hold_their_representative():
    latencies = [MIN_MS * 1.001 ** k for k in range(0, 18_000, 7)]
    buckets = [bucket_of(x) for x in latencies]
    assert buckets == sorted(buckets)
    for bucket in range(LAST_BUCKET):
        assert bucket_of(representative(bucket)) == bucket
    assert representative(LAST_BUCKET) == MAX_MS


def test_every_latency_in_range_is_represented_within_the_resolution():
    rng = random.Random(7)
    for _ in range(5_000):
        latency = math.exp(rng.uniform(math.log(MIN_MS * GROWTH), math.log(MAX_MS / GROWTH)))
        assert abs(representative(bucket_of(latency)) / latency - 1) <= RESOLUTION + 1e-12


@pytest.mark.parametrize("distribution", ["uniform", "lognormal", "exponential", "bimodal"])
def test_quantiles_of_known_distributions_are_within_the_resolution(distribution):
    rng = random.Random(distribution)
    draw = {
        "uniform": lambda: rng.uniform(1.0, 500.0),
        "lognormal": lambda: rng.lognormvariate(3.0, 1.5),
        "exponential": lambda: rng.expovariate(1 / 40) + 0.05,
        "bimodal": lambda: rng.choice((rng.gauss(5, 0.5), rng.gauss(900, 50))),
    }[distribution]
    latencies = [max(draw(), 0.02) for _ in range(20_000)]
    counts = histogram(latencies)
    for q in (0.0, 0.01, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0):
        expected = exact_quantile(latencies, q)
        assert quantile(counts, q) == pytest.approx(expected, rel=RESOLUTION + 1e-9), q


def test_a_quantile_is_the_bucket_of_the_ceil_q_n_th_sample():
    counts = histogram([1.0] * 99 + [1000.0])
    assert quantile(counts, 0.99) == pytest.approx(1.0, rel=RESOLUTION)  # the 99th of 100, not the 100th
    assert quantile(counts, 0.991) == pytest.approx(1000.0, rel=RESOLUTION)
    assert quantile(counts, 0.0) == pytest.approx(1.0, rel=RESOLUTION)  # the first sample
    assert quantile(counts, 1.0) == pytest.approx(1000.0, rel=RESOLUTION)


def test_one_sample_is_every_quantile():
    counts = histogram([42.0])
    assert {quantile(counts, q) for q in (0.0, 0.5, 0.99, 1.0)} == {representative(bucket_of(42.0))}


def test_an_empty_histogram_is_0():
    assert quantile({}, 0.5) == 0.0
    assert quantile({10: 0, 20: -3}, 0.99) == 0.0  # non-positive counts are ignored


def test_clamped_buckets_read_back_as_the_ends_of_the_range():
    assert quantile({0: 5}, 0.5) == pytest.approx(MIN_MS, rel=RESOLUTION)
    assert quantile({LAST_BUCKET: 5}, 0.5) == MAX_MS
    assert quantile({LAST_BUCKET + 50: 1}, 0.5) == MAX_MS  # out-of-range buckets are clamped too


@pytest.mark.parametrize("q", [-0.1, 1.5, math.nan])
def test_a_quantile_outside_0_1_is_refused(q):
    with pytest.raises(ValueError):
        quantile({1: 1}, q)

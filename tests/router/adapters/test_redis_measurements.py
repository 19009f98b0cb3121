"""RedisMeasurements against a real Redis and a three-node Redis Cluster: exposures, request
samples, outcome events and the counts read back; its guarantees under retries, reordering,
concurrency and Redis being down."""

from __future__ import annotations

import asyncio
import math
import random
import uuid

import pytest

from ml_serving_server.services.router.domain.latency import GROWTH
from ml_serving_server.services.router.domain.model import (
    Exposure,
    OutcomeEvent,
    OutcomeResult,
    RequestSample,
    RequestStats,
    experiment_scope,
)
from ml_serving_server.services.router.domain.ports import StoreUnavailable
from ml_serving_server.services.router.domain.statistics import Counts, MetricKind
from ml_serving_server.services.router.redis_measurements import RedisMeasurements

COUNTED, NOT_COUNTED, DUPLICATE = OutcomeResult.COUNTED, OutcomeResult.NOT_COUNTED, OutcomeResult.DUPLICATE
BINARY, NUMERIC = MetricKind.BINARY, MetricKind.NUMERIC
RESOLUTION = math.sqrt(GROWTH) - 1
TTL = 3600


@pytest.fixture(params=["redis", "redis-cluster"])
async def store(request, redis_url, key_prefix):
    if request.param == "redis-cluster":
        measurements = RedisMeasurements.from_url(request.getfixturevalue("redis_cluster_url"), key_prefix, 2.0,
                                                  cluster=True)
    else:
        measurements = RedisMeasurements.from_url(redis_url, key_prefix, 2.0)
    yield measurements
    await measurements.close()


@pytest.fixture
def experiment() -> str:
    return f"exp-{uuid.uuid4().hex[:10]}"


def exposed(experiment: str, variant: str, *users: str) -> list[Exposure]:
    return [Exposure(experiment, variant, user) for user in users]


def outcome(experiment: str, event_id: str, user: str, value: float = 1.0, variant: str = "a",
            metric: str = "m", kind: MetricKind = BINARY) -> OutcomeEvent:
    return OutcomeEvent(experiment, event_id, user, variant, metric, kind, value)


# ----- exposures -----

async def test_exposures_count_distinct_users_per_variant_and_the_holdout(store, experiment):
    await store.add_exposures(exposed(experiment, "a", "u1", "u2", "u1") + exposed(experiment, "b", "u1"))
    await store.add_exposures(exposed(experiment, "a", "u2", "u3") + exposed(experiment, Exposure.HOLDOUT, "h1", "h1"))
    counts, events, held_out = await store.counts(experiment, ["a", "b", "c"], "m", BINARY)
    assert counts == {"a": Counts(3), "b": Counts(1), "c": Counts(0)}
    assert events == {"a": 0, "b": 0, "c": 0}
    assert held_out == 1
    await store.add_exposures([])  # nothing to do


async def test_experiments_do_not_share_exposures(store, experiment):
    await store.add_exposures(exposed(experiment, "a", "u1"))
    counts, _, held_out = await store.counts(experiment + "-other", ["a"], "m", BINARY)
    assert counts["a"].n == 0 and held_out == 0


# ----- request samples -----

async def test_requests_count_calls_errors_and_latency_quantiles(store, experiment):
    scope = experiment_scope(experiment)
    fast = [RequestSample(scope, "a", 10.0, error=(i % 10 == 0)) for i in range(98)]
    await store.add_requests(fast + [RequestSample(scope, "b", 3.0, error=False)])
    await store.add_requests([RequestSample(scope, "a", 1000.0, error=True), RequestSample(scope, "a", 1000.0, False)])
    stats = await store.request_stats(scope, ["a", "b", "c"])
    assert (stats["a"].request_count, stats["a"].error_count) == (100, 11)
    assert stats["a"].latency_p50_ms == pytest.approx(10.0, rel=RESOLUTION)
    assert stats["a"].latency_p99_ms == pytest.approx(1000.0, rel=RESOLUTION)  # the 99th of 100 is slow
    assert stats["b"] == RequestStats(1, 0, pytest.approx(3.0, rel=RESOLUTION), pytest.approx(3.0, rel=RESOLUTION))
    assert stats["c"] == RequestStats()
    assert await store.request_stats(scope, []) == {}


async def test_latency_quantiles_follow_a_spread_of_latencies(store, experiment):
    scope = experiment_scope(experiment)
    rng = random.Random(3)
    latencies = [rng.lognormvariate(3, 1) for _ in range(2000)]
    await store.add_requests([RequestSample(scope, "a", x, False) for x in latencies])
    ordered = sorted(latencies)
    stats = (await store.request_stats(scope, ["a"]))["a"]
    assert stats.latency_p50_ms == pytest.approx(ordered[999], rel=RESOLUTION)
    assert stats.latency_p99_ms == pytest.approx(ordered[1979], rel=RESOLUTION)


async def test_shadow_calls_never_mix_with_served_calls(store, experiment):
    scope = experiment_scope(experiment)
    shadow_call = RequestSample(scope, "a", 500.0, True, shadow=True)
    await store.add_requests([RequestSample(scope, "a", 5.0, False), shadow_call, shadow_call])
    served = (await store.request_stats(scope, ["a"]))["a"]
    shadow = (await store.shadow_stats(scope, ["a"]))["a"]
    assert (served.request_count, served.error_count) == (1, 0)
    assert served.latency_p99_ms == pytest.approx(5.0, rel=RESOLUTION)
    assert (shadow.request_count, shadow.error_count) == (2, 2)
    assert shadow.latency_p50_ms == pytest.approx(500.0, rel=RESOLUTION)


async def test_scopes_are_separate(store, experiment):
    await store.add_requests([RequestSample(experiment_scope(experiment), "a", 5.0, False)])
    assert (await store.request_stats(f"canary:{experiment}", ["a"]))["a"] == RequestStats()


# ----- outcomes -----

async def test_an_event_id_counts_once(store, experiment):
    await store.add_exposures(exposed(experiment, "a", "u1"))
    assert await store.record_outcomes([outcome(experiment, "e1", "u1")], TTL) == [COUNTED]
    before = await store.counts(experiment, ["a"], "m", BINARY)
    assert await store.record_outcomes([outcome(experiment, "e1", "u1")], TTL) == [DUPLICATE]
    assert await store.counts(experiment, ["a"], "m", BINARY) == before == ({"a": Counts(1, 1)}, {"a": 1}, 0)


async def test_a_duplicate_within_one_batch_is_the_second_one(store, experiment):
    await store.add_exposures(exposed(experiment, "a", "u1", "u2"))
    events = [outcome(experiment, "e1", "u1", 2.0, kind=NUMERIC), outcome(experiment, "e2", "u2", kind=NUMERIC),
              outcome(experiment, "e1", "u1", 100.0, kind=NUMERIC)]
    assert await store.record_outcomes(events, TTL) == [COUNTED, COUNTED, DUPLICATE]
    counts, events_counted, _ = await store.counts(experiment, ["a"], "m", NUMERIC)
    assert counts["a"] == Counts(2, 0, 3.0, 5.0) and events_counted["a"] == 2


async def test_an_unexposed_user_is_not_counted_but_remembered(store, experiment):
    await store.add_exposures(exposed(experiment, "b", "u1"))  # exposed to b, not a
    assert await store.record_outcomes([outcome(experiment, "e1", "u1", variant="a"),
                                        outcome(experiment, "e2", "stranger", 3.0, kind=NUMERIC)], TTL) \
        == [NOT_COUNTED, NOT_COUNTED]
    await store.add_exposures(exposed(experiment, "a", "u1"))
    assert await store.record_outcomes([outcome(experiment, "e1", "u1", variant="a")], TTL) == [DUPLICATE]
    counts, events, _ = await store.counts(experiment, ["a", "b"], "m", BINARY)
    assert counts == {"a": Counts(1, 0), "b": Counts(1, 0)} and events == {"a": 0, "b": 0}


async def test_a_user_converts_at_most_once(store, experiment):
    await store.add_exposures(exposed(experiment, "a", "u1", "u2", "u3"))
    results = await store.record_outcomes([outcome(experiment, "e1", "u1"), outcome(experiment, "e2", "u1"),
                                           outcome(experiment, "e3", "u2", 0.0)], TTL)
    assert results == [COUNTED, COUNTED, COUNTED]
    counts, events, _ = await store.counts(experiment, ["a"], "m", BINARY)
    assert counts["a"] == Counts(3, 1)  # u2's 0.0 changes nothing but was received
    assert events["a"] == 3


async def test_metrics_and_variants_are_kept_apart(store, experiment):
    await store.add_exposures(exposed(experiment, "a", "u1") + exposed(experiment, "b", "u2"))
    await store.record_outcomes([outcome(experiment, "e1", "u1", metric="click"),
                                 outcome(experiment, "e2", "u2", 4.0, variant="b", metric="spend", kind=NUMERIC)], TTL)
    clicks, _, _ = await store.counts(experiment, ["a", "b"], "click", BINARY)
    spend, _, _ = await store.counts(experiment, ["a", "b"], "spend", NUMERIC)
    assert clicks == {"a": Counts(1, 1), "b": Counts(1, 0)}
    assert spend == {"a": Counts(1), "b": Counts(1, 0, 4.0, 16.0)}


async def test_numeric_sums_are_over_per_user_totals(store, experiment):
    rng = random.Random(11)
    users = [f"user-{i}" for i in range(50)]
    await store.add_exposures(exposed(experiment, "a", *users, "idle-1", "idle-2"))  # idle: no outcomes
    events = [outcome(experiment, f"e-{user}-{k}", user, rng.choice([rng.uniform(-10, 50), float(rng.randint(0, 9))]),
                      kind=NUMERIC)
              for user in users for k in range(rng.randint(1, 6))]
    rng.shuffle(events)
    totals: dict[str, float] = {}
    for event in events:  # the same additions, in the same order, as the store
        totals[event.user_id] = totals.get(event.user_id, 0.0) + event.value
    for start in range(0, len(events), 37):
        assert set(await store.record_outcomes(events[start:start + 37], TTL)) == {COUNTED}
    counts, counted, _ = await store.counts(experiment, ["a"], "m", NUMERIC)
    assert counts["a"].n == 52 and counted["a"] == len(events)
    assert counts["a"].sum == pytest.approx(sum(totals.values()), rel=1e-12, abs=1e-9)
    assert counts["a"].sum_sq == pytest.approx(sum(t * t for t in totals.values()), rel=1e-12, abs=1e-9)


async def test_a_numeric_value_that_is_not_finite_is_not_counted(store, experiment):
    await store.add_exposures(exposed(experiment, "a", "u1"))
    results = await store.record_outcomes([outcome(experiment, "e1", "u1", math.nan, kind=NUMERIC),
                                           outcome(experiment, "e2", "u1", 1e154, kind=NUMERIC),
                                           outcome(experiment, "e3", "u1", 1e154, kind=NUMERIC)], TTL)
    assert results == [NOT_COUNTED, COUNTED, NOT_COUNTED]  # the square of 2e154 overflows
    counts, events, _ = await store.counts(experiment, ["a"], "m", NUMERIC)
    assert (counts["a"].sum, counts["a"].sum_sq) == (pytest.approx(1e154), pytest.approx(1e308))
    assert events["a"] == 1
    assert await store.record_outcomes([outcome(experiment, "e1", "u1", 1.0, kind=NUMERIC)], TTL) == [DUPLICATE]


async def test_concurrent_batches_of_the_same_events_count_each_once(store, experiment):
    users = [f"u{i}" for i in range(200)]
    await store.add_exposures(exposed(experiment, "a", *users))
    events = [outcome(experiment, f"e{i}", user, 1.5, kind=NUMERIC) for i, user in enumerate(users)]
    batches = [random.Random(seed).sample(events, len(events)) for seed in range(8)]
    results = await asyncio.gather(*(store.record_outcomes(batch, TTL) for batch in batches))
    flat = [result for batch in results for result in batch]
    assert flat.count(COUNTED) == 200 and flat.count(DUPLICATE) == 7 * 200
    counts, counted, _ = await store.counts(experiment, ["a"], "m", NUMERIC)
    assert counts["a"] == Counts(200, 0, 300.0, 200 * 2.25) and counted["a"] == 200


async def test_a_flushed_script_cache_is_recovered_in_order(store, experiment):
    await store.add_exposures(exposed(experiment, "a", "u1", "u2"))
    store._outcome.sha = "0" * 40  # as if the cache lost the script: every EVALSHA is NOSCRIPT
    results = await store.record_outcomes([outcome(experiment, "e1", "u1"), outcome(experiment, "e2", "u2"),
                                           outcome(experiment, "e2", "u2"), outcome(experiment, "e3", "x")], TTL)
    assert results == [COUNTED, COUNTED, DUPLICATE, NOT_COUNTED]


async def test_a_batch_spanning_experiments_and_scopes_is_counted_as_on_one_redis(store):
    """On a cluster these experiments' keys lie on every node: plain commands go in one
    pipeline, the scripts per experiment in order."""
    names = [f"exp-{uuid.uuid4().hex[:8]}-{i}" for i in range(12)]
    await store.add_exposures([e for name in names for e in exposed(name, "a", "u1", "u2")])
    await store.add_requests([RequestSample(experiment_scope(name), "a", 5.0, i % 2 == 0)
                              for i, name in enumerate(names)])
    first = [outcome(name, "e1", "u1") for name in names]
    again = [outcome(name, "e1", "u1", 0.0) for name in names]  # the later copy is the duplicate
    strangers = [outcome(name, "e2", "stranger") for name in names]
    results = await store.record_outcomes([e for trio in zip(first, again, strangers) for e in trio], TTL)
    assert results == [COUNTED, DUPLICATE, NOT_COUNTED] * len(names)
    for i, name in enumerate(names):
        assert await store.counts(name, ["a"], "m", BINARY) == ({"a": Counts(2, 1)}, {"a": 1}, 0)
        stats = (await store.request_stats(experiment_scope(name), ["a"]))["a"]
        assert (stats.request_count, stats.error_count) == (1, int(i % 2 == 0))


def test_every_outcome_script_touches_one_slot(experiment):
    from redis.cluster import key_slot

    store = RedisMeasurements.from_url("redis://127.0.0.1:1/0", "p", 0.5)
    for kind in (BINARY, NUMERIC):
        keys, _ = store._outcome_call(outcome(experiment, "e:1", "u1", kind=kind, metric="a:b"), TTL)
        assert len({key_slot(key.encode()) for key in keys}) == 1


async def test_empty_batches_are_fine(store, experiment):
    assert await store.record_outcomes([], TTL) == []
    await store.add_requests([])


# ----- Redis down -----

async def test_every_method_is_store_unavailable_when_redis_is_down(experiment):
    down = RedisMeasurements.from_url("redis://127.0.0.1:1/0", "down", 0.5)
    calls = [
        down.add_exposures(exposed(experiment, "a", "u1")),
        down.add_requests([RequestSample(experiment_scope(experiment), "a", 1.0, False)]),
        down.record_outcomes([outcome(experiment, "e1", "u1")], TTL),
        down.counts(experiment, ["a"], "m", BINARY),
        down.request_stats(experiment_scope(experiment), ["a"]),
        down.shadow_stats(experiment_scope(experiment), ["a"]),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable):
            await call
    assert await down.ping() is False
    await down.close()
    await down.close()  # idempotent


async def test_ping_and_close(store):
    assert await store.ping() is True
    await store.close()
    await store.close()

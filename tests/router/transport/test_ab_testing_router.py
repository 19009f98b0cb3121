"""ABTestingRouter assigns locally, from the definitions it loads: the same answers as the server's
AssignVariant, ramps after a refresh, exposures reported in batches, the Production default.

The router is blocking: it runs in a worker thread (asyncio.to_thread), so the event loop that
hosts the in-process mesh keeps serving its calls."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import grpc
import pytest
from google.protobuf import field_mask_pb2

from mnbara.mlserving.router.v1 import router_pb2 as pb
from mnbara.mlserving.router.v1.error_reason_pb2 import ErrorReason
from ml_serving import ABTestingRouter, errors
from ml_serving_server.services.router.convert import definition_from_pb
from ml_serving_server.services.router.domain.assignment import AssignmentReason, assign, hash_user

from ...registry.conftest import unique_name
from .conftest import experiment

USERS = int(os.environ.get("AB_USERS", "8000"))
"""Users compared with the server: 100,000 AssignVariant calls take about 90 s on this 2-core machine
(64 in flight), 8,000 about 7 s; AB_USERS=100000 runs the full count."""
IN_FLIGHT = 64
PREMIUM = {"user_segments": ["premium"]}


@pytest.fixture
async def local_router(mesh, token):
    """make(**options): an ABTestingRouter on the mesh (no background refresh unless asked for);
    each is closed afterwards."""
    made: list[ABTestingRouter] = []

    def make(**options) -> ABTestingRouter:
        options.setdefault("refresh_seconds", 3600)
        made.append(ABTestingRouter(f"127.0.0.1:{mesh.port}", token=token, **options))
        return made[-1]

    yield make
    for router in made:
        await asyncio.to_thread(router.close)


async def _gather_limited(calls, limit: int = IN_FLIGHT) -> list:
    """Await the coroutine factories with at most `limit` in flight, results in order."""
    results: list = [None] * len(calls)
    position = iter(range(len(calls)))

    async def worker() -> None:
        for index in position:
            results[index] = await calls[index]()

    await asyncio.gather(*(worker() for _ in range(limit)))
    return results


def _context(index: int) -> dict:
    return PREMIUM if index % 2 == 0 else {}


async def test_local_answers_equal_the_servers_for_every_user(router, local_router, created, two_versions):
    running = await created(experiment(unique_name("agree"), two_versions, weights=(3000, 7000), holdout_bps=1500,
                                       targeting={"include_segments": ["premium"]}))
    users = [f"agree-{index}" for index in range(USERS)]

    async def server(index: int) -> pb.Assignment:
        segments = _context(index).get("user_segments", ())
        return (await router.assign_variant(users[index], segments=segments, model_name=two_versions,
                                            dry_run=True)).assignment

    started = time.perf_counter()
    remote = await _gather_limited([lambda index=index: server(index) for index in range(USERS)])
    server_seconds = time.perf_counter() - started
    ab = local_router()

    def local() -> list[tuple[str, str]]:
        return [ab.get_model_for_user(user, _context(index), model_name=two_versions, dry_run=True)
                for index, user in enumerate(users)]

    answers = await asyncio.to_thread(local)
    assert answers == [(got.model_name, got.model_version) for got in remote]
    entry = ab._snapshot.by_name[running.name]  # the variant and reason behind each version, as the server's
    for index, got in enumerate(remote[::2]):
        mine = entry.assign(users[2 * index], None, ["premium"], True)
        assert (mine.variant.name, mine.reason.value, mine.bucket) == (got.variant, got.reason, got.bucket)
    reasons = Counter(got.reason for got in remote)
    assert reasons[pb.ASSIGNMENT_REASON_DEFAULT] == USERS // 2  # not premium: the Production version
    assert reasons[pb.ASSIGNMENT_REASON_HOLDOUT] > 0 and reasons[pb.ASSIGNMENT_REASON_EXPERIMENT_BUCKET] > 0
    print(f"\n{USERS} AssignVariant calls, {IN_FLIGHT} in flight: {server_seconds:.1f} s")


async def test_an_attribute_named_like_the_segments_key_targets_as_on_the_server(router, local_router, created,
                                                                                  two_versions):
    rule = {"conditions": [{"attribute": "user_segments", "operator": "ATTRIBUTE_OPERATOR_EXISTS"},
                           {"attribute": "country", "operator": "ATTRIBUTE_OPERATOR_EQUALS",
                            "values": [{"string_value": "DE"}]}]}
    running = await created(experiment(unique_name("attr"), two_versions, targeting=rule))
    ab = local_router()
    contexts = [{"user_segments": ["premium"], "country": "DE"}, {"country": "DE"},
                {"segments": ["x"], "country": "DE"}, {"user_segments": ["a"], "segments": ["b"], "country": "DE"}]
    for index in range(60):
        context = contexts[index % len(contexts)]
        key = next(key for key in ("user_segments", "segments", "country") if key in context)
        segments = context[key] if key != "country" else ()
        attributes = {name: value for name, value in context.items() if name != key or key == "country"}
        got = (await router.assign_variant(f"attr-{index}", attributes=attributes, segments=segments,
                                           experiment=running.name, dry_run=True)).assignment
        assert got.reason == pb.ASSIGNMENT_REASON_NOT_TARGETED  # the server never sees "user_segments"
        mine = await asyncio.to_thread(ab.get_model_for_user, f"attr-{index}", context, experiment=running.name,
                                       dry_run=True)
        assert mine == (got.model_name, got.model_version)


async def test_a_ramp_shows_after_refresh_and_moves_exactly_the_released_buckets(router, local_router, created,
                                                                                  two_versions):
    before = await created(experiment(unique_name("ramp"), two_versions, weights=(9000, 1000)))
    ab = local_router()
    users = [f"ramp-{index}" for index in range(USERS)]

    def versions() -> list[str]:
        return [ab.get_model_for_user(user, model_name=two_versions, dry_run=True)[1] for user in users]

    old = await asyncio.to_thread(versions)
    fields = experiment(before.name, two_versions, weights=(8000, 2000))
    after = (await router.update_experiment(pb.UpdateExperimentRequest(
        experiment=pb.Experiment(**fields), update_mask=field_mask_pb2.FieldMask(paths=["variants"])))).experiment
    assert await asyncio.to_thread(versions) == old  # the snapshot until the next refresh
    await asyncio.to_thread(ab.refresh)
    new = await asyncio.to_thread(versions)

    def treatment_buckets(message: pb.Experiment) -> set[int]:
        return {b for r in message.variants[1].buckets for b in range(r.start, r.end)}

    moved_buckets = treatment_buckets(after) - treatment_buckets(before)
    assert len(moved_buckets) == 1000 and treatment_buckets(before) <= treatment_buckets(after)
    expected = {user for user in users if hash_user(before.salt, user)[0] in moved_buckets}
    changed = {user for user, was, now in zip(users, old, new) if was != now}
    assert changed == expected
    assert all((was, now) == ("1", "2") for was, now in zip(old, new) if was != now)
    assert abs(len(changed) / USERS - 0.1) < 0.02
    for user in users[:200]:  # and the server agrees with the ramped answers
        got = (await router.assign_variant(user, model_name=two_versions, dry_run=True)).assignment
        assert got.model_version == new[users.index(user)]


async def test_exposures_reach_the_server_split_as_assigned(router, local_router, created, two_versions):
    running = await created(experiment(unique_name("expose"), two_versions, holdout_bps=2000))
    definition = definition_from_pb(running)
    ab = local_router(exposure_flush_seconds=0.2)
    users = [f"expose-{index}" for index in range(3000)]

    def serve(batch: list[str]) -> None:
        for user in batch:
            ab.get_model_for_user(user, model_name=two_versions)
            ab.get_model_for_user(user, model_name=two_versions)  # a repeat counts once

    def split(batch: list[str]) -> Counter:
        return Counter("holdout" if chosen.reason is AssignmentReason.HOLDOUT else chosen.variant.name
                       for chosen in (assign(definition, user) for user in batch))

    async def counted() -> Counter:
        results = await router.get_experiment_results(running.name)
        return Counter({**{v.variant: v.exposures for v in results.variants}, "holdout": results.holdout_exposures})

    await asyncio.to_thread(serve, users[:2000])
    expected = split(users[:2000])
    deadline = time.monotonic() + 10
    while +await counted() != expected and time.monotonic() < deadline:  # the flush thread sends them
        await asyncio.sleep(0.1)
    assert +await counted() == expected
    await asyncio.to_thread(serve, users[2000:])
    await asyncio.to_thread(ab.close)  # sends what is left
    assert +await counted() == split(users) and set(split(users)) == {"control", "treatment", "holdout"}
    assert ab.exposures_dropped == 0


async def test_a_model_without_experiment_gets_its_production_version(local_router, two_versions):
    ab = local_router()
    assert await asyncio.to_thread(ab.get_model_for_user, "someone", model_name=two_versions) == (two_versions, "1")
    assert await asyncio.to_thread(ab.get_model_for_user, "other", model_name=two_versions) == (two_versions, "1")
    with pytest.raises(errors.NotFoundError) as caught:
        await asyncio.to_thread(ab.get_model_for_user, "someone", model_name=unique_name("nobody"))
    assert caught.value.reason == "MODEL_VERSION_NOT_FOUND"


async def test_without_model_and_matching_experiment_it_raises_not_found(local_router, two_versions):
    ab = local_router()
    # The shared database holds other sessions' running experiments: see only this model's.
    listed = ab._listed
    ab._listed = lambda timeout: (e for e in listed(timeout) if e.variants[0].model_name == two_versions)
    with pytest.raises(errors.NotFoundError) as caught:
        await asyncio.to_thread(ab.get_model_for_user, "someone", PREMIUM)
    error = caught.value
    assert (error.reason, error.domain) == ("NO_MATCHING_EXPERIMENT", "router.mlserving.mnbara")
    assert error.reason_of(ErrorReason) == ErrorReason.NO_MATCHING_EXPERIMENT


async def test_a_paused_experiment_gives_control_like_the_server(router, local_router, created, two_versions):
    paused = await created(experiment(unique_name("paused"), two_versions, weights=(0, 10000)), paused=True)
    ab = local_router()
    for index in range(50):
        user = f"paused-{index}"
        got = (await router.assign_variant(user, experiment=paused.name, dry_run=True)).assignment
        assert (got.variant, got.reason) == ("control", pb.ASSIGNMENT_REASON_EXPERIMENT_INACTIVE)
        assert await asyncio.to_thread(ab.get_model_for_user, user, experiment=paused.name) == (two_versions, "1")
        assert await asyncio.to_thread(ab.get_model_for_user, user, model_name=two_versions) == (two_versions, "1")
    await asyncio.to_thread(ab.close)
    results = await router.get_experiment_results(paused.name)
    assert sum(v.exposures for v in results.variants) == 0


async def test_an_experiment_not_loaded_yet_is_fetched_and_unknown_ones_are_not_found(router, local_router,
                                                                                      created, two_versions):
    ab = local_router()
    await asyncio.to_thread(ab.refresh)
    later = await created(experiment(unique_name("later"), two_versions, weights=(0, 10000)))
    assert await asyncio.to_thread(ab.get_model_for_user, "u", experiment=later.name) == (two_versions, "2")
    await router.stop_experiment(pb.StopExperimentRequest(name=later.name))
    await asyncio.to_thread(ab.refresh)  # no longer listed: fetched again, stopped, so control
    assert await asyncio.to_thread(ab.get_model_for_user, "u", experiment=later.name) == (two_versions, "1")
    with pytest.raises(errors.NotFoundError) as caught:
        await asyncio.to_thread(ab.get_model_for_user, "u", experiment=unique_name("missing"))
    assert caught.value.reason == "EXPERIMENT_NOT_FOUND"


async def test_a_failed_refresh_keeps_serving_the_loaded_definitions(local_router, created, two_versions, caplog):
    running = await created(experiment(unique_name("keep"), two_versions, weights=(0, 10000)))
    ab = local_router()
    assert await asyncio.to_thread(ab.get_model_for_user, "u", model_name=two_versions) == (two_versions, "2")
    loaded = ab._snapshot

    def unavailable(timeout):
        raise errors.UnavailableError(grpc.StatusCode.UNAVAILABLE, "the router is down")

    ab._listed = unavailable
    ab._threads[0].wake()  # the background refresh, now

    def warned() -> bool:
        return any("ab-router-refresh failed" in record.getMessage() for record in caplog.records)

    deadline = time.monotonic() + 10
    while not warned() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert warned() and ab._snapshot is loaded and running.name in loaded.by_name
    assert await asyncio.to_thread(ab.get_model_for_user, "v", model_name=two_versions) == (two_versions, "2")


async def test_a_full_exposure_buffer_drops_the_oldest_and_counts_them(router, local_router, created, two_versions):
    running = await created(experiment(unique_name("full"), two_versions, weights=(0, 10000)))
    ab = local_router(exposure_flush_seconds=3600, max_buffered_exposures=10)

    def serve() -> None:
        for index in range(50):
            ab.get_model_for_user(f"full-{index}", model_name=two_versions)

    await asyncio.to_thread(serve)
    await asyncio.to_thread(ab.close)
    assert ab.exposures_dropped == 40
    results = await router.get_experiment_results(running.name)
    assert {v.variant: v.exposures for v in results.variants} == {"control": 0, "treatment": 10}

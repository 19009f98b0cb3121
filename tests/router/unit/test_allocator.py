"""The allocation loop over the in-memory ports: when an adaptive experiment's weights move, what
its history records, and what holds them still (too early, too little data, paused, measurements
down, someone else's write first)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ml_serving_server.errors import InvalidArgument
from ml_serving_server.services.router.domain.allocation import Allocation, AllocationMode
from ml_serving_server.services.router.domain.assignment import Variant
from ml_serving_server.services.router.domain.model import (
    ChangeAction,
    ExperimentChange,
    ExperimentDraft,
    Exposure,
    OutcomeEvent,
)
from ml_serving_server.services.router.domain.service import ADAPTIVE_CAVEAT, RouterService
from ml_serving_server.services.router.domain.statistics import MetricKind

from .fakes import FakeServing, FixedClock, MemoryExperimentStore, MemoryMeasurements

BINARY = MetricKind.BINARY
ADAPTIVE = Allocation(AllocationMode.THOMPSON, floor_bps=1000, ceiling_bps=10_000, interval_s=60, min_exposures=100)


def adaptive_draft(name: str = "exp", allocation: Allocation = ADAPTIVE) -> ExperimentDraft:
    variants = (Variant("control", "fraud", "1", 5000, control=True), Variant("treatment", "fraud", "2", 5000))
    return ExperimentDraft(name=name, variants=variants, metrics=(("click", BINARY),), allocation=allocation)


@pytest.fixture
def store():
    return MemoryExperimentStore()


@pytest.fixture
def measurements():
    return MemoryMeasurements()


@pytest.fixture
def clock():
    return FixedClock()


def replica(store, measurements, clock, seed: int = 1) -> RouterService:
    serving = FakeServing()
    serving.add("fraud", "1", "PRODUCTION")
    serving.add("fraud", "2", "STAGING")
    # The loop's own ticks are an hour apart: each test ticks by hand.
    return RouterService(store, measurements, serving, tally_interval_s=3600, allocation_tick_s=3600, clock=clock,
                         allocation_rng=np.random.default_rng(seed))


@pytest.fixture
async def service(store, measurements, clock):
    service = replica(store, measurements, clock)
    await service.start()
    yield service
    await service.close()


async def observe(measurements: MemoryMeasurements, experiment: str, variant: str, users: int, converted: int):
    exposures = [Exposure(experiment, variant, f"{variant}-{i}") for i in range(users)]
    await measurements.add_exposures(exposures)
    await measurements.record_outcomes(
        [OutcomeEvent(experiment, f"{variant}-e{i}", f"{variant}-{i}", variant, "click", BINARY, 1.0, None)
         for i in range(converted)], dedupe_seconds=60)


async def test_weights_move_to_the_better_variant_once_the_interval_is_up(service, store, measurements, clock):
    created = await service.create_experiment(adaptive_draft(), paused=False, actor="alice")
    await observe(measurements, "exp", "control", 500, 50)
    await observe(measurements, "exp", "treatment", 500, 100)
    clock.advance(59)
    assert await service.allocator.tick() == []  # not yet

    clock.advance(1)
    [moved] = await service.allocator.tick()
    assert moved.definition.weights() == {"control": 1000, "treatment": 9000}
    assert (moved.revision, moved.reweight_time) == (created.revision + 1, clock.now)
    assert service.catalog.get("exp") == moved  # this replica serves the new weights at once
    [_, change] = await store.history("exp")
    assert (change.action, change.actor, change.fields) == (ChangeAction.REWEIGHTED, "router", ("variants",))
    assert [(f.variant, f.exposures, f.mean, f.weight_before_bps, f.weight_after_bps) for f in change.figures] == [
        ("control", 500, 0.1, 5000, 1000), ("treatment", 500, 0.2, 5000, 9000)]
    assert change.figures[1].probability_best > 0.99

    clock.advance(30)
    assert await service.allocator.tick() == []  # the next change waits a whole interval again


async def test_the_users_who_move_are_only_those_the_new_weights_imply(service, measurements, clock):
    before = await service.create_experiment(adaptive_draft(), paused=False, actor="alice")
    await observe(measurements, "exp", "control", 500, 50)
    await observe(measurements, "exp", "treatment", 500, 100)
    clock.advance(60)
    [after] = await service.allocator.tick()
    old, new = before.definition.assigner, after.definition.assigner
    moved = [u for u in (f"user-{i}" for i in range(20_000))
             if old.assign(u).variant_name != new.assign(u).variant_name]
    assert all(old.assign(u).variant_name == "control" for u in moved)  # treatment's users all stay
    assert abs(len(moved) / 20_000 - 0.4) < 0.02  # 40% of buckets went from control to treatment


async def test_too_little_data_holds_the_weights(service, store, measurements, clock):
    await service.create_experiment(adaptive_draft(), paused=False, actor="alice")
    await observe(measurements, "exp", "control", 500, 50)
    await observe(measurements, "exp", "treatment", 99, 90)
    clock.advance(3600)
    assert await service.allocator.tick() == []
    assert [c.action for c in await store.history("exp")] == [ChangeAction.CREATED]
    # One more user makes enough: the next look moves the weights.
    await measurements.add_exposures([Exposure("exp", "treatment", "treatment-99")])
    clock.advance(60)
    assert await service.allocator.tick() != []
    assert [c.action for c in await store.history("exp")] == [ChangeAction.CREATED, ChangeAction.REWEIGHTED]


async def test_a_paused_or_fixed_experiment_is_left_alone(service, store, measurements, clock):
    await service.create_experiment(adaptive_draft("paused"), paused=True, actor="alice")
    await service.create_experiment(dataclasses.replace(adaptive_draft("fixed"), allocation=Allocation()),
                                    paused=False, actor="alice")
    for name in ("paused", "fixed"):
        await observe(measurements, name, "control", 500, 10)
        await observe(measurements, name, "treatment", 500, 200)
    clock.advance(3600)
    assert await service.allocator.tick() == []
    for name in ("paused", "fixed"):
        assert [c.action for c in await store.history(name)] == [ChangeAction.CREATED]


async def test_measurements_down_holds_the_weights_and_the_next_look_moves_them(service, measurements, clock):
    await service.create_experiment(adaptive_draft(), paused=False, actor="alice")
    await observe(measurements, "exp", "control", 500, 50)
    await observe(measurements, "exp", "treatment", 500, 100)
    clock.advance(60)
    measurements.down = True
    assert await service.allocator.tick() == []
    measurements.down = False
    clock.advance(1)
    assert await service.allocator.tick() == []  # it looked this interval already
    clock.advance(60)
    assert len(await service.allocator.tick()) == 1


async def test_a_write_made_first_elsewhere_wins_and_the_loop_goes_on(service, store, measurements, clock):
    created = await service.create_experiment(adaptive_draft(), paused=False, actor="alice")
    await observe(measurements, "exp", "control", 500, 50)
    await observe(measurements, "exp", "treatment", 500, 100)
    # Another replica's write this replica's catalog has not seen yet.
    elsewhere = created.with_changes(description="changed elsewhere", revision=created.revision + 1)
    await store.replace(elsewhere, created.revision, ExperimentChange(
        "exp", elsewhere.revision, ChangeAction.UPDATED, "bob", clock.now, "", ("description",), elsewhere))
    clock.advance(60)
    assert await service.allocator.tick() == []
    assert (await store.get("exp")).description == "changed elsewhere"


async def test_two_replicas_move_the_weights_once_per_interval(store, measurements, clock):
    first, second = replica(store, measurements, clock, seed=1), replica(store, measurements, clock, seed=2)
    await first.start()
    await second.start()
    try:
        await first.create_experiment(adaptive_draft(), paused=False, actor="alice")
        await second.catalog.refresh()
        await observe(measurements, "exp", "control", 500, 50)
        await observe(measurements, "exp", "treatment", 500, 100)
        clock.advance(60)
        moved = await first.allocator.tick() + await second.allocator.tick()
        await second.catalog.refresh()
        moved += await second.allocator.tick()
        assert len(moved) == 1
        assert [c.action for c in await store.history("exp")] == [ChangeAction.CREATED, ChangeAction.REWEIGHTED]
    finally:
        await first.close()
        await second.close()


async def test_results_of_an_adaptive_experiment_skip_the_ratio_check_and_say_why(service, measurements, clock):
    await service.create_experiment(adaptive_draft(), paused=False, actor="alice")
    await observe(measurements, "exp", "control", 900, 90)
    await observe(measurements, "exp", "treatment", 100, 20)  # far from 50/50: not a mismatch here
    view = await service.results("exp", "", 0.95)
    assert view.results.sample_ratio is None and view.caveats == (ADAPTIVE_CAVEAT,)


async def test_switching_to_adaptive_is_an_update_checked_against_the_variants(service, store):
    await service.create_experiment(dataclasses.replace(adaptive_draft(), allocation=Allocation()), paused=False,
                                    actor="alice")
    with pytest.raises(InvalidArgument) as raised:
        await service.update_experiment(
            dataclasses.replace(adaptive_draft(), allocation=dataclasses.replace(ADAPTIVE, floor_bps=6000)),
            ["allocation"], "bob")
    assert raised.value.field == "experiment.allocation.floor_bps"
    updated = await service.update_experiment(adaptive_draft(), ["allocation"], "bob")
    assert updated.allocation == ADAPTIVE
    assert (await store.history("exp"))[-1].fields == ("allocation",)


async def test_history_pages_oldest_first(service):
    await service.create_experiment(adaptive_draft(), paused=False, actor="alice")
    await service.pause_experiment("exp", "look", "bob")
    await service.resume_experiment("exp", "", "bob")
    first, token = await service.history("exp", 2, "")
    rest, last = await service.history("exp", 2, token)
    assert [c.action for c in first + rest] == [ChangeAction.CREATED, ChangeAction.PAUSED, ChangeAction.RESUMED]
    assert token and not last
    with pytest.raises(InvalidArgument):
        await service.history("exp", 2, "not-a-token")

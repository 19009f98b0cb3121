"""Scheduled materialisation over in-memory ports: a view runs once per due time of its cron,
whichever of several replicas looks, catches up once after a pause, and a bad look never stops
the loop."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from ml_serving_server.services.pipeline.domain.materialization import Materializer
from ml_serving_server.services.pipeline.domain.scheduling import MaterializationScheduler, due_time
from ml_serving_server.services.pipeline.domain.schema import FeatureSchema

from ..fakes import T0, FakeOnline, FakeSource, FakeState, view


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def scheduled(name: str, cron: str):
    return dataclasses.replace(view(name), materialization_schedule=cron)


def replica(schema, source, state, clock):
    materializer = Materializer(schema, source, FakeOnline(), state, clock=clock)
    return MaterializationScheduler(schema, materializer, state, clock=clock), materializer


async def settle(materializer: Materializer) -> None:
    await asyncio.gather(*materializer._tasks)


@pytest.mark.parametrize("cron, now, due", [
    ("*/5 * * * *", datetime(2026, 1, 1, 0, 7, 3, tzinfo=timezone.utc), datetime(2026, 1, 1, 0, 5, tzinfo=timezone.utc)),
    ("*/5 * * * *", datetime(2026, 1, 1, 0, 5, 0, tzinfo=timezone.utc), datetime(2026, 1, 1, 0, 5, tzinfo=timezone.utc)),
    ("0 * * * *", datetime(2026, 1, 1, 0, 59, 59, tzinfo=timezone.utc), datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc)),
    ("30 2 * * 1", datetime(2026, 1, 7, 12, 0, tzinfo=timezone.utc), datetime(2026, 1, 5, 2, 30, tzinfo=timezone.utc)),
])
def test_the_due_time_is_the_latest_fire_time_not_after_now(cron, now, due):
    assert due_time(cron, now) == due


async def test_a_view_runs_once_per_due_time_and_unscheduled_views_never():
    schema = FeatureSchema((scheduled("every_five", "*/5 * * * *"), view("on_demand")))
    source, state, clock = FakeSource(), FakeState(), Clock(T0 + timedelta(minutes=1))
    scheduler, materializer = replica(schema, source, state, clock)
    assert [v.name for v in scheduler.views] == ["every_five"]
    assert [job.feature_view for job in await scheduler.tick()] == ["every_five"]  # due at T0, none since
    await settle(materializer)
    clock.now += timedelta(minutes=2)
    assert await scheduler.tick() == []  # still the T0 due time: done
    clock.now += timedelta(minutes=3)  # past T0 + 5 min
    assert len(await scheduler.tick()) == 1
    await settle(materializer)
    clock.now += timedelta(hours=2)  # a pause over many due times: one catch-up run
    assert len(await scheduler.tick()) == 1
    await settle(materializer)
    assert await scheduler.tick() == []
    assert [j.feature_view for j in state.jobs] == ["every_five"] * 3


async def test_replicas_looking_at_once_start_one_job_per_due_time():
    schema = FeatureSchema((scheduled("every_five", "*/5 * * * *"),))
    source, state, clock = FakeSource(), FakeState(), Clock(T0 + timedelta(minutes=1))
    replicas = [replica(schema, source, state, clock) for _ in range(4)]
    for _ in range(3):  # the same due time, looked at again and again
        started = await asyncio.gather(*(scheduler.tick() for scheduler, _ in replicas))
        await asyncio.gather(*(settle(materializer) for _, materializer in replicas))
    assert sum(len(jobs) for jobs in started) == 0 and len(state.jobs) == 1


async def test_a_state_store_down_holds_the_schedule_until_it_is_back():
    schema = FeatureSchema((scheduled("every_five", "*/5 * * * *"),))
    source, state, clock = FakeSource(), FakeState(), Clock(T0 + timedelta(minutes=1))
    scheduler, materializer = replica(schema, source, state, clock)
    state.down = True
    assert await scheduler.tick() == []  # logged, not raised
    state.down = False
    assert len(await scheduler.tick()) == 1
    await settle(materializer)


async def test_the_loop_runs_ticks_until_closed():
    schema = FeatureSchema((scheduled("every_five", "*/5 * * * *"),))
    source, state = FakeSource(), FakeState()
    materializer = Materializer(schema, source, FakeOnline(), state)
    scheduler = MaterializationScheduler(schema, materializer, state, tick_s=0.05)
    scheduler.start()
    try:
        for _ in range(100):
            if state.jobs:
                break
            await asyncio.sleep(0.02)
        assert len(state.jobs) == 1
    finally:
        await scheduler.close()
        await materializer.close()


async def test_a_job_since_the_due_time_found_under_the_lock_means_no_second_job():
    """What keeps two replicas from both running one due time: the look they both made before
    taking the view's lock is made again under it."""
    schema = FeatureSchema((scheduled("every_five", "*/5 * * * *"),))
    source, state, clock = FakeSource(), FakeState(), Clock(T0 + timedelta(minutes=1))
    _, materializer = replica(schema, source, state, clock)
    (first,) = await materializer.materialize(["every_five"], wait=True, unless_since=T0)
    assert first.state == "SUCCEEDED"
    assert await materializer.materialize(["every_five"], wait=True, unless_since=T0) == []
    assert state.locked == set() and len(state.jobs) == 1  # the lock was given back
    clock.now += timedelta(minutes=5)
    assert len(await materializer.materialize(["every_five"], wait=True, unless_since=T0 + timedelta(minutes=5))) == 1

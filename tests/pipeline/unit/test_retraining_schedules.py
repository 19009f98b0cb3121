"""Retraining schedules' rules, stores in memory: checked declarations, due times in a time zone,
a jitter every replica agrees on, one run per due time however many replicas tick, and one
catch-up run after a pause."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from ml_serving_server.errors import InvalidArgument, NotFound
from ml_serving_server.services.pipeline.domain.retraining import RunState, Trigger
from ml_serving_server.services.pipeline.domain.runs import RetrainingRuns
from ml_serving_server.services.pipeline.domain.schedules import RetrainingSchedules, jitter, next_due

from ..fakes import FakeRunStore, FakeScheduleStore
from .test_retraining import Clock, Trainer

NOON = datetime(2026, 3, 28, 12, 0, tzinfo=timezone.utc)


def make(clock=None):
    clock = clock or Clock()
    clock.now = NOON
    run_store, schedule_store = FakeRunStore(), FakeScheduleStore()
    runs = RetrainingRuns(run_store, {"rec": Trainer()}, max_attempts=2, worker_lost_after=timedelta(seconds=10),
                          clock=clock)

    def replica():  # another pipeline server over the same stores
        return RetrainingSchedules(schedule_store, runs, clock=clock)

    return replica(), replica, run_store, clock


async def test_a_schedule_is_stored_with_its_next_run_time():
    schedules, _, _, _ = make()
    created = await schedules.create(model_name="rec", cron="0 3 * * *", parameters={"epochs": 2}, reason="nightly",
                                     created_by="alice")
    assert created.next_run_time == datetime(2026, 3, 29, 3, 0, tzinfo=timezone.utc)
    assert created.parameters == {"epochs": 2} and created.enabled and created.created_by == "alice"
    assert await schedules.get(created.schedule_id) == created


async def test_due_times_follow_the_schedules_time_zone_across_a_daylight_saving_change():
    paris = ZoneInfo("Europe/Paris")  # clocks go forward on 2026-03-29 at 02:00
    before = next_due("0 3 * * *", paris, NOON)
    after = next_due("0 3 * * *", paris, before)
    assert before == datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc)  # 03:00 CEST
    assert after - before == timedelta(hours=24)
    assert next_due("0 3 * * *", ZoneInfo("UTC"), NOON) == datetime(2026, 3, 29, 3, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("fields, field, reason", [
    ({"cron": ""}, "schedule.cron", "INVALID_CRON"),
    ({"cron": "every day"}, "schedule.cron", "INVALID_CRON"),
    ({"cron": "0 3 * * * *"}, "schedule.cron", "INVALID_CRON"),
    ({"cron": "61 3 * * *"}, "schedule.cron", "INVALID_CRON"),
    ({"time_zone": "Mars/Olympus"}, "schedule.time_zone", "INVALID_TIME_ZONE"),
    ({"jitter_seconds": 3601}, "schedule.jitter_seconds", "INVALID_FIELD"),
    ({"model_name": ""}, "schedule.model_name", "INVALID_FIELD"),
    ({"parameters": {"epochs": 99}}, "schedule.parameters.epochs", "INVALID_FIELD"),
])
async def test_a_bad_schedule_names_its_field(fields, field, reason):
    schedules, _, _, _ = make()
    with pytest.raises(InvalidArgument) as caught:
        await schedules.create(**{"model_name": "rec", "cron": "0 3 * * *", **fields})
    assert (caught.value.field, caught.value.reason.name) == (field, reason)


async def test_a_model_without_a_trainer_cannot_be_scheduled():
    schedules, _, _, _ = make()
    with pytest.raises(NotFound) as caught:
        await schedules.create(model_name="unknown", cron="0 3 * * *")
    assert caught.value.reason.name == "NO_TRAINER_FOR_MODEL"


async def test_each_due_time_queues_one_run_however_many_replicas_tick():
    first, replica, run_store, clock = make()
    created = await first.create(model_name="rec", cron="*/10 * * * *", reason="often")
    assert await first.tick() == 0  # not due yet
    clock.now = created.next_run_time
    second = replica()
    assert await first.tick() + await second.tick() == 1
    [run] = run_store.runs.values()
    assert (run.trigger, run.schedule_id, run.reason, run.state) == (
        Trigger.SCHEDULE, created.schedule_id, "often", RunState.QUEUED)
    moved = await first.get(created.schedule_id)
    assert moved.last_run_time == created.next_run_time and moved.last_run_id == run.run_id
    assert moved.next_run_time == created.next_run_time + timedelta(minutes=10)


async def test_replicas_that_both_see_a_due_schedule_queue_one_run():
    first, replica, run_store, clock = make()
    created = await first.create(model_name="rec", cron="*/10 * * * *")
    clock.now = created.next_run_time
    due_to_both = await first._store.due(clock.now)
    second = replica()
    for schedules in (first, second):  # both read it as due before either moved it on
        for schedule in due_to_both:
            await schedules._fire(schedule, clock.now)
    assert len(run_store.runs) == 1


async def test_a_pause_is_caught_up_with_one_run():
    schedules, _, run_store, clock = make()
    created = await schedules.create(model_name="rec", cron="*/10 * * * *")
    clock.now = created.next_run_time + timedelta(hours=5, minutes=3)
    assert await schedules.tick() == 1
    assert await schedules.tick() == 0
    moved = await schedules.get(created.schedule_id)
    assert moved.next_run_time == created.next_run_time + timedelta(hours=5, minutes=10)
    # It stands for the first due time missed: what the stored schedule says, so every replica agrees
    # (a "latest due time" would differ between replicas ticking either side of a due time).
    assert moved.last_run_time == created.next_run_time


async def test_jitter_delays_within_its_bound_and_every_replica_agrees():
    due = datetime(2026, 3, 29, 3, 0, tzinfo=timezone.utc)
    delays = {jitter(f"s{i}", due, 600) for i in range(50)}
    assert all(timedelta(0) <= d <= timedelta(seconds=600) for d in delays) and len(delays) > 10
    assert jitter("s1", due, 600) == jitter("s1", due, 600) and jitter("s1", due, 0) == timedelta(0)
    schedules, _, run_store, clock = make()
    created = await schedules.create(model_name="rec", cron="0 3 * * *", jitter_seconds=600)
    plain_due = datetime(2026, 3, 29, 3, 0, tzinfo=timezone.utc)
    assert created.next_run_time == plain_due + jitter(created.schedule_id, plain_due, 600)
    clock.now = created.next_run_time
    assert await schedules.tick() == 1
    [run] = run_store.runs.values()
    assert run.idempotency_key.endswith(plain_due.isoformat())  # the due time, not the jittered one


async def test_a_disabled_schedule_triggers_nothing_and_a_deleted_one_is_gone():
    schedules, _, run_store, clock = make()
    off = await schedules.create(model_name="rec", cron="* * * * *", enabled=False)
    clock.now += timedelta(hours=1)
    assert await schedules.tick() == 0 and not run_store.runs
    await schedules.delete(off.schedule_id)
    with pytest.raises(NotFound):
        await schedules.get(off.schedule_id)
    with pytest.raises(NotFound):
        await schedules.delete(off.schedule_id)
    with pytest.raises(InvalidArgument, match="schedule_id"):
        await schedules.get("not-a-uuid")


async def test_schedules_are_listed_page_by_page():
    schedules, _, _, _ = make()
    ids = [(await schedules.create(model_name="rec", cron="0 3 * * *")).schedule_id for _ in range(5)]
    seen, token = [], ""
    while True:
        page, token = await schedules.list(page_size=2, page_token=token)
        seen += [s.schedule_id for s in page]
        if not token:
            break
    assert seen == ids

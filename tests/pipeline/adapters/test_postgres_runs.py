"""The retraining run store over a real PostgreSQL: the queue (claims never doubled, even when
many workers claim at once), the fence of a worker's writes, the sweep, idempotency, the one
alert run per model, listing and cancels. A database of its own: the session mesh's sweeper
must not act on these runs."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from ml_serving_server.services.pipeline.domain.retraining import (
    Attempt,
    Heartbeat,
    Run,
    RunError,
    RunState,
    Trigger,
)
from ml_serving_server.services.pipeline.domain.schedules import Schedule
from ml_serving_server.services.pipeline.postgres_runs import PostgresRunStore, PostgresScheduleStore
from ml_serving_server.services.pipeline.domain.ports import StateStoreUnavailable

from ...support import private_database

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def runs_database(postgres_server):
    with private_database(postgres_server) as url:
        yield url


@pytest.fixture
async def store(runs_database):
    store = await PostgresRunStore.connect(runs_database)
    await store._pool.execute("TRUNCATE pipeline_retraining_runs")
    yield store
    await store.close()


def new_run(model="rec", *, key="", trigger=Trigger.MANUAL, max_attempts=2, at=T0) -> Run:
    return Run(run_id=str(uuid.uuid4()), model_name=model, state=RunState.QUEUED, trigger=trigger, create_time=at,
               reason="test", parameters={"epochs": 2, "hidden": [8]}, idempotency_key=key, max_attempts=max_attempts)


async def test_a_run_is_stored_as_given_and_read_back(store):
    run = new_run(key="k")
    stored, duplicate = await store.create(run)
    assert not duplicate and stored == await store.get(run.run_id)
    assert stored.parameters == {"epochs": 2, "hidden": [8]} and stored.state is RunState.QUEUED
    assert await store.get(str(uuid.uuid4())) is None


async def test_idempotency_keys_are_per_model_and_alert_runs_one_at_a_time(store):
    first, _ = await store.create(new_run(key="k"))
    again, duplicate = await store.create(new_run(key="k"))
    assert duplicate and again.run_id == first.run_id
    _, duplicate = await store.create(new_run("other", key="k"))
    assert not duplicate
    alert, _ = await store.create(new_run(trigger=Trigger.ALERT))
    second, duplicate = await store.create(new_run(trigger=Trigger.ALERT))
    assert duplicate and second.run_id == alert.run_id
    claimed = [await store.claim("w", T0) for _ in range(3)]  # k, other's k, the alert's
    attempt = next(Attempt(r.run_id, "w", r.attempt) for r in claimed if r.run_id == alert.run_id)
    assert await store.finish(attempt, T0, RunState.SUCCEEDED)
    _, duplicate = await store.create(new_run(trigger=Trigger.ALERT))
    assert not duplicate  # the alert's run has ended: a new one may be queued


async def test_many_workers_claiming_at_once_never_take_one_run_twice(store):
    for i in range(20):
        await store.create(new_run(at=T0 + timedelta(seconds=i)))

    async def worker(name):
        taken = []
        while (run := await store.claim(name, T0)) is not None:
            taken.append(run.run_id)
        return taken

    results = await asyncio.gather(*(worker(f"w{i}") for i in range(6)))
    everything = [run_id for taken in results for run_id in taken]
    assert len(everything) == 20 and len(set(everything)) == 20


async def test_claims_take_the_oldest_first_and_start_an_attempt(store):
    older, _ = await store.create(new_run())
    await store.create(new_run())
    claimed = await store.claim("w1", T0 + timedelta(seconds=5))
    assert claimed.run_id == older.run_id and claimed.state is RunState.RUNNING
    assert (claimed.attempt, claimed.worker_id, claimed.heartbeat_time) == (1, "w1", T0 + timedelta(seconds=5))


async def test_writes_are_fenced_by_worker_and_attempt(store):
    run, _ = await store.create(new_run())
    claimed = await store.claim("w1", T0)
    mine, stale = Attempt(run.run_id, "w1", claimed.attempt), Attempt(run.run_id, "w1", claimed.attempt + 1)
    assert await store.heartbeat(mine, T0 + timedelta(seconds=1), 0.5, "training") is Heartbeat.OWNED
    assert await store.heartbeat(stale, T0, 0.9, "x") is Heartbeat.LOST
    assert await store.heartbeat(Attempt(run.run_id, "w2", claimed.attempt), T0, 0.9, "x") is Heartbeat.LOST
    current = await store.get(run.run_id)
    assert (current.progress, current.stage) == (0.5, "training")
    await store.cancel(run.run_id, T0)
    assert await store.heartbeat(mine, T0, 0.6, "training") is Heartbeat.CANCEL
    # A retryable failure of a run whose cancel was asked ends it cancelled, not queued again.
    assert await store.requeue(mine, T0 + timedelta(seconds=2), RunError("X", "y")) is RunState.CANCELLED
    assert not await store.finish(mine, T0, RunState.SUCCEEDED)  # ended: nothing more
    assert await store.requeue(mine, T0, RunError("X", "y")) is None
    ended = await store.get(run.run_id)
    assert (ended.state, ended.end_time, ended.error) == (RunState.CANCELLED, T0 + timedelta(seconds=2), None)


async def test_a_cancelled_attempt_finishes_cancelled(store):
    run, _ = await store.create(new_run())
    claimed = await store.claim("w1", T0)
    mine = Attempt(run.run_id, "w1", claimed.attempt)
    await store.cancel(run.run_id, T0)
    assert await store.finish(mine, T0 + timedelta(seconds=2), RunState.CANCELLED)
    assert (await store.get(run.run_id)).state is RunState.CANCELLED


async def test_a_finished_run_keeps_its_outcome(store):
    run, _ = await store.create(new_run())
    claimed = await store.claim("w1", T0)
    attempt = Attempt(run.run_id, "w1", claimed.attempt)
    assert await store.finish(attempt, T0 + timedelta(minutes=1), RunState.SUCCEEDED, metrics={"auc": 0.71},
                              mlflow_run_id="abc", registered_version="7")
    done = await store.get(run.run_id)
    assert (done.state, done.metrics, done.mlflow_run_id, done.registered_version, done.progress) == \
        (RunState.SUCCEEDED, {"auc": 0.71}, "abc", "7", 1.0)
    assert done.end_time == T0 + timedelta(minutes=1) and done.error is None


async def test_a_requeued_run_shows_why_until_it_is_claimed_again_as_a_new_attempt(store):
    run, _ = await store.create(new_run())
    first = await store.claim("w1", T0)
    assert await store.requeue(Attempt(run.run_id, "w1", first.attempt), T0,
                               RunError("MLFLOW_UNAVAILABLE", "down", "UNAVAILABLE")) is RunState.QUEUED
    queued = await store.get(run.run_id)
    assert queued.state is RunState.QUEUED and queued.error == RunError("MLFLOW_UNAVAILABLE", "down", "UNAVAILABLE")
    second = await store.claim("w2", T0)
    assert (second.attempt, second.worker_id, second.error) == (2, "w2", None)


async def test_the_sweep_takes_back_runs_of_lost_workers(store):
    retried, _ = await store.create(new_run(max_attempts=2))
    spent, _ = await store.create(new_run(max_attempts=1))
    cancelled, _ = await store.create(new_run(max_attempts=2))
    alive, _ = await store.create(new_run(max_attempts=2))
    for _ in range(3):
        await store.claim("dead", T0)
    fresh = await store.claim("alive", T0 + timedelta(seconds=30))
    await store.cancel(cancelled.run_id, T0)
    swept = {run.run_id: run for run in await store.sweep(T0 + timedelta(seconds=10), T0 + timedelta(seconds=40))}
    assert set(swept) == {retried.run_id, spent.run_id, cancelled.run_id}
    assert swept[retried.run_id].state is RunState.QUEUED and swept[retried.run_id].error.reason == "WORKER_LOST"
    assert swept[spent.run_id].state is RunState.FAILED and swept[spent.run_id].end_time is not None
    assert swept[spent.run_id].error.code == "UNAVAILABLE" and "dead" in swept[spent.run_id].error.message
    assert swept[cancelled.run_id].state is RunState.CANCELLED and swept[cancelled.run_id].error is None
    assert (await store.get(fresh.run_id)).state is RunState.RUNNING and fresh.run_id == alive.run_id


async def test_listing_filters_and_pages_newest_first(store):
    ids = [(await store.create(new_run("a" if i % 2 else "b")))[0].run_id for i in range(7)]
    await store.claim("w", T0)  # the oldest ("b")
    page, after = await store.list(model_name="", states=[], limit=3, after_seq=0)
    assert [r.run_id for r in page] == ids[::-1][:3] and after is not None
    rest, end = await store.list(model_name="", states=[], limit=10, after_seq=after)
    assert [r.run_id for r in rest] == ids[::-1][3:] and end is None
    only_a, _ = await store.list(model_name="a", states=[], limit=10, after_seq=0)
    assert [r.run_id for r in only_a] == [i for n, i in enumerate(ids) if n % 2][::-1]
    running, _ = await store.list(model_name="", states=[RunState.RUNNING], limit=10, after_seq=0)
    assert [r.run_id for r in running] == [ids[0]]


async def test_cancel_moves_a_queued_run_to_cancelled_and_leaves_an_ended_one(store):
    run, _ = await store.create(new_run())
    cancelled = await store.cancel(run.run_id, T0 + timedelta(seconds=3))
    assert cancelled.state is RunState.CANCELLED and cancelled.end_time == T0 + timedelta(seconds=3)
    assert await store.claim("w", T0) is None
    assert await store.cancel(str(uuid.uuid4()), T0) is None


async def test_an_unreachable_database_is_state_store_unavailable():
    with pytest.raises(StateStoreUnavailable):
        await PostgresRunStore.connect("postgresql://postgres@127.0.0.1:1/none", timeout_seconds=1)


# ----- schedules -----

def new_schedule(model="rec", *, enabled=True, next_at=T0) -> Schedule:
    return Schedule(schedule_id=str(uuid.uuid4()), model_name=model, cron="0 3 * * *", time_zone="Europe/Paris",
                    create_time=T0, next_run_time=next_at, parameters={"epochs": 3}, reason="nightly",
                    enabled=enabled, jitter_seconds=60, created_by="alice")


@pytest.fixture
async def schedules(store):
    await store._pool.execute("TRUNCATE pipeline_retraining_schedules")
    return PostgresScheduleStore(store._pool)


async def test_a_schedule_is_stored_listed_and_deleted(schedules):
    created = [new_schedule("a" if i % 2 else "b") for i in range(5)]
    for schedule in created:
        await schedules.create(schedule)
    assert await schedules.get(created[0].schedule_id) == created[0]
    page, after = await schedules.list(model_name="", limit=3, after_seq=0)
    rest, end = await schedules.list(model_name="", limit=3, after_seq=after)
    assert [s.schedule_id for s in page + rest] == [s.schedule_id for s in created] and end is None
    only_a, _ = await schedules.list(model_name="a", limit=10, after_seq=0)
    assert [s.schedule_id for s in only_a] == [s.schedule_id for i, s in enumerate(created) if i % 2]
    assert await schedules.delete(created[0].schedule_id) and not await schedules.delete(created[0].schedule_id)
    assert await schedules.get(created[0].schedule_id) is None


async def test_due_schedules_are_enabled_ones_past_their_time_and_advance_once(schedules):
    due = new_schedule(next_at=T0)
    later = new_schedule(next_at=T0 + timedelta(hours=1))
    off = new_schedule(enabled=False, next_at=T0)
    for schedule in (due, later, off):
        await schedules.create(schedule)
    assert [s.schedule_id for s in await schedules.due(T0 + timedelta(minutes=1))] == [due.schedule_id]
    following = T0 + timedelta(days=1)
    assert await schedules.advance(due, last_run_time=T0, last_run_id="r1", next_run_time=following)
    assert not await schedules.advance(due, last_run_time=T0, last_run_id="r2", next_run_time=following)  # moved
    moved = await schedules.get(due.schedule_id)
    assert (moved.last_run_time, moved.last_run_id, moved.next_run_time) == (T0, "r1", following)

"""PostgresExperimentStore as the CanaryStore, over a real PostgreSQL: the JSON round trip,
request-id dedupe, one active canary or running experiment per model (across replicas and
both tables), compare-and-set with the event trail, the store's step clock, list pages, the
change feed, notifications, and leases.

Tests share the database with other tests and runs: every test uses canary ids, request ids,
model names and lease holders of its own (uuid), and reads lists filtered by model."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from ml_serving_server.services.router.domain.canary import (
    ACTIVE_STATES,
    Canary,
    CanaryEvent,
    CanaryEventType,
    CanaryState,
    SideStats,
    Thresholds,
)
from ml_serving_server.services.router.domain.model import ChangeAction, ExperimentState
from ml_serving_server.services.router.domain.ports import ModelBusy
from ml_serving_server.services.router.postgres_store import (
    ACTIVE_SQL,
    PostgresExperimentStore,
    _dump_canary,
    _dump_event,
    _load_canary,
    _load_event,
)

from .conftest import TIMEOUT, change, experiment, now, unique

pytestmark = pytest.mark.timeout(60)

RUNNING, PAUSED, AWAITING = CanaryState.RUNNING, CanaryState.PAUSED, CanaryState.AWAITING_PROMOTION
PROMOTED, ROLLED_BACK = CanaryState.PROMOTED, CanaryState.ROLLED_BACK
STARTED = CanaryEventType.STARTED


def canary(model: str, *, request_id: str = "", state: CanaryState = RUNNING) -> Canary:
    return Canary(unique("canary"), model, "1", "2", (100, 1000, 5000), 60.0, 100, Thresholds(0.01, 2.0),
                  salt=unique("salt"), state=state, created_by="alice", request_id=request_id)


def full_canary(model: str) -> Canary:
    """Every field away from its default (store-set times aside)."""
    at = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
    return Canary(unique("canary"), model, "3", "4", (250, 2500, 10_000), 90.5, 250, Thresholds(0.025, 1.5),
                  salt="s4lt", manual_promotion=True, state=AWAITING, current_step=2, step_start_time=at,
                  rollback_reason="too many errors", status_message="waiting for PromoteCanary", created_by="alice",
                  request_id=unique("request"), revision=3, end_time=at + timedelta(hours=1))


def event(c: Canary, event_type: CanaryEventType = STARTED, *, to_bps: int = 100, reason: str = "",
          at: datetime | None = None) -> CanaryEvent:
    return CanaryEvent(c.canary_id, event_type, at or now(), 0, to_bps, c.current_step, reason, "alice")


def full_event(canary_id: str) -> CanaryEvent:
    return CanaryEvent(canary_id, CanaryEventType.ROLLED_BACK, datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc),
                       1000, 0, 1, "error rate", "bob", True, SideStats(1000, 5, 12.5), SideStats(100, 9, 40.25), 4)


async def create(store: PostgresExperimentStore, c: Canary) -> Canary:
    stored, created = await store.create_canary(c, event(c))
    assert created
    return stored


async def replace(store: PostgresExperimentStore, current: Canary, *events_of: CanaryEventType,
                  **changes) -> Canary | None:
    changed = current.with_changes(revision=current.revision + 1, **changes)
    return await store.replace_canary(changed, current.revision, [event(changed, t) for t in events_of])


async def finish(store: PostgresExperimentStore, current: Canary, state: CanaryState = ROLLED_BACK) -> Canary:
    kind = CanaryEventType.PROMOTED if state is PROMOTED else CanaryEventType.ROLLED_BACK
    finished = await replace(store, current, kind, state=state, end_time=now())
    assert finished is not None and finished.state is state
    return finished


async def lease_rows(store: PostgresExperimentStore, canary_id: str) -> int:
    return await store._fetchval("SELECT count(*) FROM router_canary_leases WHERE canary_id = $1", canary_id)


# ----- serialisation -----------------------------------------------------------------------

def test_the_full_canary_and_event_set_every_field():
    """Guards the round-trip tests: a field added to the model must be set in full_* too."""
    c, e = full_canary("m"), full_event("c")
    for obj in (c, c.thresholds, e, e.stable_stats):
        for f in dataclasses.fields(obj):
            if f.name in ("create_time", "update_time"):  # set by the store
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            assert getattr(obj, f.name) != default, f"{type(obj).__name__}.{f.name} is left at its default"


def test_json_round_trips_every_field():
    c = full_canary("m").with_changes(create_time=now(), update_time=now())
    data = json.loads(json.dumps(_dump_canary(c), allow_nan=False))
    assert _load_canary(data) == c
    assert data["state"] == "AWAITING_PROMOTION" and data["steps_bps"] == [250, 2500, 10_000]
    assert data["thresholds"] == {"max_error_rate_increase": 0.025, "max_p99_latency_ratio": 1.5}
    assert data["step_start_time"] == "2024-05-06T07:08:09.123456+00:00"
    small = canary("m")
    assert _load_canary(json.loads(json.dumps(_dump_canary(small)))) == small

    e = full_event("c")
    data = json.loads(json.dumps(_dump_event(e), allow_nan=False))
    assert _load_event(data) == e
    assert data["event_type"] == "ROLLED_BACK" and data["time"] == "2024-01-02T03:04:05.000006+00:00"
    assert data["canary_stats"] == {"request_count": 100, "error_count": 9, "latency_p99_ms": 40.25}


def test_times_in_other_zones_are_stored_in_utc():
    paris = timezone(timedelta(hours=2))
    c = canary("m").with_changes(end_time=datetime(2024, 1, 1, 12, 0, tzinfo=paris))
    data = _dump_canary(c)
    assert data["end_time"] == "2024-01-01T10:00:00+00:00"
    back = _load_canary(json.loads(json.dumps(data)))
    assert back.end_time == c.end_time and back.end_time.tzinfo == timezone.utc


def test_the_sql_list_of_active_states_is_the_domains():
    assert set(ACTIVE_SQL.strip("()").replace("'", "").split(", ")) == {s.name for s in ACTIVE_STATES}


# ----- create and get ------------------------------------------------------------------------

async def test_create_and_get_round_trip_every_field_with_the_started_event(store, replica):
    full = full_canary(unique("model"))
    started = CanaryEvent(full.canary_id, STARTED, datetime(2024, 1, 1, 12, tzinfo=timezone.utc), 0, 250, 0,
                          "launch", "alice", False, SideStats(3, 1, 2.5), SideStats(4, 0, 1.0))
    stored, created = await store.create_canary(full, started)
    assert created
    assert stored == full.with_changes(revision=1, create_time=stored.create_time, update_time=stored.create_time,
                                       step_start_time=stored.create_time)  # the store's times, one clock reading
    assert stored.create_time.tzinfo == timezone.utc and abs(stored.create_time - now()) < timedelta(minutes=1)
    assert await store.get_canary(full.canary_id) == stored
    assert await replica.get_canary(full.canary_id) == stored
    assert await store.get_canary(unique("nothing")) is None
    assert await replica.canary_events(full.canary_id) == [dataclasses.replace(started, sequence=1)]
    assert await store.canary_events(unique("nothing")) == []


async def test_a_request_id_already_used_returns_its_canary_and_writes_nothing(store, replica):
    model = unique("model")
    request_id = unique("request")
    first = await create(store, canary(model, request_id=request_id))
    retry = canary(model, request_id=request_id)  # the same request again: a new id, the model now busy
    again, created = await replica.create_canary(retry, event(retry))
    assert (again, created) == (first, False)
    assert await store.get_canary(retry.canary_id) is None
    assert len(await store.canary_events(first.canary_id)) == 1
    finished = await finish(store, first)  # finished or not, the request id still names it
    assert await store.create_canary(retry, event(retry)) == (finished, False)
    # no request id: no dedupe
    a, b = await create(store, canary(unique("model"))), await create(replica, canary(unique("model")))
    assert a.request_id == b.request_id == ""


# ----- one active canary or running experiment per model ----------------------------------

async def test_a_model_has_at_most_one_active_canary(store, replica):
    model = unique("model")
    first = await create(store, canary(model))
    for state in (RUNNING, PAUSED, AWAITING):
        if first.state is not state:
            first = await replace(store, first, state=state)
        with pytest.raises(ModelBusy) as busy:
            await create(replica, canary(model))
        assert (busy.value.holder, busy.value.kind) == (first.canary_id, "canary")
    await create(replica, canary(unique("model")))  # another model: fine
    assert len(await store.list_canaries(model_name=model)) == 1


async def test_a_finished_canary_no_longer_holds_its_model(store, replica):
    for end in (ROLLED_BACK, PROMOTED):
        model = unique("model")
        finished = await finish(store, await create(store, canary(model)), end)
        second = await create(replica, canary(model))
        await finish(replica, second, end)
        running = await store.create(experiment(model), change(experiment(model)))
        assert running.state is ExperimentState.RUNNING
        assert finished.end_time is not None


async def test_a_running_experiment_blocks_a_canary_and_an_active_canary_blocks_an_experiment(store, replica):
    model = unique("model")
    e = experiment(model)
    running = await store.create(e, change(e))
    with pytest.raises(ModelBusy) as busy:
        await replica.create_canary(canary(model), event(canary(model)))
    assert (busy.value.holder, busy.value.kind) == (running.name, "experiment")
    assert await store.list_canaries(model_name=model) == []

    paused = running.with_changes(revision=2, state=ExperimentState.PAUSED)
    assert await store.replace(paused, 1, change(paused, ChangeAction.PAUSED)) is not None
    active = await create(replica, canary(model))  # a paused experiment does not hold the model

    e2 = experiment(model)
    with pytest.raises(ModelBusy) as busy:  # create a running one
        await store.create(e2, change(e2))
    assert (busy.value.holder, busy.value.kind) == (active.canary_id, "canary")
    assert await store.get(e2.name) is None
    resumed = paused.with_changes(revision=3, state=ExperimentState.RUNNING)
    with pytest.raises(ModelBusy) as busy:  # resume the paused one
        await replica.replace(resumed, 2, change(resumed, ChangeAction.RESUMED))
    assert (busy.value.holder, busy.value.kind) == (active.canary_id, "canary")
    assert (await store.get(running.name)).revision == 2 and len(await store.history(running.name)) == 2
    e3 = experiment(model, state=ExperimentState.PAUSED)
    assert (await store.create(e3, change(e3))).state is ExperimentState.PAUSED  # not running: fine

    await finish(store, active, PROMOTED)
    assert (await replica.replace(resumed, 2, change(resumed, ChangeAction.RESUMED))).state is \
        ExperimentState.RUNNING


async def test_concurrent_canaries_on_one_model_let_exactly_one_win(store, replica):
    for contenders in (5, 5, 2):
        model = unique("model")
        candidates = [canary(model) for _ in range(contenders)]
        results = await asyncio.gather(*((store, replica)[i % 2].create_canary(c, event(c))
                                         for i, c in enumerate(candidates)), return_exceptions=True)
        won = [r[0] for r in results if isinstance(r, tuple)]
        lost = [r for r in results if not isinstance(r, tuple)]
        assert len(won) == 1, results
        assert all(isinstance(r, ModelBusy) and (r.holder, r.kind) == (won[0].canary_id, "canary")
                   for r in lost), results
        assert [c.canary_id for c in await store.list_canaries(model_name=model)] == [won[0].canary_id]


async def test_a_canary_and_a_running_experiment_racing_for_a_model_let_exactly_one_win(store, replica):
    for i in range(6):
        model = unique("model")
        c, e = canary(model), experiment(model)
        writers = [store.create_canary(c, event(c)), replica.create(e, change(e))]
        if i % 2:
            writers.reverse()
        results = await asyncio.gather(*writers, return_exceptions=True)
        busy = [r for r in results if isinstance(r, ModelBusy)]
        assert len(busy) == 1, results
        stored_canary, stored_experiment = await store.get_canary(c.canary_id), await store.get(e.name)
        assert (stored_canary is None) != (stored_experiment is None)
        if stored_canary is None:
            assert (busy[0].holder, busy[0].kind) == (e.name, "experiment")
        else:
            assert (busy[0].holder, busy[0].kind) == (c.canary_id, "canary")


# ----- replace -------------------------------------------------------------------------------

async def test_replace_is_a_compare_and_set_and_events_continue_the_trail(store, replica):
    created = await create(store, canary(unique("model")))
    second = await replace(store, created, CanaryEventType.ADVANCED, CanaryEventType.PAUSED, current_step=1,
                           state=PAUSED, status_message="paused")
    assert second is not None and second.revision == 2 and second.state is PAUSED and second.current_step == 1
    assert second.create_time == created.create_time and second.update_time > created.update_time
    assert second.update_time.tzinfo == timezone.utc
    assert await replica.get_canary(created.canary_id) == second

    assert await replace(replica, created, CanaryEventType.RESUMED, status_message="stale") is None  # 1 != 2
    assert await store.get_canary(created.canary_id) == second
    assert [e.sequence for e in await store.canary_events(created.canary_id)] == [1, 2, 3]

    quiet = await replace(replica, second, status_message="holding")  # no events
    third = await replace(store, quiet, CanaryEventType.RESUMED, state=RUNNING)
    trail = await store.canary_events(created.canary_id)
    assert [(e.sequence, e.event_type) for e in trail] == [
        (1, STARTED), (2, CanaryEventType.ADVANCED), (3, CanaryEventType.PAUSED), (4, CanaryEventType.RESUMED)]
    assert all(e.canary_id == created.canary_id for e in trail) and third.revision == 4
    assert [e.sequence for e in await store.canary_events(created.canary_id, after_sequence=2)] == [3, 4]
    assert [e.sequence for e in await store.canary_events(created.canary_id, after_sequence=1, limit=2)] == [2, 3]
    assert await store.canary_events(created.canary_id, limit=0) == []

    ghost = canary(unique("model"))
    assert await replace(store, ghost) is None  # never there
    with pytest.raises(ValueError):  # the new revision must be expected + 1
        await store.replace_canary(third.with_changes(revision=9), third.revision, [])
    assert await store.get_canary(created.canary_id) == third


async def test_concurrent_replaces_of_one_revision_let_exactly_one_win(store, replica):
    created = await create(store, canary(unique("model")))
    results = await asyncio.gather(*(replace((store, replica)[i % 2], created, CanaryEventType.PAUSED,
                                             status_message=f"writer {i}") for i in range(6)))
    won = [r for r in results if r is not None]
    assert len(won) == 1 and await store.get_canary(created.canary_id) == won[0]
    assert [e.sequence for e in await store.canary_events(created.canary_id)] == [1, 2]


async def test_the_store_sets_the_step_clock_when_asked_and_keeps_what_it_is_given(store):
    created = await create(store, canary(unique("model"), request_id=unique("request")))
    assert created.step_start_time == created.create_time == created.update_time

    kept = await replace(store, created, status_message="holding")  # given: kept
    assert kept.step_start_time == created.step_start_time and kept.update_time > created.update_time
    given = datetime(2024, 3, 1, tzinfo=timezone.utc)
    assert (await replace(store, kept, step_start_time=given)).step_start_time == given
    advanced = await replace(store, await store.get_canary(created.canary_id), CanaryEventType.ADVANCED,
                             current_step=1, step_start_time=None)  # a new step: the store's clock
    assert advanced.step_start_time == advanced.update_time > kept.update_time
    assert await store.get_canary(created.canary_id) == advanced

    # create_time and request_id stay as stored; end_time is the caller's
    end = datetime(2030, 1, 1, tzinfo=timezone.utc)
    ended = await replace(store, advanced, CanaryEventType.ROLLED_BACK, state=ROLLED_BACK, end_time=end,
                          create_time=end, request_id="another")
    assert (ended.create_time, ended.request_id, ended.end_time) == (created.create_time, created.request_id, end)
    assert await store.get_canary(created.canary_id) == ended


# ----- list ----------------------------------------------------------------------------------

async def test_list_is_newest_first_filters_and_pages_without_gaps_or_duplicates(store):
    model, other = unique("model"), unique("model")
    written = []
    for i in range(7):
        c = await create(store, canary(model))
        if i < 6:  # one active at a time: the last stays running
            c = await finish(store, c, (PROMOTED, ROLLED_BACK, ROLLED_BACK)[i % 3])
        written.append(c)
    written.append(await create(store, canary(other)))
    mine = sorted(written[:7], key=lambda c: (c.create_time, c.canary_id), reverse=True)
    assert await store.list_canaries(model_name=model) == mine

    async def all_pages(size: int, **filters) -> list[Canary]:
        found, before = [], None
        while True:
            page = await store.list_canaries(before=before, limit=size, **filters)
            assert len(page) <= size
            found += page
            if len(page) < size:
                return found
            before = (page[-1].create_time, page[-1].canary_id)

    assert await all_pages(2, model_name=model) == mine
    assert await all_pages(1, model_name=model) == mine
    promoted = [c for c in mine if c.state is PROMOTED]
    assert len(promoted) == 2 and await all_pages(1, model_name=model, states=[PROMOTED]) == promoted
    assert await store.list_canaries(model_name=model, states=[RUNNING, PAUSED]) == [written[6]]
    assert await store.list_canaries(model_name=model, states=[ROLLED_BACK], limit=1) == \
        [c for c in mine if c.state is ROLLED_BACK][:1]
    assert await store.list_canaries(model_name=model, limit=0) == []
    assert await store.list_canaries(model_name=unique("model")) == []
    paris = timezone(timedelta(hours=2))
    assert await store.list_canaries(model_name=model, before=(mine[0].create_time.astimezone(paris),
                                                               mine[0].canary_id)) == mine[1:]
    everything = await store.list_canaries(limit=100_000)
    assert [c for c in everything if c.model_name in (model, other)] == \
        sorted(written, key=lambda c: (c.create_time, c.canary_id), reverse=True)


# ----- the change feed and notifications ------------------------------------------------------

async def test_canaries_changed_since_returns_new_writes_in_order_and_advances_the_cursor(store, replica):
    cursor, _ = await store.canaries_changed_since(0)
    first = await create(store, canary(unique("model")))
    second = await create(replica, canary(unique("model")))
    e = experiment(unique("model"))
    await store.create(e, change(e))  # the same sequence, another feed
    first_again = await replace(store, first, CanaryEventType.PAUSED, state=PAUSED)

    after, changed = await replica.canaries_changed_since(cursor)
    mine = [c for c in changed if c.canary_id in (first.canary_id, second.canary_id)]
    assert mine == [second, first_again]
    assert after > cursor and all(isinstance(c, Canary) for c in changed)
    again, rest = await store.canaries_changed_since(after)
    assert not [c for c in rest if c.canary_id in (first.canary_id, second.canary_id)]
    later = await replace(replica, second, status_message="later")
    _, newest = await store.canaries_changed_since(again)
    assert later in newest
    experiment_cursor, _ = await store.changed_since(0)
    assert experiment_cursor < (await store.canaries_changed_since(0))[0]  # one sequence for both


async def test_canaries_changed_since_never_misses_a_commit_under_concurrent_writers(store, replica):
    ids: list[str] = []
    done = asyncio.Event()
    seen: dict[str, int] = {}

    async def writer(i: int) -> None:
        rng = random.Random(i)
        target = (store, replica)[i % 2]
        current = await create(target, canary(unique("model")))
        ids.append(current.canary_id)
        for _ in range(3):
            await asyncio.sleep(rng.random() * 0.01)
            current = await replace(target, current, CanaryEventType.ADVANCED, status_message=str(rng.random()))

    async def follow(cursor: int) -> None:
        while True:
            finished = done.is_set()
            cursor, changed = await store.canaries_changed_since(cursor)
            for c in changed:
                seen[c.canary_id] = max(seen.get(c.canary_id, 0), c.revision)
            if finished:
                return
            await asyncio.sleep(0.002)

    start, _ = await store.canaries_changed_since(0)
    following = asyncio.create_task(follow(start))
    await asyncio.gather(*(writer(i) for i in range(16)))
    done.set()
    await following
    assert {i: seen.get(i) for i in ids} == {i: 4 for i in ids}


async def test_a_canary_write_wakes_waiters_on_another_replica(store, replica):
    for _ in range(10):  # another writer of the shared database may wake it first: start again
        waiters = [asyncio.create_task(replica.wait_for_change(10)) for _ in range(3)]
        await asyncio.sleep(0.2)
        if not any(w.done() for w in waiters):
            break
        await asyncio.gather(*waiters)
    assert not any(w.done() for w in waiters)
    await create(store, canary(unique("model")))
    written = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*waiters), 1.0)
    assert time.monotonic() - written < 1.0


# ----- leases --------------------------------------------------------------------------------

async def test_a_lease_has_one_holder_until_it_expires_or_is_released(store, replica):
    c = await create(store, canary(unique("model")))
    a, b = unique("holder"), unique("holder")
    assert await store.acquire_lease(c.canary_id, a, 5.0)
    assert not await replica.acquire_lease(c.canary_id, b, 5.0)
    assert await store.acquire_lease(c.canary_id, a, 0.2)  # the holder renews (to a short one)
    assert not await replica.acquire_lease(c.canary_id, b, 5.0)
    await asyncio.sleep(0.4)
    assert await replica.acquire_lease(c.canary_id, b, 5.0)  # expired: the other takes it
    assert not await store.acquire_lease(c.canary_id, a, 5.0)
    await store.release_lease(c.canary_id, a)  # not a's: nothing
    assert not await store.acquire_lease(c.canary_id, a, 5.0)
    await replica.release_lease(c.canary_id, b)
    assert await lease_rows(store, c.canary_id) == 0
    assert await store.acquire_lease(c.canary_id, a, 5.0)  # free again
    assert not await store.acquire_lease(unique("nothing"), a, 5.0)


async def test_concurrent_holders_let_exactly_one_take_a_lease(store, replica):
    for _ in range(3):
        c = await create(store, canary(unique("model")))
        holders = [unique("holder") for _ in range(6)]
        results = await asyncio.gather(*((store, replica)[i % 2].acquire_lease(c.canary_id, h, 5.0)
                                         for i, h in enumerate(holders)))
        assert sum(results) == 1, results
        winner = holders[results.index(True)]
        assert await store._fetchval("SELECT holder FROM router_canary_leases WHERE canary_id = $1",
                                     c.canary_id) == winner


async def test_a_finished_canary_has_no_lease_and_gets_none(store, replica):
    for end in (ROLLED_BACK, PROMOTED):
        c = await create(store, canary(unique("model")))
        a, b = unique("holder"), unique("holder")
        assert await store.acquire_lease(c.canary_id, a, 60.0)
        paused = await replace(store, c, CanaryEventType.PAUSED, state=PAUSED)  # still active: kept
        assert await lease_rows(store, c.canary_id) == 1
        await finish(replica, paused, end)
        assert await lease_rows(store, c.canary_id) == 0  # gone with the same write
        assert not await store.acquire_lease(c.canary_id, a, 60.0)
        assert not await replica.acquire_lease(c.canary_id, b, 60.0)
        assert await lease_rows(store, c.canary_id) == 0


async def test_a_lease_taken_while_its_canary_ends_does_not_outlive_it(store, replica):
    for i in range(10):
        c = await create(store, canary(unique("model")))
        holder = unique("holder")
        ending = finish(store, c)
        taking = replica.acquire_lease(c.canary_id, holder, 60.0)
        await asyncio.gather(*((ending, taking) if i % 2 else (taking, ending)))
        assert await lease_rows(store, c.canary_id) == 0


async def test_a_lease_needs_a_holder_and_a_sensible_ttl(store):
    c = await create(store, canary(unique("model")))
    for holder, ttl in (("", 5.0), ("h", float("nan")), ("h", -1.0), ("h", float("inf"))):
        with pytest.raises(ValueError):
            await store.acquire_lease(c.canary_id, holder, ttl)


async def test_a_lease_waits_for_a_write_ending_its_canary_and_then_is_refused(database_url, store):
    """A writer ending the canary holds its row: acquire_lease waits, then finds it ended."""
    c = await create(store, canary(unique("model")))
    writer = await asyncpg.connect(database_url, timeout=TIMEOUT)
    try:
        async with writer.transaction():
            await writer.execute("UPDATE router_canaries SET state = 'ROLLED_BACK', "
                                 "body = jsonb_set(body, '{state}', '\"ROLLED_BACK\"') WHERE canary_id = $1",
                                 c.canary_id)
            taking = asyncio.create_task(store.acquire_lease(c.canary_id, unique("holder"), 60.0))
            await asyncio.sleep(0.3)
            assert not taking.done()
        assert await taking is False
        assert await lease_rows(store, c.canary_id) == 0
    finally:
        await writer.close()


async def test_a_write_ending_a_canary_waits_for_a_lease_being_taken_and_deletes_it(database_url, store):
    """A lease being taken holds the canary's row FOR SHARE: the ending write waits, and its
    delete (a statement of its own, after the update) sees the lease that committed meanwhile."""
    c = await create(store, canary(unique("model")))
    taker = await asyncpg.connect(database_url, timeout=TIMEOUT)
    try:
        async with taker.transaction():
            await taker.execute("SELECT 1 FROM router_canaries WHERE canary_id = $1 FOR SHARE", c.canary_id)
            await taker.execute("INSERT INTO router_canary_leases VALUES ($1, 'someone', now() + interval '1 hour')",
                                c.canary_id)
            ending = asyncio.create_task(finish(store, c))
            await asyncio.sleep(0.3)
            assert not ending.done()
        assert (await ending).state is ROLLED_BACK
        assert await lease_rows(store, c.canary_id) == 0
    finally:
        await taker.close()

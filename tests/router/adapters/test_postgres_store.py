"""PostgresExperimentStore over a real PostgreSQL: the JSON round trip, names never reused, one
running experiment per model across replicas, compare-and-set, history, list pages, the change
feed under concurrent writers, notifications, migrations, and failures.

Tests share the database with other tests and runs: every test uses experiment and model names
of its own (uuid), and reads lists filtered by model. Migrations from nothing get a scratch
database."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
import urllib.parse
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from ml_serving_server.services.router.domain.allocation import Allocation, AllocationMode, VariantFigures
from ml_serving_server.services.router.domain.assignment import Variant, define_experiment, updated
from ml_serving_server.services.router.domain.model import (
    ChangeAction,
    Experiment,
    ExperimentChange,
    ExperimentState,
    OutcomeMetric,
    ShadowConfig,
)
from ml_serving_server.services.router.domain.ports import ExperimentExists, ModelBusy, StoreUnavailable
from ml_serving_server.services.router.domain.statistics import MetricKind
from ml_serving_server.services.router.postgres_store import (
    _LOCK_NAMESPACE,
    PostgresExperimentStore,
    _dump_experiment,
    _load_experiment,
)

from .conftest import TIMEOUT, change, experiment, now, unique

pytestmark = pytest.mark.timeout(60)

RUNNING, PAUSED, STOPPED = ExperimentState.RUNNING, ExperimentState.PAUSED, ExperimentState.STOPPED


def full_experiment(model: str) -> Experiment:
    """Every field away from its default (store-set times aside); the layout is fragmented and
    not in name order, overrides not sorted, targeting numbers both int and float."""
    first = define_experiment(unique("full"), [Variant("zeta", model, "1", 3000, control=True, description="old"),
                                               Variant("alpha", model, "2", 4000),
                                               Variant("mid", model, "3", 3000)])
    definition = updated(
        first,
        variants=[Variant("zeta", model, "1", 2000, control=True, description="old"),
                  Variant("alpha", model, "2", 3000, description="new"), Variant("mid", model, "3", 5000)],
        targeting={"include_segments": ["vip", "beta"], "exclude_segments": ["banned"], "conditions": [
            {"attribute": "country", "operator": "IN", "values": ["DE", "FR"]},
            {"attribute": "device.os", "operator": "EQUALS", "values": ["ios"]},
            {"attribute": "age", "operator": "GREATER_OR_EQUAL", "values": [18.5]},
            {"attribute": "visits", "operator": "LESS_THAN", "values": [3]},
            {"attribute": "premium", "operator": "NOT_EQUALS", "values": [True]},
            {"attribute": "email", "operator": "EXISTS"},
        ]},
        overrides=[("user-9", "alpha"), ("user-1", "zeta"), ("ünïcode", "mid")], holdout_bps=250)
    at = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
    return Experiment(
        definition, (OutcomeMetric("ctr", MetricKind.BINARY), OutcomeMetric("revenue", MetricKind.NUMERIC)),
        state=STOPPED, description="a full one", shadow=ShadowConfig(model, "4", 1500), priority=7,
        winning_variant="alpha", revision=1, created_by="alice", start_time=at, stop_time=at + timedelta(days=1),
        allocation=THOMPSON, reweight_time=at + timedelta(hours=2, microseconds=7))


THOMPSON = Allocation(AllocationMode.THOMPSON, floor_bps=500, ceiling_bps=8000, interval_s=90.25, min_exposures=250)
"""Every field away from its default; fits three variants (floor <= 3333, ceiling >= 3334)."""


async def create(store: PostgresExperimentStore, e: Experiment) -> Experiment:
    return await store.create(e, change(e))


async def replace(store: PostgresExperimentStore, current: Experiment, action: ChangeAction = ChangeAction.UPDATED,
                  **changes) -> Experiment | None:
    changed = current.with_changes(revision=current.revision + 1, **changes)
    return await store.replace(changed, current.revision, change(changed, action))


def assert_store_times(stored: Experiment) -> None:
    assert stored.create_time.tzinfo == timezone.utc and stored.update_time.tzinfo == timezone.utc
    assert abs(stored.create_time - now()) < timedelta(minutes=1)


# ----- serialisation -----------------------------------------------------------------------

def test_the_full_experiment_sets_every_field():
    """Guards the round-trip tests: a field added to the model must be set in full_experiment too."""
    e = full_experiment("m")
    for obj in (e, e.definition, e.shadow, e.allocation, *e.definition.variants[:1]):
        for f in dataclasses.fields(obj):
            if f.name in ("create_time", "update_time", "revision"):  # set by the store
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            assert getattr(obj, f.name) != default, f"{type(obj).__name__}.{f.name} is left at its default"


def test_json_round_trips_every_field():
    e = full_experiment("m").with_changes(create_time=now(), update_time=now())
    data = json.loads(json.dumps(_dump_experiment(e), allow_nan=False))
    assert _load_experiment(data) == e
    assert data["state"] == "STOPPED" and data["metrics"][1] == {"name": "revenue", "kind": "numeric"}
    assert data["start_time"] == "2024-05-06T07:08:09.123456+00:00"
    assert data["definition"]["overrides"][0] == ["user-9", "alpha"]
    assert [name for name, _ in data["definition"]["layout"]] == ["zeta", "alpha", "mid"]
    small = experiment("m")
    assert _load_experiment(json.loads(json.dumps(_dump_experiment(small)))) == small


def test_times_in_other_zones_are_stored_in_utc():
    paris = timezone(timedelta(hours=2))
    e = experiment("m").with_changes(start_time=datetime(2024, 1, 1, 12, 0, tzinfo=paris))
    data = _dump_experiment(e)
    assert data["start_time"] == "2024-01-01T10:00:00+00:00"
    back = _load_experiment(json.loads(json.dumps(data)))
    assert back.start_time == e.start_time and back.start_time.tzinfo == timezone.utc


# ----- create and get ------------------------------------------------------------------------

async def test_create_and_get_round_trip_every_field(store, replica):
    full = full_experiment(unique("model"))
    stored = await store.create(full, change(full))
    assert stored == full.with_changes(create_time=stored.create_time, update_time=stored.update_time)
    assert stored.create_time == stored.update_time
    assert_store_times(stored)
    assert await store.get(full.name) == stored
    assert await replica.get(full.name) == stored
    assert await store.get(unique("nothing")) is None
    [created] = await store.history(full.name)
    assert created.revision == 1 and created.action is ChangeAction.CREATED and created.after == stored


async def test_create_sets_revision_one_and_start_time_of_a_running_experiment(store):
    model = unique("model")
    running = await create(store, experiment(model).with_changes(revision=7))
    assert running.revision == 1 and running.start_time == running.create_time
    paused = await create(store, experiment(model, state=PAUSED))
    assert paused.start_time is None and paused.state is PAUSED
    assert (await store.history(paused.name))[0].revision == 1


async def test_names_are_never_reused(store, replica):
    e = await create(store, experiment(unique("model")))
    with pytest.raises(ExperimentExists):
        await create(replica, experiment(unique("model"), name=e.name, state=PAUSED))
    stopped = await replace(store, e, ChangeAction.STOPPED, state=STOPPED, stop_time=now())
    assert stopped is not None
    with pytest.raises(ExperimentExists):
        await create(store, experiment(e.model_name, name=e.name))
    assert await store.get(e.name) == stopped
    assert [c.revision for c in await store.history(e.name)] == [1, 2]


# ----- one running experiment per model ----------------------------------------------------

async def test_a_model_has_at_most_one_running_experiment(store, replica):
    model = unique("model")
    first = await create(store, experiment(model))
    with pytest.raises(ModelBusy) as busy:
        await create(replica, experiment(model))
    assert (busy.value.holder, busy.value.kind) == (first.name, "experiment")
    paused = await create(replica, experiment(model, state=PAUSED))  # paused: fine
    await create(store, experiment(unique("model")))  # another model: fine
    assert await replace(store, first, description="still running") is not None  # running stays running

    with pytest.raises(ModelBusy) as busy:
        await replace(replica, paused, ChangeAction.RESUMED, state=RUNNING)
    assert (busy.value.holder, busy.value.kind) == (first.name, "experiment")
    assert await store.get(paused.name) == paused  # nothing written
    assert len(await store.history(paused.name)) == 1

    current = await store.get(first.name)
    assert await replace(store, current, ChangeAction.STOPPED, state=STOPPED) is not None
    resumed = await replace(replica, paused, ChangeAction.RESUMED, state=RUNNING)
    assert resumed is not None and resumed.state is RUNNING and resumed.revision == 2


async def test_concurrent_creates_of_running_experiments_on_one_model_let_exactly_one_win(store, replica):
    for contenders in (2, 2, 2, 8):
        model = unique("model")
        candidates = [experiment(model) for _ in range(contenders)]
        results = await asyncio.gather(*((store, replica)[i % 2].create(e, change(e))
                                         for i, e in enumerate(candidates)), return_exceptions=True)
        won = [r for r in results if isinstance(r, Experiment)]
        lost = [r for r in results if not isinstance(r, Experiment)]
        assert len(won) == 1, results
        assert all(isinstance(r, ModelBusy) and (r.holder, r.kind) == (won[0].name, "experiment")
                   for r in lost), results
        assert [e.name for e in await store.list(model_name=model)] == [won[0].name]


# ----- replace -------------------------------------------------------------------------------

async def test_replace_is_a_compare_and_set_on_the_revision(store, replica):
    created = await create(store, experiment(unique("model")))
    second = await replace(store, created, ChangeAction.PAUSED, state=PAUSED)
    assert second is not None and second.revision == 2 and second.state is PAUSED
    assert second.create_time == created.create_time and second.update_time > created.update_time
    assert second.update_time.tzinfo == timezone.utc
    assert await replica.get(created.name) == second

    assert await replace(replica, created, description="stale") is None  # expected 1, stored 2
    assert await store.get(created.name) == second
    assert [c.revision for c in await store.history(created.name)] == [1, 2]

    ghost = experiment(unique("model"))
    assert await replace(store, ghost) is None  # gone (never there)
    with pytest.raises(ValueError):  # the new revision must be expected + 1
        await store.replace(second.with_changes(revision=5), 2, change(second))
    assert await store.get(created.name) == second


async def test_concurrent_replaces_of_one_revision_let_exactly_one_win(store, replica):
    created = await create(store, experiment(unique("model")))
    results = await asyncio.gather(*(replace((store, replica)[i % 2], created, description=f"writer {i}")
                                     for i in range(6)))
    won = [r for r in results if r is not None]
    assert len(won) == 1 and await store.get(created.name) == won[0]


# ----- history -------------------------------------------------------------------------------

async def test_history_is_oldest_first_with_every_change(store):
    paris = timezone(timedelta(hours=2))
    draft = experiment(unique("model"))
    changes = [change(draft, reason="launch")]
    created = current = await store.create(draft, changes[0])
    steps = [(ChangeAction.UPDATED, dict(description="new"), "", ("description",)),
             (ChangeAction.PAUSED, dict(state=PAUSED), "too slow", ()),
             (ChangeAction.RESUMED, dict(state=RUNNING), "fixed", ())]
    stored_ones = [created]
    for action, fields, reason, mask in steps:
        changed = current.with_changes(revision=current.revision + 1, **fields)
        entry = change(changed, action, reason=reason, fields=mask, at=datetime(2024, 1, 1, 12, tzinfo=paris))
        current = await store.replace(changed, current.revision, entry)
        assert current is not None
        changes.append(entry)
        stored_ones.append(current)

    history = await store.history(created.name)
    assert [c.revision for c in history] == [1, 2, 3, 4]
    assert [c.action for c in history] == [ChangeAction.CREATED, ChangeAction.UPDATED, ChangeAction.PAUSED,
                                           ChangeAction.RESUMED]
    for got, sent, stored in zip(history, changes, stored_ones):
        assert got == dataclasses.replace(sent, revision=stored.revision, after=stored)
    assert history[2].time == datetime(2024, 1, 1, 10, tzinfo=timezone.utc) and history[2].time.tzinfo == timezone.utc
    assert history[1].fields == ("description",) and history[2].reason == "too slow"
    assert [c.revision for c in await store.history(created.name, after_revision=2)] == [3, 4]
    assert [c.revision for c in await store.history(created.name, limit=2)] == [1, 2]
    assert [c.revision for c in await store.history(created.name, after_revision=1, limit=2)] == [2, 3]
    assert await store.history(created.name, limit=0) == []
    assert await store.history(unique("nothing")) == []


async def test_an_adaptive_experiment_round_trips_its_allocation_and_reweight_time(store, replica):
    paris = timezone(timedelta(hours=2))
    allocation = Allocation(AllocationMode.THOMPSON, floor_bps=1000, ceiling_bps=9000, interval_s=12.5,
                            min_exposures=200)
    draft = experiment(unique("model")).with_changes(
        allocation=allocation, reweight_time=datetime(2024, 3, 4, 12, 0, 0, 250_000, tzinfo=paris))
    stored = await create(store, draft)
    assert stored.allocation == allocation and stored.allocation.adaptive
    assert stored.reweight_time == datetime(2024, 3, 4, 10, 0, 0, 250_000, tzinfo=timezone.utc)
    assert await store.get(draft.name) == stored
    assert (await store.get(draft.name)).reweight_time.tzinfo == timezone.utc  # read back in UTC
    assert await replica.get(draft.name) == stored
    [created] = await store.history(draft.name)
    assert created.after == stored and created.figures == ()
    body = await store._fetchval("SELECT body FROM router_experiments WHERE name = $1", draft.name)
    assert json.loads(body)["allocation"] == {"mode": "THOMPSON", "floor_bps": 1000, "ceiling_bps": 9000,
                                              "interval_s": 12.5, "min_exposures": 200}

    fixed = await replace(store, stored, allocation=Allocation(), reweight_time=None)  # back to FIXED
    assert fixed is not None and fixed.allocation == Allocation() and fixed.reweight_time is None
    assert await replica.get(draft.name) == fixed


async def test_a_body_stored_before_adaptive_allocation_loads_as_fixed(store):
    e = await create(store, experiment(unique("model")))
    data = _dump_experiment(e)
    del data["allocation"], data["reweight_time"]
    old = _load_experiment(json.loads(json.dumps(data)))
    assert old.allocation == Allocation() and not old.allocation.adaptive and old.reweight_time is None


async def test_a_reweighted_change_round_trips_its_figures(store, replica):
    created = await create(store, experiment(unique("model")).with_changes(
        allocation=Allocation(AllocationMode.THOMPSON, floor_bps=1000, interval_s=10.0, min_exposures=200)))
    at = now()
    moved = [dataclasses.replace(v, weight_bps=w) for v, w in zip(created.definition.variants, (1000, 9000))]
    changed = created.with_changes(definition=updated(created.definition, variants=moved), reweight_time=at,
                                   revision=created.revision + 1)
    figures = (VariantFigures("control", 312, 0.1025641025641026, 1.25e-05, 5000, 1000),
               VariantFigures("treatment", 305, 0.3016393442622951, 0.9999875, 5000, 9000))
    entry = ExperimentChange(created.name, changed.revision, ChangeAction.REWEIGHTED, "router", at,
                             "adaptive allocation on ctr: control 5000->1000, treatment 5000->9000 (bps)",
                             ("variants",), changed, figures)
    stored = await store.replace(changed, created.revision, entry)
    assert stored is not None and [v.weight_bps for v in stored.definition.variants] == [1000, 9000]
    assert stored.reweight_time == at and await replica.get(created.name) == stored

    history = await replica.history(created.name)
    assert [(c.revision, c.action) for c in history] == [(1, ChangeAction.CREATED), (2, ChangeAction.REWEIGHTED)]
    assert history[0].figures == ()
    assert history[1] == dataclasses.replace(entry, after=stored)
    assert history[1].figures == figures  # floats exactly, in the variants' order
    assert [c.revision for c in await store.history(created.name, after_revision=1)] == [2]
    rows = await store._fetch("SELECT revision, figures FROM router_experiment_changes WHERE experiment = $1 "
                              "ORDER BY revision", created.name)
    assert json.loads(rows[0]["figures"]) == []
    assert [f["variant"] for f in json.loads(rows[1]["figures"])] == ["control", "treatment"]


# ----- list ----------------------------------------------------------------------------------

async def test_list_is_newest_first_filters_and_pages_without_gaps_or_duplicates(store):
    model, other = unique("model"), unique("model")
    written = []
    for i in range(7):
        e = experiment(model, state=PAUSED if i % 3 == 1 else RUNNING if i == 6 else STOPPED)
        written.append(await create(store, e))
    written.append(await create(store, experiment(other)))
    mine = sorted(written[:7], key=lambda e: (e.create_time, e.name), reverse=True)
    assert [e.create_time for e in mine] == sorted((e.create_time for e in mine), reverse=True)

    assert await store.list(model_name=model) == mine

    async def all_pages(size: int, **filters) -> list[Experiment]:
        found, before = [], None
        while True:
            page = await store.list(before=before, limit=size, **filters)
            assert len(page) <= size
            found += page
            if len(page) < size:
                return found
            before = (page[-1].create_time, page[-1].name)

    assert await all_pages(2, model_name=model) == mine
    assert await all_pages(1, model_name=model) == mine
    paused = [e for e in mine if e.state is PAUSED]
    assert len(paused) == 2 and await all_pages(1, model_name=model, states=[PAUSED]) == paused
    assert await store.list(model_name=model, states=[PAUSED, RUNNING]) == [e for e in mine if e.state is not STOPPED]
    assert await store.list(model_name=model, states=[STOPPED], limit=1) == [e for e in mine if e.state is STOPPED][:1]
    assert await store.list(model_name=model, limit=0) == []
    assert await store.list(model_name=unique("model")) == []
    # every model: this test's experiments appear newest first among the others
    everything = await store.list(limit=10_000)
    assert [e for e in everything if e.model_name in (model, other)] == \
        sorted(written, key=lambda e: (e.create_time, e.name), reverse=True)


async def test_list_takes_a_key_time_in_any_zone(store):
    model = unique("model")
    for _ in range(3):
        await create(store, experiment(model, state=PAUSED))
    mine = await store.list(model_name=model)
    paris = timezone(timedelta(hours=2))
    key = (mine[0].create_time.astimezone(paris), mine[0].name)
    assert await store.list(model_name=model, before=key) == mine[1:]


# ----- the change feed -----------------------------------------------------------------------

async def test_changed_since_returns_new_writes_in_order_and_advances_the_cursor(store, replica):
    cursor, _ = await store.changed_since(0)
    first = await create(store, experiment(unique("model")))
    second = await create(replica, experiment(unique("model")))
    first_again = await replace(store, first, ChangeAction.PAUSED, state=PAUSED)

    after, changed = await replica.changed_since(cursor)
    mine = [e for e in changed if e.name in (first.name, second.name)]
    assert mine == [second, first_again]  # in the order of their last write, each once, as stored now
    assert after > cursor

    again, rest = await store.changed_since(after)
    assert not [e for e in rest if e.name in (first.name, second.name)]
    assert again == after if not rest else again > after
    later = await replace(replica, second, description="later")
    _, newest = await store.changed_since(again)
    assert later in newest


async def test_the_first_read_leaves_stopped_experiments_out_but_its_cursor_covers_them(store, replica):
    running = await create(store, experiment(unique("model")))
    stopped = await replace(store, await create(store, experiment(unique("model"))), ChangeAction.STOPPED,
                            state=ExperimentState.STOPPED)
    cursor, live = await replica.changed_since(0)
    names = {e.name for e in live}
    assert running.name in names and stopped.name not in names
    assert all(e.state is not ExperimentState.STOPPED for e in live)
    _, later = await replica.changed_since(cursor)
    assert stopped.name not in {e.name for e in later}  # behind the cursor: not sent again
    assert await replica.get(stopped.name) == stopped  # fetched by name when needed


async def test_changed_since_never_misses_a_commit_under_concurrent_writers(database_url, store, replica):
    """Writers commit in an order of their own; a reader following the feed must still end up
    with every experiment's last revision (a write committed behind the cursor would be lost)."""
    reader = await PostgresExperimentStore.connect(database_url, timeout_seconds=TIMEOUT)
    names: list[str] = []
    done = asyncio.Event()

    async def writer(i: int) -> None:
        rng = random.Random(i)
        target = (store, replica)[i % 2]
        current = await create(target, experiment(unique("model"), state=PAUSED))
        names.append(current.name)
        for _ in range(3):
            await asyncio.sleep(rng.random() * 0.01)
            current = await replace(target, current, description=str(rng.random()))

    seen: dict[str, int] = {}

    async def follow(cursor: int) -> None:
        while True:
            finished = done.is_set()
            cursor, changed = await reader.changed_since(cursor)
            for e in changed:
                seen[e.name] = max(seen.get(e.name, 0), e.revision)
            if finished:
                return
            await asyncio.sleep(0.002)

    try:
        start, _ = await reader.changed_since(0)
        following = asyncio.create_task(follow(start))
        await asyncio.gather(*(writer(i) for i in range(20)))
        done.set()
        await following
        assert {name: seen.get(name) for name in names} == {name: 4 for name in names}
    finally:
        await reader.close()


# ----- notifications -------------------------------------------------------------------------

async def test_a_write_wakes_waiters_on_another_replica_within_a_second(store, replica):
    for _ in range(10):  # another writer of the shared database may wake it first: start again
        waiters = [asyncio.create_task(replica.wait_for_change(10)) for _ in range(5)]
        await asyncio.sleep(0.2)
        if not any(w.done() for w in waiters):
            break
        await asyncio.gather(*waiters)
    assert not any(w.done() for w in waiters)
    await create(store, experiment(unique("model")))
    written = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*waiters), 1.0)
    assert time.monotonic() - written < 1.0


async def test_wait_for_change_returns_after_its_timeout(replica):
    started = time.monotonic()
    await replica.wait_for_change(0.3)
    assert time.monotonic() - started < 1.0  # (earlier when another writer of the database wakes it)


async def test_the_listener_reconnects_after_its_connection_is_killed(database_url, store):
    follower = await PostgresExperimentStore.connect(database_url, timeout_seconds=TIMEOUT)
    try:
        pid = follower._listener.get_server_pid()
        assert await store._fetchval("SELECT pg_terminate_backend($1)", pid)
        started = time.monotonic()
        await follower.wait_for_change(0.3)  # returns by its timeout (or the reconnection) meanwhile
        assert time.monotonic() - started < 1.5
        deadline = time.monotonic() + 5
        while follower._listener is None or follower._listener.get_server_pid() == pid:
            assert time.monotonic() < deadline, "the listener did not reconnect"
            await asyncio.sleep(0.05)
        waiter = asyncio.create_task(follower.wait_for_change(10))
        await asyncio.sleep(0.1)
        await create(store, experiment(unique("model")))
        written = time.monotonic()
        await asyncio.wait_for(waiter, 1.0)
        assert time.monotonic() - written < 1.0
    finally:
        await follower.close()


# ----- migrations ----------------------------------------------------------------------------

ROUTER_TABLES = {"router_alembic_version", "router_experiments", "router_experiment_changes", "router_canaries",
                 "router_canary_events", "router_canary_leases"}


async def test_migrations_run_again_are_harmless(database_url, store, replica):
    again = await PostgresExperimentStore.connect(database_url, timeout_seconds=TIMEOUT)  # a third run
    try:
        e = await create(again, experiment(unique("model")))
        assert await store.get(e.name) == e
        versions = await store._fetch("SELECT version_num FROM router_alembic_version")
        assert [tuple(r) for r in versions] == [("r0003",)]
    finally:
        await again.close()


@asynccontextmanager
async def scratch_database(database_url: str):
    """A database of its own, dropped afterwards."""
    name = f"router_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url, timeout=TIMEOUT)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    except asyncpg.InsufficientPrivilegeError:
        await admin.close()
        pytest.skip("the test database user may not create databases")
    try:
        yield urllib.parse.urlunsplit(urllib.parse.urlsplit(database_url)._replace(path=f"/{name}"))
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def test_migrations_from_nothing_with_replicas_starting_together(database_url):
    async with scratch_database(database_url) as url:
        started = await asyncio.gather(PostgresExperimentStore.connect(url, timeout_seconds=TIMEOUT),
                                       PostgresExperimentStore.connect(url, timeout_seconds=TIMEOUT))
        try:
            started.append(await PostgresExperimentStore.connect(url, timeout_seconds=TIMEOUT))  # nothing left to do
            tables = {r["tablename"] for r in await started[0]._fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
            assert tables == ROUTER_TABLES
            assert await started[0]._fetchval("SELECT to_regclass('router_change_seq')::text") == "router_change_seq"
            assert await started[1].changed_since(0) == (0, [])
            assert await started[1].list() == []
            e = await create(started[2], experiment("m"))
            assert await started[0].changed_since(0) == (1, [e])
        finally:
            await asyncio.gather(*(s.close() for s in started))


# ----- failures ------------------------------------------------------------------------------

async def test_an_unreachable_database_is_store_unavailable_quickly():
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await PostgresExperimentStore.connect("postgresql://127.0.0.1:1/x", timeout_seconds=1.0)
    assert time.monotonic() - started < 3.0


async def test_a_closed_store_does_not_answer(database_url):
    closing = await PostgresExperimentStore.connect(database_url, timeout_seconds=TIMEOUT)
    assert await closing.ping() is True
    await closing.close()
    await closing.close()  # idempotent
    assert await closing.ping() is False
    with pytest.raises(StoreUnavailable):
        await closing.get("anything")
    started = time.monotonic()
    await closing.wait_for_change(0.2)  # never raises
    assert time.monotonic() - started < 1.0


async def test_a_write_waiting_longer_than_the_timeout_is_store_unavailable(database_url, store):
    impatient = await PostgresExperimentStore.connect(database_url, timeout_seconds=0.5)
    holder = await asyncpg.connect(database_url, timeout=TIMEOUT)
    e = experiment(unique("model"))
    try:
        async with holder.transaction():  # another writer holding the write lock
            await holder.execute("SELECT pg_advisory_xact_lock($1, 1)", _LOCK_NAMESPACE)
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await create(impatient, e)
            assert 0.4 < time.monotonic() - started < 2.0
        assert await store.get(e.name) is None
        assert (await create(impatient, e)).name == e.name  # it works again afterwards
    finally:
        await holder.close()
        await impatient.close()

"""PostgresLifecycle over a real PostgreSQL: migrations, the model lock, the event feed and its
notifications across replicas, the audit history, pruning, and failures.

Most tests share the database with other tests and runs: they use model names of their own
and read the feed filtered by model. Migrations from nothing get a scratch database; pruning
and notification timing share a quiet one, used by this module only (pruning works on the
whole feed, and any commit on the shared database wakes waiters)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
import socket
import time
import urllib.parse
import uuid
from contextlib import asynccontextmanager
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from ml_serving_server.services.registry.domain.model import (
    Artifact,
    ArtifactFormat,
    Comparison,
    EventType,
    GateResult,
    MetricGate,
    ModelVersion,
    RegistryEvent,
    Signature,
    Stage,
    StageTransition,
    TensorSpec,
    TransitionQuery,
    VersionStatus,
)
from ml_serving_server.services.registry.domain.ports import BackendUnavailable
from ml_serving_server.services.registry.postgres_lifecycle import (
    _MIGRATION_LOCK_NAMESPACE,
    PostgresLifecycle,
    dump_event,
    dump_transition,
    load_event,
    load_transition,
)

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 5.0


@pytest.fixture(scope="module")
async def store(database_url):
    lifecycle = await PostgresLifecycle.connect(database_url, timeout_seconds=TIMEOUT)
    yield lifecycle
    await lifecycle.close()


@pytest.fixture(scope="module")
async def replica(database_url):
    """A second store on the same database: another replica."""
    lifecycle = await PostgresLifecycle.connect(database_url, timeout_seconds=TIMEOUT)
    yield lifecycle
    await lifecycle.close()


@asynccontextmanager
async def scratch_database(database_url: str):
    """A database of its own (no other test writes there, no other NOTIFY arrives), dropped afterwards."""
    name = f"registry_test_{uuid.uuid4().hex[:12]}"
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


@pytest.fixture
async def scratch_url(database_url):
    """An empty database for this test."""
    async with scratch_database(database_url) as url:
        yield url


@pytest.fixture(scope="module")
async def quiet_url(database_url):
    """A database only this module's tests of notification timing and pruning use, one at a time."""
    async with scratch_database(database_url) as url:
        yield url


@pytest.fixture(scope="module")
async def quiet(quiet_url):
    """Two replicas on the quiet database."""
    first = await PostgresLifecycle.connect(quiet_url, timeout_seconds=TIMEOUT)
    second = await PostgresLifecycle.connect(quiet_url, timeout_seconds=TIMEOUT)
    yield first, second
    await asyncio.gather(first.close(), second.close())


def model_name() -> str:
    return f"test-model-{uuid.uuid4().hex[:12]}"


def now() -> datetime:
    return datetime.now(timezone.utc)


def event(model: str, kind: EventType = EventType.MODEL_UPDATED, at: datetime | None = None,
          version: str = "") -> RegistryEvent:
    return RegistryEvent(type=kind, time=at or now(), model_name=model, version=version, actor="tester")


def transition(model: str, version: str, from_stage: Stage, to_stage: Stage, at: datetime, *,
               transition_id: str | None = None, actor: str = "alice", caused_by: str = "") -> StageTransition:
    return StageTransition(transition_id=transition_id or uuid.uuid4().hex, model_name=model, version=version,
                           from_stage=from_stage, to_stage=to_stage, actor=actor,
                           reason=f"{from_stage.name}->{to_stage.name}", time=at, caused_by=caused_by)


def full_event(model: str) -> RegistryEvent:
    """An event with every field (and every nested field) away from its default."""
    at = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
    gate = MetricGate(metric="auc", comparison=Comparison.GREATER_OR_EQUAL, threshold=0.85, target_stage=Stage.STAGING)
    move = StageTransition(
        transition_id="t-1", model_name=model, version="3", from_stage=Stage.STAGING, to_stage=Stage.PRODUCTION,
        actor="alice", reason="better", time=at, override=True,
        gate_results=(GateResult(gate, 0.9, True),
                      GateResult(MetricGate("latency_ms", Comparison.LESS_THAN, 20.5), None, False)),
        caused_by="t-0",
    )
    version = ModelVersion(
        model_name=model, version="3", stage=Stage.PRODUCTION, description="the third", aliases=("champion", "b"),
        artifact=Artifact(uri="s3://bucket/m/3.mar", format=ArtifactFormat.TORCHSERVE_MAR, sha256="ab" * 32,
                          size_bytes=12345678901),
        source_run_id="run-9", metrics={"auc": 0.9, "loss": 1e-300, "count": 3.0}, parameters={"lr": "0.1"},
        tags={"team": "x"},
        signature=Signature(inputs=(TensorSpec("x", "FP32", (-1, 3)),), outputs=(TensorSpec("y", "INT64", (1,)),)),
        status=VersionStatus.FAILED_REGISTRATION, status_message="checksum", created_by="bob",
        create_time=at - timedelta(days=2), update_time=at - timedelta(days=1), stage_update_time=at,
    )
    return RegistryEvent(type=EventType.STAGE_CHANGED, time=at, model_name=model, version="3",
                         from_stage=Stage.STAGING, to_stage=Stage.PRODUCTION, alias="champion", actor="alice",
                         model_version=version, transition=move, sequence=0)


# ----- serialisation -----------------------------------------------------------------------

def test_the_full_event_sets_every_field():
    """Guards the round-trip tests below: a field added to the model must be set here too."""
    e = full_event("m")
    for obj in (e, e.model_version, e.transition, e.model_version.artifact, e.model_version.signature,
                e.transition.gate_results[0], e.transition.gate_results[0].gate):
        for f in dataclasses.fields(obj):
            if f.name == "sequence":
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            assert getattr(obj, f.name) != default, f"{type(obj).__name__}.{f.name} is left at its default"


def test_event_json_round_trips_every_field():
    e = full_event("m")
    data = json.loads(json.dumps(dump_event(e), allow_nan=False))
    assert load_event(data, 42) == dataclasses.replace(e, sequence=42)
    # enums by name, times ISO-8601 UTC, floats as floats
    assert data["type"] == "STAGE_CHANGED" and data["to_stage"] == "PRODUCTION"
    assert data["model_version"]["status"] == "FAILED_REGISTRATION"
    assert data["model_version"]["artifact"]["format"] == "TORCHSERVE_MAR"
    assert data["transition"]["gate_results"][0]["gate"]["comparison"] == "GREATER_OR_EQUAL"
    assert data["time"] == "2024-05-06T07:08:09.123456+00:00"
    assert data["transition"]["gate_results"][0]["actual"] == 0.9
    count = data["model_version"]["metrics"]["count"]
    assert count == 3.0 and isinstance(count, float)


def test_minimal_event_round_trips():
    e = RegistryEvent(type=EventType.MODEL_DELETED, time=now(), model_name="m")
    assert load_event(json.loads(json.dumps(dump_event(e))), 1) == dataclasses.replace(e, sequence=1)


def test_times_are_stored_in_utc_and_non_finite_floats_survive():
    paris = timezone(timedelta(hours=2))
    local = datetime(2024, 1, 1, 12, 0, tzinfo=paris)
    t = transition("m", "1", Stage.STAGING, Stage.PRODUCTION, local)
    t = dataclasses.replace(t, gate_results=(
        GateResult(MetricGate("m", Comparison.LESS_THAN, math.inf), -math.inf, True),
        GateResult(MetricGate("n", Comparison.GREATER_THAN, 1.0), math.nan, False)))
    data = json.loads(json.dumps(dump_transition(t), allow_nan=False))
    assert data["time"] == "2024-01-01T10:00:00+00:00"
    back = load_transition(data)
    assert back.time == local and back.time.tzinfo == timezone.utc
    assert back.gate_results[0].gate.threshold == math.inf and back.gate_results[0].actual == -math.inf
    assert math.isnan(back.gate_results[1].actual)


# ----- migrations --------------------------------------------------------------------------

async def test_migrations_run_once_from_nothing_with_replicas_starting_together(scratch_url):
    """Replicas in other processes are ordered by the advisory lock (within one process a thread
    lock comes first): while another session holds it, connect waits and creates nothing."""
    other_replica = await asyncpg.connect(scratch_url)
    started: list[PostgresLifecycle] = []
    try:
        await other_replica.execute("SELECT pg_advisory_lock($1, 0)", _MIGRATION_LOCK_NAMESPACE)
        connecting = asyncio.gather(PostgresLifecycle.connect(scratch_url, timeout_seconds=TIMEOUT),
                                    PostgresLifecycle.connect(scratch_url, timeout_seconds=TIMEOUT))
        await asyncio.sleep(0.5)
        assert not connecting.done()
        assert await other_replica.fetchval("SELECT to_regclass('registry_alembic_version')") is None
        await other_replica.execute("SELECT pg_advisory_unlock($1, 0)", _MIGRATION_LOCK_NAMESPACE)
        started += await asyncio.wait_for(connecting, 3 * TIMEOUT)
        started.append(await PostgresLifecycle.connect(scratch_url, timeout_seconds=TIMEOUT))  # nothing left to do

        assert await other_replica.fetch("SELECT version_num FROM registry_alembic_version") == [("r0001",)]
        tables = {r["tablename"] for r in await other_replica.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        assert tables == {"registry_alembic_version", "registry_version_stages", "registry_transitions",
                          "registry_events", "registry_event_head", "registry_request_ids", "registry_needs_repair"}
        assert await other_replica.fetchval("SELECT count(*) FROM registry_event_head") == 1
        assert await started[2].head_sequence() == 0 and await started[2].first_retained_sequence() == 1
    finally:
        await asyncio.gather(*(s.close() for s in started))
        await other_replica.close()


# ----- stages, request ids, the lock --------------------------------------------------------

async def test_stages_and_request_ids_under_the_lock(store):
    model, other = model_name(), model_name()
    since = datetime(2024, 3, 1, tzinfo=timezone.utc)
    async with store.locked(model) as tx:
        assert await tx.stages() == {}
        await tx.set_stage("1", Stage.DEVELOPMENT, since)
        await tx.set_stage("2", Stage.STAGING, since)
        await tx.set_stage("1", Stage.ARCHIVED, since + timedelta(hours=1))  # replaces
        stages = await tx.stages()
        assert {v: r.stage for v, r in stages.items()} == {"1": Stage.ARCHIVED, "2": Stage.STAGING}
        assert stages["1"].since == since + timedelta(hours=1)
        await tx.remember_request("req-1", "2")
        await tx.remember_request("req-1", "9")  # the first answer stays
        await tx.record_transition(transition(model, "2", Stage.DEVELOPMENT, Stage.STAGING, since))
        sequence = await tx.append_event(event(model))
    assert {v: r.stage for v, r in (await store.stages(model)).items()} == {"1": Stage.ARCHIVED, "2": Stage.STAGING}
    assert (await store.stages(model))["2"].since == since
    both = await store.stages_of([model, other])
    assert set(both) == {model, other} and both[other] == {} and set(both[model]) == {"1", "2"}
    assert await store.stages_of([]) == {}
    assert await store.find_request(model, "req-1") == "2"
    assert await store.find_request(model, "req-2") is None
    assert await store.find_request(other, "req-1") is None

    async with store.locked(model) as tx:
        await tx.forget_version("1")
    assert set(await store.stages(model)) == {"2"}
    async with store.locked(model) as tx:
        await tx.forget_model()
    assert await store.stages(model) == {}
    assert await store.find_request(model, "req-1") is None
    # the audit history and the feed stay
    assert len(await store.transitions(TransitionQuery(model, None, None, None, None, 10))) == 1
    assert [e.sequence for e in await store.events_after(sequence - 1, sequence, 10, [model])] == [sequence]


class Boom(Exception):
    pass


async def test_an_exception_rolls_everything_back(store):
    model = model_name()
    await store.mark_needs_repair(model)
    before = await store.head_sequence()
    with pytest.raises(Boom):  # the block's own exception comes out unchanged
        async with store.locked(model) as tx:
            await tx.set_stage("1", Stage.STAGING, now())
            await tx.record_transition(transition(model, "1", Stage.DEVELOPMENT, Stage.STAGING, now()))
            assert await tx.append_event(event(model)) > before
            await tx.remember_request("req", "1")
            await tx.mark_repaired()
            raise Boom()
    assert await store.stages(model) == {}
    assert await store.transitions(TransitionQuery(model, None, None, None, None, 10)) == []
    assert await store.events_after(before, await store.head_sequence(), 100, [model]) == []
    assert await store.find_request(model, "req") is None
    assert model in await store.models_needing_repair()
    with pytest.raises(RuntimeError):  # the handle is dead once its block ended
        await tx.stages()
    async with store.locked(model) as tx:  # the store still works
        await tx.mark_repaired()
    assert model not in await store.models_needing_repair()


async def test_needs_repair_marks_are_committed_at_once_and_idempotent(store, replica):
    model = model_name()
    async with store.locked(model):
        await store.mark_needs_repair(model)  # committed although the block is still open
        assert model in await replica.models_needing_repair()
    await store.mark_needs_repair(model)
    assert (await replica.models_needing_repair()).count(model) == 1
    async with replica.locked(model) as tx:
        await tx.mark_repaired()
    assert model not in await store.models_needing_repair()


async def test_the_lock_serialises_one_model_across_replicas_but_not_different_models(store, replica):
    model, other = model_name(), model_name()
    log: list[tuple[str, float]] = []

    async def first():
        async with store.locked(model) as tx:
            log.append(("first in", time.monotonic()))
            await tx.set_stage("1", Stage.STAGING, now())
            await asyncio.sleep(0.8)
            log.append(("first out", time.monotonic()))

    async def second(name: str):
        await asyncio.sleep(0.1)
        async with replica.locked(name) as tx:
            log.append((f"second in {name}", time.monotonic()))
            return await tx.stages()

    _, seen = await asyncio.gather(first(), second(model))
    assert [step for step, _ in log] == ["first in", "first out", f"second in {model}"]
    assert set(seen) == {"1"}  # the first block's writes, committed before the second got the lock

    log.clear()
    _, seen = await asyncio.gather(first(), second(other))
    assert [step for step, _ in log] == ["first in", f"second in {other}", "first out"]
    assert seen == {}


async def test_lock_waits_and_pool_waits_longer_than_the_timeout_are_backend_unavailable(database_url, store):
    model, other = model_name(), model_name()
    impatient = await PostgresLifecycle.connect(database_url, timeout_seconds=0.5, pool_size=1)
    try:
        async with store.locked(model):
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                async with impatient.locked(model):
                    pass
            assert 0.4 < time.monotonic() - started < 2.0
        async with impatient.locked(other):  # holds the pool's one connection
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await impatient.stages(other)
            assert 0.4 < time.monotonic() - started < 2.0
        async with impatient.locked(model) as tx:  # it works again afterwards
            await tx.set_stage("1", Stage.STAGING, now())
        assert set(await impatient.stages(model)) == {"1"}
    finally:
        await impatient.close()


# ----- the event feed ----------------------------------------------------------------------

async def test_events_round_trip_through_the_store_and_filter(store):
    model, other = model_name(), model_name()
    full = full_event(model)
    async with store.locked(model) as tx:
        first = await tx.append_event(full)
        second = await tx.append_event(event(model, EventType.ALIAS_SET, version="3"))
    async with store.locked(other) as tx:
        third = await tx.append_event(event(other, EventType.MODEL_CREATED))
    assert first < second < third
    head = await store.head_sequence()
    assert head >= third
    got = await store.events_after(first - 1, head, 100, [model])
    assert got[0] == dataclasses.replace(full, sequence=first)
    assert [e.sequence for e in got] == [first, second]
    both = [model, other]
    assert [e.sequence for e in await store.events_after(first - 1, head, 100, both)] == [first, second, third]
    assert [e.sequence for e in await store.events_after(first - 1, head, 1, [model, other])] == [first]
    assert [e.sequence for e in await store.events_after(first, head, 100, [model, other])] == [second, third]
    assert [e.sequence for e in await store.events_after(first - 1, second, 100, [model, other])] == [first, second]
    by_type = await store.events_after(first - 1, head, 100, both, [EventType.ALIAS_SET, EventType.MODEL_CREATED])
    assert [e.sequence for e in by_type] == [second, third]
    assert await store.events_after(head, head, 100) == []


async def test_sequences_are_gap_free_and_never_missed_under_concurrent_writers(store):
    models = [model_name() for _ in range(20)]
    committed: list[int] = []
    done = asyncio.Event()

    async def writer(model: str):
        rng = random.Random(model)
        for round_ in range(5):
            try:
                async with store.locked(model) as tx:
                    await tx.set_stage("1", Stage.STAGING, now())
                    sequences = [await tx.append_event(event(model)) for _ in range(rng.randint(1, 2))]
                    await asyncio.sleep(rng.random() * 0.005)  # commit a little later, holding the head
                    if round_ == 2:
                        raise Boom()  # rolled back: its sequences are handed out again
                committed.extend(sequences)
            except Boom:
                pass

    seen: list[int] = []

    async def reader():
        cursor = await store.head_sequence()
        while True:
            finished = done.is_set()
            head = await store.head_sequence()
            seen.extend(e.sequence for e in await store.events_after(cursor, head, 10_000, models))
            cursor = head
            if finished:
                return
            await asyncio.sleep(0.003)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(m) for m in models))
    done.set()
    await reading

    assert len(committed) >= 20 * 4
    assert seen == sorted(committed)  # each once, in order
    assert len(set(seen)) == len(seen)
    everything = await store.events_after(min(committed) - 1, max(committed), 100_000)
    assert [e.sequence for e in everything] == list(range(min(committed), max(committed) + 1))  # no gap


async def test_a_commit_wakes_waiters_on_another_replica_within_a_second(quiet):
    store, replica = quiet
    model = model_name()
    waiters = [asyncio.create_task(replica.wait_for_change(10)) for _ in range(25)]
    await asyncio.sleep(0.2)
    assert not any(w.done() for w in waiters)
    async with store.locked(model) as tx:
        sequence = await tx.append_event(event(model))
        await asyncio.sleep(0.1)
        assert not any(w.done() for w in waiters)  # delivered at commit
    committed = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*waiters), 1.0)
    assert time.monotonic() - committed < 1.0
    started = time.monotonic()  # already announced: no wait
    await replica.wait_for_change(10, after_sequence=sequence - 1)
    assert time.monotonic() - started < 0.1


async def test_wait_for_change_returns_after_its_timeout(quiet):
    _, replica = quiet
    started = time.monotonic()
    await replica.wait_for_change(0.3)
    assert 0.25 < time.monotonic() - started < 1.0


async def test_the_listener_reconnects_after_its_connection_is_killed(quiet_url, quiet):
    store, _ = quiet
    lifecycle = await PostgresLifecycle.connect(quiet_url, timeout_seconds=TIMEOUT)
    try:
        pid = lifecycle._listener.get_server_pid()
        assert await store._pool.fetchval("SELECT pg_terminate_backend($1)", pid)
        started = time.monotonic()
        await lifecycle.wait_for_change(0.3)  # returns by its timeout even while the listener is down
        assert time.monotonic() - started < 1.5
        deadline = time.monotonic() + 5
        while lifecycle._listener is None or lifecycle._listener.get_server_pid() == pid:
            assert time.monotonic() < deadline, "the listener did not reconnect"
            await asyncio.sleep(0.05)
        model = model_name()
        waiter = asyncio.create_task(lifecycle.wait_for_change(10))
        await asyncio.sleep(0.1)
        async with store.locked(model) as tx:
            await tx.append_event(event(model))
        committed = time.monotonic()
        await asyncio.wait_for(waiter, 1.0)
        assert time.monotonic() - committed < 1.0
    finally:
        await lifecycle.close()


async def test_pruning_keeps_every_sequence_from_the_first_retained_one(quiet):
    lifecycle, _ = quiet  # the quiet database: no other test prunes or writes meanwhile
    old, new = datetime(2000, 1, 1, tzinfo=timezone.utc), now()
    await lifecycle.prune_events(new + timedelta(days=1))  # whatever earlier tests left
    head = await lifecycle.head_sequence()
    assert await lifecycle.first_retained_sequence() == head + 1
    assert await lifecycle.prune_events(new + timedelta(days=1)) == 0
    sequences = []
    for at in (old, old, new, old, new):  # the fourth is stamped out of order
        async with lifecycle.locked("m") as tx:
            sequences.append(await tx.append_event(event("m", at=at)))
    assert sequences == [head + i for i in range(1, 6)]
    assert await lifecycle.first_retained_sequence() == head + 1

    assert await lifecycle.prune_events(datetime(2001, 1, 1, tzinfo=timezone.utc)) == 2
    assert await lifecycle.first_retained_sequence() == head + 3
    assert [e.sequence for e in await lifecycle.events_after(0, head + 5, 100)] == sequences[2:]  # no hole

    assert await lifecycle.prune_events(new + timedelta(seconds=1)) == 3
    assert await lifecycle.head_sequence() == head + 5
    assert await lifecycle.first_retained_sequence() == head + 6
    assert await lifecycle.prune_events(new + timedelta(days=1)) == 0
    async with lifecycle.locked("m") as tx:  # the numbering goes on
        assert await tx.append_event(event("m")) == head + 6
    assert await lifecycle.first_retained_sequence() == head + 6


# ----- the audit history -------------------------------------------------------------------

async def test_transitions_pages_filters_and_production_at_across_promotions(store):
    model, other = model_name(), model_name()
    # A window of time no other test uses.
    base = datetime(2001, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=random.randrange(10**6))
    t = [base + timedelta(minutes=i) for i in range(10)]
    D, S, P, A = Stage.DEVELOPMENT, Stage.STAGING, Stage.PRODUCTION, Stage.ARCHIVED
    promote2, promote3 = f"B-{uuid.uuid4().hex}", f"a-{uuid.uuid4().hex}"
    written = [
        transition(model, "1", D, S, t[1]),
        transition(model, "1", S, P, t[2]),
        transition(model, "2", D, S, t[3], actor="bob"),
        # a promotion: the old version archived, then the new one promoted, at one instant
        transition(model, "1", P, A, t[4], caused_by=promote2),
        transition(model, "2", S, P, t[4], transition_id=promote2, actor="bob"),
        # another, written the other way round
        transition(model, "3", S, P, t[5], transition_id=promote3),
        transition(model, "2", P, A, t[5], actor="bob", caused_by=promote3),
        # demoted: nothing in Production
        transition(model, "3", P, A, t[6]),
        # restored
        transition(model, "1", A, P, t[7], actor="bob"),
        transition(other, "1", S, P, t[4]),
    ]
    for entry in written:
        async with store.locked(entry.model_name) as tx:
            await tx.record_transition(entry)

    def expected(**match) -> list[StageTransition]:
        rows = [w for w in written if all(getattr(w, k) == v for k, v in match.items())]
        return sorted(rows, key=lambda w: (w.time, w.transition_id), reverse=True)

    async def all_pages(query: TransitionQuery) -> list[StageTransition]:
        found: list[StageTransition] = []
        while True:
            page = await store.transitions(query)
            assert len(page) <= query.limit
            found += page
            if len(page) < query.limit:
                return found
            query = dataclasses.replace(query, before=(page[-1].time, page[-1].transition_id))

    everything = expected(model_name=model)
    assert await store.transitions(TransitionQuery(model, None, None, None, None, 100)) == everything
    assert await all_pages(TransitionQuery(model, None, None, None, None, 3)) == everything
    assert await all_pages(TransitionQuery(model, None, None, None, None, 1)) == everything
    assert await all_pages(TransitionQuery(model, "2", None, None, None, 2)) == expected(model_name=model, version="2")
    by_bob = await all_pages(TransitionQuery(model, None, None, None, "bob", 2))
    assert by_bob == expected(model_name=model, actor="bob")
    # start inclusive, end exclusive
    window = await store.transitions(TransitionQuery(model, None, t[4], t[6], None, 100))
    assert window == [w for w in everything if t[4] <= w.time < t[6]]
    assert len(window) == 4
    # every model, within this test's window of time
    both = await all_pages(TransitionQuery(None, None, t[0], t[9], None, 4))
    assert both == sorted(written, key=lambda w: (w.time, w.transition_id), reverse=True)
    assert await store.transitions(TransitionQuery(model, None, None, None, None, 0)) == []

    second = timedelta(seconds=1)
    assert await store.production_at(model, t[0]) is None
    assert await store.production_at(model, t[1]) is None
    assert await store.production_at(model, t[2]) == "1"
    assert await store.production_at(model, t[3] + second) == "1"
    assert await store.production_at(model, t[4]) == "2"
    assert await store.production_at(model, t[5] - second) == "2"
    assert await store.production_at(model, t[5]) == "3"
    assert await store.production_at(model, t[6]) is None
    assert await store.production_at(model, t[7] - second) is None
    assert await store.production_at(model, t[7]) == "1"
    assert await store.production_at(model, t[9]) == "1"
    assert await store.production_at(other, t[5]) == "1"
    assert await store.production_at(model_name(), t[9]) is None


# ----- failures ----------------------------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_an_unreachable_database_is_backend_unavailable_quickly():
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await PostgresLifecycle.connect(f"postgresql://postgres@127.0.0.1:{closed_port()}/postgres",
                                        timeout_seconds=1.0)
    assert time.monotonic() - started < 3.0


async def test_a_closed_store_is_backend_unavailable_and_pings_false(database_url):
    lifecycle = await PostgresLifecycle.connect(database_url, timeout_seconds=TIMEOUT)
    assert await lifecycle.ping()
    await lifecycle.close()
    assert not await lifecycle.ping()
    with pytest.raises(BackendUnavailable):
        await lifecycle.head_sequence()
    with pytest.raises(BackendUnavailable):
        async with lifecycle.locked("m"):
            pass
    started = time.monotonic()
    await lifecycle.wait_for_change(0.1)
    assert time.monotonic() - started < 1.0
    await lifecycle.close()  # twice is fine

"""ExperimentStore and CanaryStore over PostgreSQL (asyncpg): experiments and their history,
canaries with their audit trail and leases, and the change feed of both.

Tables (created by the alembic revisions in ./migrations, version table
`router_alembic_version`, run by `connect` under an advisory lock so replicas starting
together do not race):
  router_experiments         name (primary key; never reused) -> model_name, state, revision,
                             change_seq, create_time, update_time, and the whole experiment as
                             jsonb `body`. A partial unique index on (model_name) WHERE state =
                             'RUNNING' keeps at most one running experiment per model whichever
                             replica writes; a write it rejects raises ModelBusy(holder,
                             kind "experiment").
  router_experiment_changes  the history: (experiment, revision) -> action, actor, reason,
                             fields, time, `after`, the experiment as that write stored it, and
                             `figures` (the adaptive allocation's, for REWEIGHTED)
  router_canaries            canary_id (primary key) -> model_name, state, revision, change_seq,
                             create_time, update_time, request_id ("" or unique: StartCanary's
                             dedupe key), and the whole canary as jsonb `body`. A partial unique
                             index on (model_name) WHERE state IN ('RUNNING', 'PAUSED',
                             'AWAITING_PROMOTION') keeps at most one active canary per model.
  router_canary_events       the audit trail: (canary_id, sequence 1, 2, ...) -> body, time
  router_canary_leases       canary_id (primary key) -> holder, expires_at (the database's clock):
                             which replica drives an active canary; deleted when it ends
  router_change_seq          a sequence: every write of either an experiment or a canary sets
                             its change_seq = nextval (one order for both feeds)

Order. `list` / `list_canaries` are newest first by (create_time DESC, name / canary_id DESC),
paged by keyset; `history` / `canary_events` are oldest first; `changed_since(cursor)` /
`canaries_changed_since(cursor)` give the rows of their table with change_seq > cursor in
change_seq order, and the largest one as the next cursor.

Locks. A sequence hands out numbers in call order, not commit order: a write numbered 5 could
commit after a reader saw 6 and moved its cursor past 5, and be missed for good. So every
writing transaction, of experiments and canaries alike, first takes one transaction-level
advisory lock (a fixed key) and only then calls nextval: writers run one at a time, and each
takes its number after the previous one committed (a lock is released after its commit is
visible). A reader that sees number n therefore sees every committed write numbered below n.
Writes are rare; the lock costs little.
The same lock keeps "one running experiment OR one active canary per model": an index cannot
span two tables, so each write that makes an experiment RUNNING or a canary active reads the
other table (and, for a canary, its own) after taking the lock and raises ModelBusy(holder,
kind) when the model is taken. Every writer of both tables holds the lock, so no write can come
between that read and the commit. The partial unique indexes stay as a backstop for each
table; a write one of them rejects reads the holder and raises ModelBusy too.
Leases are not writes of the feed and do not take the lock: acquire_lease is one statement
that locks the canary's row FOR SHARE while it is active and upserts the lease only where the
lease is free, expired or the caller's own. A write that ends a canary updates that row (so it
waits for such a statement, or makes it find the canary no longer active) and then deletes the
lease in its own transaction: no lease outlives its canary's active states.
Every write also runs pg_notify('router_changes', ''), delivered at commit to every replica's
listener connection (`wait_for_change`); lease changes notify nobody.

Every failure to reach PostgreSQL (refused, timed out, pool exhausted, connection lost, server
shutting down, read-only standby) raises ports.StoreUnavailable; no asyncpg exception leaves
this module. Commands time out after `timeout_seconds` (a lock wait included).

The JSON in `body` and `after` is the store's own format (`_dump_experiment`, `_dump_canary`,
`_dump_event`), not a public contract: enums by name (metric kinds by value), times ISO-8601 in
UTC, ordered things as lists (jsonb does not keep the order of an object's keys), thresholds
and side stats as objects. A definition read back goes through define_experiment (a canary's
plan through check_plan and check_version) again, so a stored one is checked like a new one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import math
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence, TypeVar

import asyncpg
from asyncpg import exceptions as pg_errors

from ...errors import InvalidArgument
from ...runtime import postgres_migrations as migrations
from .domain.allocation import Allocation, AllocationMode, VariantFigures
from .domain.assignment import BucketLayout, Variant, define_experiment
from .domain.canary import (
    ACTIVE_STATES,
    Canary,
    CanaryEvent,
    CanaryEventType,
    CanaryState,
    SideStats,
    Thresholds,
    check_plan,
    check_version,
)
from .domain.model import (
    ChangeAction,
    Experiment,
    ExperimentChange,
    ExperimentState,
    OutcomeMetric,
    ShadowConfig,
)
from .domain.ports import ExperimentExists, ModelBusy, StoreUnavailable
from .domain.statistics import MetricKind

log = logging.getLogger(__name__)

CHANNEL = "router_changes"
VERSION_TABLE = "router_alembic_version"  # also in migrations/env.py
MIGRATIONS = Path(__file__).with_name("migrations")
RUNNING_INDEX = "router_experiments_one_running"  # the partial unique index (migrations r0001)
ACTIVE_CANARY_INDEX = "router_canaries_one_active"  # the partial unique index (migrations r0002)
REQUEST_ID_INDEX = "router_canaries_request_id"  # (migrations r0002)
# ACTIVE_STATES in SQL, written as the one-active index's predicate is (so the planner uses it).
ACTIVE_SQL = "('RUNNING', 'PAUSED', 'AWAITING_PROMOTION')"

# Advisory locks in the two-int4-key form; the first key says whose lock it is.
_LOCK_NAMESPACE = 0x524F5554  # 'ROUT'
_WRITE_LOCK = f"SELECT pg_advisory_xact_lock({_LOCK_NAMESPACE}, 1)"  # every write: see "Locks"
_MIGRATION_LOCK_KEY = 2  # (namespace, 2): schema upgrades

_APPLICATION_NAME = "ml-serving-router"
_POOL_SIZE = 10
_LISTENER_KEEPALIVE_SECONDS = 5.0  # the listener connection is checked this often
_RECONNECT_BACKOFF = (0.1, 5.0)  # first and longest pause between listener reconnections
_BUSY_ATTEMPTS = 3  # a write the index rejected is retried when its holder is gone by the follow-up read

_WHAT = "the router's experiment store (PostgreSQL)"
SCHEMA = migrations.Schema(MIGRATIONS, VERSION_TABLE, (_LOCK_NAMESPACE, _MIGRATION_LOCK_KEY), _APPLICATION_NAME)


# ----- errors --------------------------------------------------------------------------------

# Failures that mean "cannot reach / cannot serve now": nothing is known to have changed.
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable, ... (TimeoutError too: command, acquire, connect)
    asyncio.TimeoutError,
    pg_errors.InterfaceError,  # connection closed / pool closing
    pg_errors.InternalClientError,
    pg_errors.PostgresConnectionError,  # SQLSTATE 08
    pg_errors.OperatorInterventionError,  # 57: shutting down, cannot connect now, cancelled
    pg_errors.InsufficientResourcesError,  # 53: too many connections, disk full, ...
    pg_errors.TransactionRollbackError,  # 40: serialization failure, deadlock (rolled back)
    pg_errors.ReadOnlySQLTransactionError,  # 25006: connected to a standby (failover)
    pg_errors.InvalidAuthorizationSpecificationError,  # 28: refused login
    pg_errors.InvalidCatalogNameError,  # 3D000: no such database
)


def _translated(exc: BaseException) -> Exception | None:
    """The exception to raise instead of a library's, or None to let it through."""
    if isinstance(exc, (StoreUnavailable, ExperimentExists, ModelBusy)):
        return None
    if isinstance(exc, pg_errors.ClientConfigurationError):
        return ValueError(f"{_WHAT} misconfigured: {exc}")
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        log.debug("%s unavailable: %s: %s", _WHAT, type(exc).__name__, exc)
        return StoreUnavailable(_WHAT)
    if isinstance(exc, pg_errors.PostgresError):
        return RuntimeError(f"{_WHAT} failed: {type(exc).__name__}: {exc}")
    return None


def _translate_errors(method):
    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            replacement = _translated(exc)
            if replacement is None:
                raise
            raise replacement from exc

    return wrapper


# ----- migrations ----------------------------------------------------------------------------

async def migrate(dsn: str, timeout_seconds: float) -> None:
    """Run the router's pending migrations; StoreUnavailable when PostgreSQL cannot be reached
    (or another replica held the migration lock for too long)."""
    try:
        await migrations.upgrade(SCHEMA, dsn, timeout_seconds)
    except migrations.UNREACHABLE as exc:
        log.warning("cannot migrate %s: %s", _WHAT, exc)
        raise StoreUnavailable(_WHAT) from exc


# ----- SQL -----------------------------------------------------------------------------------

# The change row is written by the same statement as the experiment (a data-modifying CTE),
# with the body the experiment row got as `after`; the notification goes out only if a row
# was written. Parameters $6 to $11 (create) / $8 to $13 (replace): the change's own fields.
_LOG_AND_NOTIFY = """
    logged AS (
        INSERT INTO router_experiment_changes (experiment, revision, action, actor, reason, fields, time, after,
                                               figures)
        SELECT name, revision, ${0}, ${1}, ${2}, ${3}::text[], ${4}, body, ${5}::jsonb FROM stored)
    SELECT pg_notify('""" + CHANNEL + "', '') FROM stored"

_INSERT = """
    WITH stored AS (
        INSERT INTO router_experiments (name, model_name, state, revision, change_seq, create_time, update_time,
                                        body)
        VALUES ($1, $2, $3, 1, nextval('router_change_seq'), $4, $4, $5::jsonb)
        ON CONFLICT (name) DO NOTHING
        RETURNING name, revision, body),""" + _LOG_AND_NOTIFY.format(6, 7, 8, 9, 10, 11)

_UPDATE = """
    WITH stored AS (
        UPDATE router_experiments
        SET model_name = $3, state = $4, revision = $5, change_seq = nextval('router_change_seq'),
            update_time = $6, body = $7::jsonb
        WHERE name = $1 AND revision = $2
        RETURNING name, revision, body),""" + _LOG_AND_NOTIFY.format(8, 9, 10, 11, 12, 13)

# Read after the write lock (so with a snapshot taken after it): the store's clock, the row,
# and the model's active canary ($2: the model the experiment is written with).
_CURRENT = """
    SELECT clock_timestamp() AS now, e.create_time, e.revision,
           (SELECT canary_id FROM router_canaries WHERE model_name = $2 AND state IN """ + ACTIVE_SQL + """
            ORDER BY canary_id LIMIT 1) AS active_canary
    FROM (VALUES (1)) AS one LEFT JOIN router_experiments AS e ON e.name = $1"""

_HOLDER = "SELECT name FROM router_experiments WHERE model_name = $1 AND state = 'RUNNING' AND name <> $2"

_LIST = """
    SELECT body FROM router_experiments
    WHERE (cardinality($1::text[]) = 0 OR state = ANY($1::text[]))
      AND ($2 = '' OR model_name = $2)
      AND ($3::timestamptz IS NULL OR (create_time, name) < ($3::timestamptz, $4::text))
    ORDER BY create_time DESC, name DESC
    LIMIT $5"""

_HISTORY = """
    SELECT experiment, revision, action, actor, reason, fields, time, after, figures FROM router_experiment_changes
    WHERE experiment = $1 AND revision > $2
    ORDER BY revision
    LIMIT $3"""

_CHANGED_SINCE = "SELECT change_seq, body FROM router_experiments WHERE change_seq > $1 ORDER BY change_seq"
# The first read (cursor 0) leaves stopped experiments and finished canaries out: they are many
# after a while and assignment never needs them (the catalog fetches one when asked by name).
# The head is read first, so a write committed between the two reads comes again next time.
_EXPERIMENTS_HEAD = "SELECT coalesce(max(change_seq), 0) FROM router_experiments"
_LIVE_EXPERIMENTS = "SELECT change_seq, body FROM router_experiments WHERE state <> 'STOPPED' ORDER BY change_seq"

# Canaries. Read after the write lock, as _CURRENT: the store's clock, the canary's row and its
# last event, the canary a non-empty request id ($2) created, and what holds the model ($3): a
# RUNNING experiment, another active canary.
_CANARY_CURRENT = """
    SELECT clock_timestamp() AS now, c.create_time, c.revision, c.request_id,
           (SELECT coalesce(max(sequence), 0) FROM router_canary_events WHERE canary_id = $1) AS last_sequence,
           (SELECT body FROM router_canaries WHERE request_id = $2 AND request_id <> '') AS requested,
           (SELECT name FROM router_experiments WHERE model_name = $3 AND state = 'RUNNING'
            ORDER BY name LIMIT 1) AS running_experiment,
           (SELECT canary_id FROM router_canaries WHERE model_name = $3 AND state IN """ + ACTIVE_SQL + """
              AND canary_id <> $1 ORDER BY canary_id LIMIT 1) AS active_canary
    FROM (VALUES (1)) AS one LEFT JOIN router_canaries AS c ON c.canary_id = $1"""

# The events ($n: sequences, bodies, times, as arrays) are written by the same statement as
# the canary row, and only if it was written; so is the notification.
_LOG_EVENTS_AND_NOTIFY = """
    logged AS (
        INSERT INTO router_canary_events (canary_id, sequence, body, time)
        SELECT stored.canary_id, e.sequence, e.body::jsonb, e.time
        FROM stored, unnest(${0}::bigint[], ${1}::text[], ${2}::timestamptz[]) AS e (sequence, body, time))
    SELECT pg_notify('""" + CHANNEL + "', '') FROM stored"

_INSERT_CANARY = """
    WITH stored AS (
        INSERT INTO router_canaries (canary_id, model_name, state, revision, change_seq, create_time, update_time,
                                     request_id, body)
        VALUES ($1, $2, $3, 1, nextval('router_change_seq'), $4, $4, $5, $6::jsonb)
        ON CONFLICT (canary_id) DO NOTHING
        RETURNING canary_id),""" + _LOG_EVENTS_AND_NOTIFY.format(7, 8, 9)

_UPDATE_CANARY = """
    WITH stored AS (
        UPDATE router_canaries
        SET model_name = $3, state = $4, revision = $5, change_seq = nextval('router_change_seq'),
            update_time = $6, body = $7::jsonb
        WHERE canary_id = $1 AND revision = $2
        RETURNING canary_id),""" + _LOG_EVENTS_AND_NOTIFY.format(8, 9, 10)

# A statement of its own, after the update: its snapshot then holds every lease committed
# before the update took the canary's row (see "Locks").
_DELETE_LEASE = "DELETE FROM router_canary_leases WHERE canary_id = $1"

_CANARY_HOLDER = ("SELECT canary_id FROM router_canaries WHERE model_name = $1 AND state IN " + ACTIVE_SQL
                  + " AND canary_id <> $2")

_LIST_CANARIES = """
    SELECT body FROM router_canaries
    WHERE (cardinality($1::text[]) = 0 OR state = ANY($1::text[]))
      AND ($2 = '' OR model_name = $2)
      AND ($3::timestamptz IS NULL OR (create_time, canary_id) < ($3::timestamptz, $4::text))
    ORDER BY create_time DESC, canary_id DESC
    LIMIT $5"""

_CANARY_EVENTS = """
    SELECT body FROM router_canary_events
    WHERE canary_id = $1 AND sequence > $2
    ORDER BY sequence
    LIMIT $3"""

_CANARIES_CHANGED_SINCE = "SELECT change_seq, body FROM router_canaries WHERE change_seq > $1 ORDER BY change_seq"
_CANARIES_HEAD = "SELECT coalesce(max(change_seq), 0) FROM router_canaries"
_ACTIVE_CANARIES = ("SELECT change_seq, body FROM router_canaries WHERE state IN " + ACTIVE_SQL
                    + " ORDER BY change_seq")

# Take or renew a lease: one statement, the database's clock only. The canary's row is locked
# FOR SHARE while it is active (a write ending it waits, or this finds it ended); the lease is
# written where free, expired or already the holder's. A row comes back iff the holder holds it.
_ACQUIRE_LEASE = """
    WITH canary AS (
        SELECT canary_id FROM router_canaries WHERE canary_id = $1 AND state IN """ + ACTIVE_SQL + """
        FOR SHARE)
    INSERT INTO router_canary_leases AS lease (canary_id, holder, expires_at)
    SELECT canary_id, $2, clock_timestamp() + make_interval(secs => $3) FROM canary
    ON CONFLICT (canary_id) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
        WHERE lease.holder = EXCLUDED.holder OR lease.expires_at < clock_timestamp()
    RETURNING holder"""

_RELEASE_LEASE = "DELETE FROM router_canary_leases WHERE canary_id = $1 AND holder = $2"


# ----- the store -----------------------------------------------------------------------------

async def _end_open_transaction(conn: asyncpg.Connection) -> None:
    """What a pooled connection needs before reuse. The store keeps no session state (locks are
    transaction-scoped, LISTEN has its own connection, nothing is SET), so asyncpg's default
    reset, a round trip on every release, is skipped; only a transaction left open is ended."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


_T = TypeVar("_T")
_Write = Callable[[asyncpg.Connection, asyncpg.Record], Awaitable["Experiment | None"]]
_Holder = Callable[[], Awaitable["str | None"]]


class PostgresExperimentStore:
    """The ExperimentStore port. Build it with `await PostgresExperimentStore.connect(url)`."""

    def __init__(self, dsn: str, pool: asyncpg.Pool, timeout_seconds: float):
        self._dsn = dsn
        self._pool = pool
        self._timeout = timeout_seconds
        self._closed = False
        self._changed = asyncio.Event()  # replaced at each notification: one generation per event
        self._listener: asyncpg.Connection | None = None
        self._listener_task: asyncio.Task | None = None

    @classmethod
    async def connect(cls, url: str, *, timeout_seconds: float = 5.0) -> PostgresExperimentStore:
        """Migrate, open the pool and the listening connection; StoreUnavailable if PostgreSQL
        cannot be reached."""
        await migrate(url, timeout_seconds)
        try:
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=_POOL_SIZE, command_timeout=timeout_seconds, timeout=timeout_seconds,
                server_settings={"application_name": _APPLICATION_NAME}, reset=_end_open_transaction,
            )
        except Exception as exc:
            raise (_translated(exc) or exc) from exc
        store = cls(url, pool, timeout_seconds)
        try:
            listener, lost = await store._open_listener()
        except BaseException:
            pool.terminate()
            raise
        store._listener_task = asyncio.create_task(store._keep_listening(listener, lost),
                                                   name="router-experiment-listener")
        return store

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._listener_task is not None:
            self._listener_task.cancel()
            await asyncio.gather(self._listener_task, return_exceptions=True)
        if self._listener is not None:
            self._listener.terminate()
            self._listener = None
        try:
            await asyncio.wait_for(self._pool.close(), self._timeout)
        except Exception:  # connections still busy or unreachable
            self._pool.terminate()
        self._wake()

    async def ping(self) -> bool:
        """Whether PostgreSQL answers (for health checking); never raises."""
        if self._closed:
            return False
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn:
                return await conn.fetchval("SELECT 1") == 1
        except Exception:
            return False

    # ----- writes ------------------------------------------------------------------------

    @_translate_errors
    async def create(self, experiment: Experiment, change: ExperimentChange) -> Experiment:
        async def insert(conn: asyncpg.Connection, current: asyncpg.Record) -> Experiment:
            if current["revision"] is not None:
                raise ExperimentExists(experiment.name)
            if experiment.active and current["active_canary"] is not None:
                raise ModelBusy(current["active_canary"], kind="canary")
            now = current["now"]
            start = now if experiment.active and experiment.start_time is None else experiment.start_time
            stored = experiment.with_changes(revision=1, create_time=now, update_time=now, start_time=start)
            row = await conn.fetchrow(_INSERT, stored.name, stored.model_name, stored.state.name, now,
                                      _json(_dump_experiment(stored)), *_change_args(change))
            if row is None:  # written meanwhile by a writer that did not take the lock
                raise ExperimentExists(experiment.name)
            return stored

        stored = await self._write(experiment, insert)
        assert stored is not None
        return stored

    @_translate_errors
    async def replace(self, experiment: Experiment, expected_revision: int,
                      change: ExperimentChange) -> Experiment | None:
        if experiment.revision != expected_revision + 1:
            raise ValueError(f"experiment {experiment.name!r} must have revision {expected_revision + 1} "
                             f"to replace revision {expected_revision}, got {experiment.revision}")

        async def update(conn: asyncpg.Connection, current: asyncpg.Record) -> Experiment | None:
            if current["revision"] != expected_revision:
                return None
            if experiment.active and current["active_canary"] is not None:
                raise ModelBusy(current["active_canary"], kind="canary")
            stored = experiment.with_changes(create_time=current["create_time"], update_time=current["now"])
            row = await conn.fetchrow(_UPDATE, stored.name, expected_revision, stored.model_name, stored.state.name,
                                      stored.revision, stored.update_time, _json(_dump_experiment(stored)),
                                      *_change_args(change))
            return stored if row is not None else None

        return await self._write(experiment, update)

    async def _write(self, experiment: Experiment, write: _Write) -> Experiment | None:
        """One experiment write under the write lock: `write(conn, current)` gets the store's
        clock, the experiment's row and its model's active canary as of after the lock. When the
        one-running index rejects it, ModelBusy(the running experiment) (see `_serialized`)."""
        async def work(conn: asyncpg.Connection) -> Experiment | None:
            return await write(conn, await conn.fetchrow(_CURRENT, experiment.name, experiment.model_name))

        async def running() -> str | None:
            return await self._fetchval(_HOLDER, experiment.model_name, experiment.name)

        return await self._serialized(work, {RUNNING_INDEX: ("experiment", running)})

    async def _serialized(self, work: Callable[[asyncpg.Connection], Awaitable[_T]],
                          conflicts: dict[str, tuple[str, _Holder | None]]) -> _T:
        """One write transaction: `work(conn)` runs after the write lock is taken. When a unique
        index named in `conflicts` rejects the write (a writer that did not take the lock), its
        (kind, holder query) says what holds the model, read in a follow-up query: ModelBusy
        (holder, kind), or, if it is gone meanwhile (or there is no query), the write is tried
        again from the start."""
        kind = "experiment"
        for _ in range(_BUSY_ATTEMPTS):
            try:
                async with self._transaction() as conn:
                    await conn.execute(_WRITE_LOCK)
                    return await work(conn)
            except pg_errors.UniqueViolationError as exc:
                if exc.constraint_name not in conflicts:
                    raise
                kind, holder_of = conflicts[exc.constraint_name]
            holder = await holder_of() if holder_of is not None else None
            if holder is not None:
                raise ModelBusy(holder, kind=kind)
        raise ModelBusy("", kind=kind)  # busy every time, its holder stopping and another starting

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._pool.acquire(timeout=self._timeout) as conn:
            async with conn.transaction():
                yield conn

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self._pool.acquire(timeout=self._timeout) as conn:
            return await conn.fetch(query, *args)

    async def _fetchval(self, query: str, *args: Any) -> Any:
        async with self._pool.acquire(timeout=self._timeout) as conn:
            return await conn.fetchval(query, *args)

    async def _execute(self, query: str, *args: Any) -> None:
        async with self._pool.acquire(timeout=self._timeout) as conn:
            await conn.execute(query, *args)

    # ----- reads -------------------------------------------------------------------------

    @_translate_errors
    async def get(self, name: str) -> Experiment | None:
        body = await self._fetchval("SELECT body FROM router_experiments WHERE name = $1", name)
        return _load_body(body) if body is not None else None

    @_translate_errors
    async def list(self, *, states: Sequence[ExperimentState] = (), model_name: str = "",
                   before: tuple[datetime, str] | None = None, limit: int = 100) -> list[Experiment]:
        if limit <= 0:
            return []
        before_time, before_name = (_utc(before[0]), before[1]) if before is not None else (None, None)
        rows = await self._fetch(_LIST, [s.name for s in states], model_name, before_time, before_name, limit)
        return [_load_body(row["body"]) for row in rows]

    @_translate_errors
    async def history(self, name: str, *, after_revision: int = 0, limit: int = 100) -> list[ExperimentChange]:
        if limit <= 0:
            return []
        rows = await self._fetch(_HISTORY, name, after_revision, limit)
        return [_change_from_row(row) for row in rows]

    @_translate_errors
    async def changed_since(self, cursor: int) -> tuple[int, list[Experiment]]:
        if cursor == 0:
            head = await self._fetchval(_EXPERIMENTS_HEAD)
            return head, [_load_body(row["body"]) for row in await self._fetch(_LIVE_EXPERIMENTS)]
        rows = await self._fetch(_CHANGED_SINCE, cursor)
        if not rows:
            return cursor, []
        return rows[-1]["change_seq"], [_load_body(row["body"]) for row in rows]

    # ----- canaries: writes ----------------------------------------------------------------

    @_translate_errors
    async def create_canary(self, canary: Canary, event: CanaryEvent) -> tuple[Canary, bool]:
        async def insert(conn: asyncpg.Connection) -> tuple[Canary, bool]:
            current = await conn.fetchrow(_CANARY_CURRENT, canary.canary_id, canary.request_id, canary.model_name)
            if current["requested"] is not None:  # that request's retry: what it created, nothing written
                return _load_canary_body(current["requested"]), False
            if current["revision"] is not None:
                raise ValueError(f"canary {canary.canary_id!r} exists (ids are never reused)")
            if canary.active and (busy := _model_busy(current)) is not None:
                raise busy
            now = current["now"]
            stored = canary.with_changes(revision=1, create_time=now, update_time=now, step_start_time=now)
            row = await conn.fetchrow(_INSERT_CANARY, stored.canary_id, stored.model_name, stored.state.name, now,
                                      stored.request_id, _json(_dump_canary(stored)),
                                      *_event_args(stored.canary_id, [event], 0))
            if row is None:  # written meanwhile by a writer that did not take the lock
                raise ValueError(f"canary {canary.canary_id!r} exists (ids are never reused)")
            return stored, True

        return await self._serialized(insert, self._canary_conflicts(canary))

    @_translate_errors
    async def replace_canary(self, canary: Canary, expected_revision: int,
                             events: Sequence[CanaryEvent]) -> Canary | None:
        """As the port says; also: create_time and request_id stay as stored, events get the
        canary's id, and a canary leaving the active states loses its lease in the same
        transaction."""
        if canary.revision != expected_revision + 1:
            raise ValueError(f"canary {canary.canary_id!r} must have revision {expected_revision + 1} "
                             f"to replace revision {expected_revision}, got {canary.revision}")

        async def update(conn: asyncpg.Connection) -> Canary | None:
            current = await conn.fetchrow(_CANARY_CURRENT, canary.canary_id, "", canary.model_name)
            if current["revision"] != expected_revision:
                return None
            if canary.active and (busy := _model_busy(current)) is not None:
                raise busy
            now = current["now"]
            step_start = now if canary.step_start_time is None else canary.step_start_time
            stored = canary.with_changes(create_time=current["create_time"], update_time=now,
                                         request_id=current["request_id"], step_start_time=step_start)
            row = await conn.fetchrow(_UPDATE_CANARY, stored.canary_id, expected_revision, stored.model_name,
                                      stored.state.name, stored.revision, now, _json(_dump_canary(stored)),
                                      *_event_args(stored.canary_id, events, current["last_sequence"]))
            if row is None:
                return None
            if not stored.active:
                await conn.execute(_DELETE_LEASE, stored.canary_id)
            return stored

        return await self._serialized(update, self._canary_conflicts(canary))

    def _canary_conflicts(self, canary: Canary) -> dict[str, tuple[str, _Holder | None]]:
        """For `_serialized`: the one-active index names the model's other active canary; a
        request id taken meanwhile needs no query (the retry finds that canary)."""
        async def active() -> str | None:
            return await self._fetchval(_CANARY_HOLDER, canary.model_name, canary.canary_id)

        return {ACTIVE_CANARY_INDEX: ("canary", active), REQUEST_ID_INDEX: ("canary", None)}

    # ----- canaries: reads -----------------------------------------------------------------

    @_translate_errors
    async def get_canary(self, canary_id: str) -> Canary | None:
        body = await self._fetchval("SELECT body FROM router_canaries WHERE canary_id = $1", canary_id)
        return _load_canary_body(body) if body is not None else None

    @_translate_errors
    async def list_canaries(self, *, model_name: str = "", states: Sequence[CanaryState] = (),
                            before: tuple[datetime, str] | None = None, limit: int = 100) -> list[Canary]:
        if limit <= 0:
            return []
        before_time, before_id = (_utc(before[0]), before[1]) if before is not None else (None, None)
        rows = await self._fetch(_LIST_CANARIES, [s.name for s in states], model_name, before_time, before_id, limit)
        return [_load_canary_body(row["body"]) for row in rows]

    @_translate_errors
    async def canary_events(self, canary_id: str, *, after_sequence: int = 0, limit: int = 100) -> list[CanaryEvent]:
        if limit <= 0:
            return []
        rows = await self._fetch(_CANARY_EVENTS, canary_id, after_sequence, limit)
        return [_load_event_body(row["body"]) for row in rows]

    @_translate_errors
    async def canaries_changed_since(self, cursor: int) -> tuple[int, list[Canary]]:
        if cursor == 0:
            head = await self._fetchval(_CANARIES_HEAD)
            return head, [_load_canary_body(row["body"]) for row in await self._fetch(_ACTIVE_CANARIES)]
        rows = await self._fetch(_CANARIES_CHANGED_SINCE, cursor)
        if not rows:
            return cursor, []
        return rows[-1]["change_seq"], [_load_canary_body(row["body"]) for row in rows]

    # ----- canaries: leases ----------------------------------------------------------------

    @_translate_errors
    async def acquire_lease(self, canary_id: str, holder: str, ttl_s: float) -> bool:
        """As the port says; False for a canary that is not active (or not there). Expiry and
        its check are the database's clock (clock_timestamp, so a wait for a lock counts)."""
        if not holder:
            raise ValueError("a lease needs a holder")
        if not (math.isfinite(ttl_s) and ttl_s >= 0):
            raise ValueError(f"a lease's ttl must be a finite number of seconds, at least 0, got {ttl_s!r}")
        return await self._fetchval(_ACQUIRE_LEASE, canary_id, holder, float(ttl_s)) is not None

    @_translate_errors
    async def release_lease(self, canary_id: str, holder: str) -> None:
        """Free the lease if `holder` holds it (expired or not); otherwise nothing."""
        await self._execute(_RELEASE_LEASE, canary_id, holder)

    # ----- notifications -----------------------------------------------------------------

    async def wait_for_change(self, timeout_s: float) -> None:
        """Return at the next NOTIFY on the channel (any replica's commit), when the listener
        reconnects (notifications may have been missed), or after timeout_s; never raises."""
        changed = self._changed
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that arrives as
            # the event fires, and the catalog's close() would then wait for ever.
            async with asyncio.timeout(max(0.0, timeout_s)):
                await changed.wait()
        except TimeoutError:
            pass

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _on_notify(self, _conn, _pid, _channel, _payload: str) -> None:
        self._wake()

    async def _open_listener(self) -> tuple[asyncpg.Connection, asyncio.Event]:
        try:
            conn = await asyncpg.connect(self._dsn, timeout=self._timeout, command_timeout=self._timeout,
                                         server_settings={"application_name": f"{_APPLICATION_NAME}-listener"})
        except Exception as exc:
            raise (_translated(exc) or exc) from exc
        lost = asyncio.Event()
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, self._on_notify)
        except BaseException as exc:
            conn.terminate()
            if isinstance(exc, Exception) and (replacement := _translated(exc)) is not None:
                raise replacement from exc
            raise
        self._listener = conn
        return conn, lost

    async def _keep_listening(self, conn: asyncpg.Connection | None, lost: asyncio.Event) -> None:
        """Watch the listening connection; reopen it (with backoff) when it drops."""
        backoff = _RECONNECT_BACKOFF[0]
        while not self._closed:
            try:
                if conn is None:
                    conn, lost = await self._open_listener()
                    log.info("router experiment listener reconnected")
                    self._wake()  # notifications sent while it was down are lost: wake readers
                try:
                    async with asyncio.timeout(_LISTENER_KEEPALIVE_SECONDS):  # (not wait_for: see above)
                        await lost.wait()
                except TimeoutError:
                    await conn.fetchval("SELECT 1")  # a silently dead link
                    backoff = _RECONNECT_BACKOFF[0]  # it has held for a while
                    continue
                raise ConnectionError("the listening connection closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("router experiment listener down (%s: %s); reconnecting in %.1f s",
                            type(exc).__name__, exc, backoff)
                if conn is not None:
                    conn.terminate()
                    conn = None
                self._listener = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _RECONNECT_BACKOFF[1])


def _change_args(change: ExperimentChange) -> tuple[Any, ...]:
    """The change's own columns ($6.. of _INSERT, $8.. of _UPDATE); experiment, revision and
    `after` come from the row the same statement wrote."""
    return (change.action.name, change.actor, change.reason, list(change.fields), _utc(change.time),
            _json([dataclasses.asdict(f) for f in change.figures]))


def _change_from_row(row: asyncpg.Record) -> ExperimentChange:
    return ExperimentChange(
        experiment=row["experiment"], revision=row["revision"], action=ChangeAction[row["action"]],
        actor=row["actor"], time=_utc(row["time"]), reason=row["reason"], fields=tuple(row["fields"]),
        after=_load_body(row["after"]) if row["after"] is not None else None,
        figures=tuple(VariantFigures(**f) for f in json.loads(row["figures"])),
    )


def _model_busy(current: asyncpg.Record) -> ModelBusy | None:
    """What holds the canary's model, from a _CANARY_CURRENT row: a RUNNING experiment, then
    another active canary (only one of them can, as long as every writer takes the lock)."""
    if current["running_experiment"] is not None:
        return ModelBusy(current["running_experiment"], kind="experiment")
    if current["active_canary"] is not None:
        return ModelBusy(current["active_canary"], kind="canary")
    return None


def _event_args(canary_id: str, events: Sequence[CanaryEvent], last_sequence: int) -> tuple[list, list, list]:
    """The events' columns as arrays (sequences, bodies, times) for _LOG_EVENTS_AND_NOTIFY:
    numbered from last_sequence + 1 in order, each with the canary's id."""
    numbered = [dataclasses.replace(e, canary_id=canary_id, sequence=last_sequence + i)
                for i, e in enumerate(events, 1)]
    return ([e.sequence for e in numbered], [_json(_dump_event(e)) for e in numbered],
            [_utc(e.time) for e in numbered])


def _load_body(body: str) -> Experiment:
    """A stored body as an Experiment; one that no longer passes the checks is an internal error."""
    data = json.loads(body)
    try:
        return _load_experiment(data)
    except (InvalidArgument, KeyError, TypeError, ValueError) as exc:
        name = data.get("definition", {}).get("name") if isinstance(data, dict) else None
        raise RuntimeError(f"{_WHAT}: stored experiment {name!r} cannot be read: {exc}") from exc


def _load_canary_body(body: str) -> Canary:
    """A stored body as a Canary; one that no longer passes the checks is an internal error."""
    data = json.loads(body)
    try:
        return _load_canary(data)
    except (InvalidArgument, KeyError, TypeError, ValueError) as exc:
        canary_id = data.get("canary_id") if isinstance(data, dict) else None
        raise RuntimeError(f"{_WHAT}: stored canary {canary_id!r} cannot be read: {exc}") from exc


def _load_event_body(body: str) -> CanaryEvent:
    data = json.loads(body)
    try:
        return _load_event(data)
    except (KeyError, TypeError, ValueError) as exc:
        where = (data.get("canary_id"), data.get("sequence")) if isinstance(data, dict) else None
        raise RuntimeError(f"{_WHAT}: stored canary event {where!r} cannot be read: {exc}") from exc


# ----- serialisation (the store's own format) --------------------------------------------------

_FORMAT = 1  # body format version, for readers of older rows once the format changes


def _json(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def _utc(value: datetime) -> datetime:
    """An aware UTC datetime (a naive one is taken to be UTC already)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _dump_time(value: datetime | None) -> str | None:
    return _utc(value).isoformat() if value is not None else None


def _load_time(value: str | None) -> datetime | None:
    return _utc(datetime.fromisoformat(value)) if value is not None else None


def _dump_variant(v: Variant) -> dict:
    return {"name": v.name, "model_name": v.model_name, "model_version": v.model_version,
            "weight_bps": v.weight_bps, "control": v.control, "description": v.description}


def _load_variant(data: dict) -> Variant:
    return Variant(name=data["name"], model_name=data["model_name"], model_version=data["model_version"],
                   weight_bps=data["weight_bps"], control=data["control"], description=data.get("description", ""))


def _dump_shadow(shadow: ShadowConfig | None) -> dict | None:
    if shadow is None:
        return None
    return {"model_name": shadow.model_name, "model_version": shadow.model_version, "sample_bps": shadow.sample_bps}


def _load_shadow(data: dict | None) -> ShadowConfig | None:
    if data is None:
        return None
    return ShadowConfig(model_name=data["model_name"], model_version=data["model_version"],
                        sample_bps=data["sample_bps"])


def _dump_experiment(e: Experiment) -> dict:
    """The experiment as JSON-able data. The layout is BucketLayout.as_data() as a list of
    [variant, ranges] pairs, in layout order (a jsonb object would sort its keys)."""
    d = e.definition
    return {
        "format": _FORMAT,
        "definition": {
            "name": d.name, "salt": d.salt, "variants": [_dump_variant(v) for v in d.variants],
            "layout": [[name, ranges] for name, ranges in d.layout.as_data().items()],
            "targeting": d.targeting.as_data(), "overrides": [[user, variant] for user, variant in d.overrides],
            "holdout_bps": d.holdout_bps,
        },
        "metrics": [{"name": m.name, "kind": m.kind.value} for m in e.metrics],
        "state": e.state.name, "description": e.description, "shadow": _dump_shadow(e.shadow),
        "priority": e.priority, "winning_variant": e.winning_variant, "revision": e.revision,
        "created_by": e.created_by, "create_time": _dump_time(e.create_time),
        "update_time": _dump_time(e.update_time), "start_time": _dump_time(e.start_time),
        "stop_time": _dump_time(e.stop_time), "allocation": _dump_allocation(e.allocation),
        "reweight_time": _dump_time(e.reweight_time),
    }


def _dump_allocation(a: Allocation) -> dict:
    return {"mode": a.mode.name, "floor_bps": a.floor_bps, "ceiling_bps": a.ceiling_bps, "interval_s": a.interval_s,
            "min_exposures": a.min_exposures}


def _load_allocation(data: dict | None) -> Allocation:
    if data is None:  # stored before adaptive allocation existed
        return Allocation()
    return Allocation(mode=AllocationMode[data["mode"]], floor_bps=data["floor_bps"], ceiling_bps=data["ceiling_bps"],
                      interval_s=float(data["interval_s"]), min_exposures=data["min_exposures"])


def _load_experiment(data: dict) -> Experiment:
    """The inverse of `_dump_experiment`; the definition is checked again by define_experiment
    (InvalidArgument if it no longer passes)."""
    d = data["definition"]
    definition = define_experiment(
        d["name"], [_load_variant(v) for v in d["variants"]], salt=d["salt"], targeting=d["targeting"],
        overrides=[(user, variant) for user, variant in d["overrides"]], holdout_bps=d["holdout_bps"],
        layout=BucketLayout.from_data(dict(d["layout"]), "stored_experiment.layout"),
        field_name="stored_experiment")
    return Experiment(
        definition=definition,
        metrics=tuple(OutcomeMetric(m["name"], MetricKind(m["kind"])) for m in data["metrics"]),
        state=ExperimentState[data["state"]], description=data.get("description", ""),
        shadow=_load_shadow(data.get("shadow")), priority=data.get("priority", 0),
        winning_variant=data.get("winning_variant", ""), revision=data["revision"],
        created_by=data.get("created_by", ""), create_time=_load_time(data.get("create_time")),
        update_time=_load_time(data.get("update_time")), start_time=_load_time(data.get("start_time")),
        stop_time=_load_time(data.get("stop_time")), allocation=_load_allocation(data.get("allocation")),
        reweight_time=_load_time(data.get("reweight_time")),
    )


def _dump_thresholds(t: Thresholds) -> dict:
    return {"max_error_rate_increase": t.max_error_rate_increase, "max_p99_latency_ratio": t.max_p99_latency_ratio}


def _load_thresholds(data: dict) -> Thresholds:
    return Thresholds(max_error_rate_increase=float(data["max_error_rate_increase"]),
                      max_p99_latency_ratio=float(data.get("max_p99_latency_ratio", 0.0)))


def _dump_canary(c: Canary) -> dict:
    """The canary as JSON-able data: the steps as a list, thresholds as an object."""
    return {
        "format": _FORMAT,
        "canary_id": c.canary_id, "model_name": c.model_name, "stable_version": c.stable_version,
        "canary_version": c.canary_version, "steps_bps": list(c.steps_bps), "step_interval_s": c.step_interval_s,
        "min_requests_per_step": c.min_requests_per_step, "thresholds": _dump_thresholds(c.thresholds),
        "salt": c.salt, "manual_promotion": c.manual_promotion, "state": c.state.name,
        "current_step": c.current_step, "step_start_time": _dump_time(c.step_start_time),
        "rollback_reason": c.rollback_reason, "status_message": c.status_message, "created_by": c.created_by,
        "request_id": c.request_id, "revision": c.revision, "create_time": _dump_time(c.create_time),
        "update_time": _dump_time(c.update_time), "end_time": _dump_time(c.end_time),
    }


def _load_canary(data: dict) -> Canary:
    """The inverse of `_dump_canary`; the plan and the versions are checked again (check_plan,
    check_version: InvalidArgument if they no longer pass)."""
    thresholds = _load_thresholds(data["thresholds"])
    interval, min_requests = float(data["step_interval_s"]), data["min_requests_per_step"]
    steps = check_plan(data["steps_bps"], interval, min_requests, thresholds, "stored_canary")
    return Canary(
        canary_id=data["canary_id"], model_name=data["model_name"],
        stable_version=check_version(data["stable_version"], "stored_canary.stable_version"),
        canary_version=check_version(data["canary_version"], "stored_canary.canary_version"),
        steps_bps=steps, step_interval_s=interval, min_requests_per_step=min_requests, thresholds=thresholds,
        salt=data["salt"], manual_promotion=data.get("manual_promotion", False),
        state=CanaryState[data["state"]], current_step=data.get("current_step", 0),
        step_start_time=_load_time(data.get("step_start_time")), rollback_reason=data.get("rollback_reason", ""),
        status_message=data.get("status_message", ""), created_by=data.get("created_by", ""),
        request_id=data.get("request_id", ""), revision=data["revision"],
        create_time=_load_time(data.get("create_time")), update_time=_load_time(data.get("update_time")),
        end_time=_load_time(data.get("end_time")),
    )


def _dump_side(s: SideStats) -> dict:
    return {"request_count": s.request_count, "error_count": s.error_count, "latency_p99_ms": s.latency_p99_ms}


def _load_side(data: dict | None) -> SideStats:
    if data is None:
        return SideStats()
    return SideStats(request_count=data["request_count"], error_count=data["error_count"],
                     latency_p99_ms=float(data["latency_p99_ms"]))


def _dump_event(e: CanaryEvent) -> dict:
    """The event as JSON-able data: its type by name, each side's stats as an object."""
    return {
        "format": _FORMAT,
        "canary_id": e.canary_id, "sequence": e.sequence, "event_type": e.event_type.name,
        "time": _dump_time(e.time), "from_weight_bps": e.from_weight_bps, "to_weight_bps": e.to_weight_bps,
        "step": e.step, "reason": e.reason, "actor": e.actor, "automatic": e.automatic,
        "stable_stats": _dump_side(e.stable_stats), "canary_stats": _dump_side(e.canary_stats),
    }


def _load_event(data: dict) -> CanaryEvent:
    """The inverse of `_dump_event`."""
    return CanaryEvent(
        canary_id=data["canary_id"], event_type=CanaryEventType[data["event_type"]], time=_load_time(data["time"]),
        from_weight_bps=data["from_weight_bps"], to_weight_bps=data["to_weight_bps"], step=data["step"],
        reason=data.get("reason", ""), actor=data.get("actor", "router"), automatic=data.get("automatic", False),
        stable_stats=_load_side(data.get("stable_stats")), canary_stats=_load_side(data.get("canary_stats")),
        sequence=data["sequence"],
    )

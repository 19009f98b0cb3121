"""ExperimentStore over PostgreSQL (asyncpg): experiments, their history, the change feed.

Tables (created by the alembic revisions in ./migrations, version table
`router_alembic_version`, run by `connect` under an advisory lock so replicas starting
together do not race):
  router_experiments         name (primary key; never reused) -> model_name, state, revision,
                             change_seq, create_time, update_time, and the whole experiment as
                             jsonb `body`. A partial unique index on (model_name) WHERE state =
                             'RUNNING' keeps at most one running experiment per model whichever
                             replica writes; a write it rejects raises ModelBusy(holder).
  router_experiment_changes  the history: (experiment, revision) -> action, actor, reason,
                             fields, time, and `after`, the experiment as that write stored it
  router_change_seq          a sequence: every write sets the experiment's change_seq = nextval

Order. `list` is newest first by (create_time DESC, name DESC), paged by keyset; `history` is
oldest first by revision; `changed_since(cursor)` gives the rows with change_seq > cursor in
change_seq order, and the largest one as the next cursor.

Locks. A sequence hands out numbers in call order, not commit order: a write numbered 5 could
commit after a reader saw 6 and moved its cursor past 5, and be missed for good. So every
writing transaction first takes one transaction-level advisory lock (a fixed key) and only
then calls nextval: writers run one at a time, and each takes its number after the previous
one committed (a lock is released after its commit is visible). A reader that sees number n
therefore sees every committed write numbered below n. Writes are rare; the lock costs little.
Every write also runs pg_notify('router_changes', ''), delivered at commit to every replica's
listener connection (`wait_for_change`).

Every failure to reach PostgreSQL (refused, timed out, pool exhausted, connection lost, server
shutting down, read-only standby) raises ports.StoreUnavailable; no asyncpg exception leaves
this module. Commands time out after `timeout_seconds` (a lock wait included).

The JSON in `body` and `after` is the store's own format (`_dump_experiment`), not a public
contract: enums by name (metric kinds by value), times ISO-8601 in UTC, ordered things as
lists (jsonb does not keep the order of an object's keys). A definition read back goes through
define_experiment again, so a stored experiment is checked like a new one.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import threading
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

import asyncpg
import sqlalchemy
import sqlalchemy.exc
from alembic import command as alembic_command
from alembic.config import Config as AlembicConfig
from asyncpg import exceptions as pg_errors
from sqlalchemy.pool import NullPool

from ...errors import InvalidArgument
from .domain.assignment import BucketLayout, Variant, define_experiment
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

# Advisory locks in the two-int4-key form; the first key says whose lock it is.
_LOCK_NAMESPACE = 0x524F5554  # 'ROUT'
_WRITE_LOCK = f"SELECT pg_advisory_xact_lock({_LOCK_NAMESPACE}, 1)"  # every write: see "Locks"
_MIGRATION_LOCK_KEY = 2  # (namespace, 2): schema upgrades
_MIGRATION_LOCK_WAIT_SECONDS = 120  # another replica migrating for longer than this: give up

_APPLICATION_NAME = "ml-serving-router"
_POOL_SIZE = 10
_LISTENER_KEEPALIVE_SECONDS = 5.0  # the listener connection is checked this often
_RECONNECT_BACKOFF = (0.1, 5.0)  # first and longest pause between listener reconnections
_BUSY_ATTEMPTS = 3  # a write the index rejected is retried when its holder is gone by the follow-up read

# alembic's `context` is one module-level proxy per process: one upgrade at a time per process.
_UPGRADE_GUARD = threading.Lock()

_WHAT = "the router's experiment store (PostgreSQL)"


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

def sqlalchemy_url(dsn: str) -> str:
    """The DSN (postgres:// or postgresql://, libpq URI syntax) as a SQLAlchemy psycopg2 URL."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or not (scheme in ("postgres", "postgresql") or scheme.startswith("postgresql+")):
        raise ValueError("the experiment store's DSN must be a postgresql:// URI")
    return f"postgresql+psycopg2://{rest}"


def alembic_config(dsn: str | None = None) -> AlembicConfig:
    """The router's alembic configuration (there is no alembic.ini)."""
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    if dsn:
        config.set_main_option("sqlalchemy.url", sqlalchemy_url(dsn).replace("%", "%%"))
    return config


def _upgrade(dsn: str, timeout_seconds: float) -> None:
    """Upgrade the schema to the newest revision (blocking: run in a thread)."""
    engine = sqlalchemy.create_engine(
        sqlalchemy_url(dsn), poolclass=NullPool,
        connect_args={"connect_timeout": max(2, math.ceil(timeout_seconds)),
                      "application_name": f"{_APPLICATION_NAME}-migrations"},
    )
    lock = sqlalchemy.text(f"SELECT pg_advisory_lock({_LOCK_NAMESPACE}, {_MIGRATION_LOCK_KEY})")
    unlock = sqlalchemy.text(f"SELECT pg_advisory_unlock({_LOCK_NAMESPACE}, {_MIGRATION_LOCK_KEY})")
    try:
        with _UPGRADE_GUARD, engine.connect() as connection:
            # A session lock: it outlives the transactions alembic commits, until unlocked.
            connection.execute(sqlalchemy.text(f"SET lock_timeout = '{_MIGRATION_LOCK_WAIT_SECONDS}s'"))
            connection.execute(lock)
            connection.execute(sqlalchemy.text("RESET lock_timeout"))
            connection.commit()
            try:
                config = alembic_config()
                config.attributes["connection"] = connection
                alembic_command.upgrade(config, "head")
            finally:
                try:
                    connection.rollback()
                    connection.execute(unlock)
                    connection.commit()
                except sqlalchemy.exc.SQLAlchemyError:
                    pass  # the connection is gone, and its lock with it
    finally:
        engine.dispose()


async def migrate(dsn: str, timeout_seconds: float) -> None:
    """Run the router's pending migrations; StoreUnavailable when PostgreSQL cannot be reached
    (or another replica held the migration lock for too long)."""
    try:
        await asyncio.to_thread(_upgrade, dsn, timeout_seconds)
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError,
            OSError) as exc:
        log.warning("cannot migrate %s: %s", _WHAT, exc)
        raise StoreUnavailable(_WHAT) from exc


# ----- SQL -----------------------------------------------------------------------------------

# The change row is written by the same statement as the experiment (a data-modifying CTE),
# with the body the experiment row got as `after`; the notification goes out only if a row
# was written. Parameters $6 to $10 (create) / $8 to $12 (replace): the change's own fields.
_LOG_AND_NOTIFY = """
    logged AS (
        INSERT INTO router_experiment_changes (experiment, revision, action, actor, reason, fields, time, after)
        SELECT name, revision, ${0}, ${1}, ${2}, ${3}::text[], ${4}, body FROM stored)
    SELECT pg_notify('""" + CHANNEL + "', '') FROM stored"

_INSERT = """
    WITH stored AS (
        INSERT INTO router_experiments (name, model_name, state, revision, change_seq, create_time, update_time,
                                        body)
        VALUES ($1, $2, $3, 1, nextval('router_change_seq'), $4, $4, $5::jsonb)
        ON CONFLICT (name) DO NOTHING
        RETURNING name, revision, body),""" + _LOG_AND_NOTIFY.format(6, 7, 8, 9, 10)

_UPDATE = """
    WITH stored AS (
        UPDATE router_experiments
        SET model_name = $3, state = $4, revision = $5, change_seq = nextval('router_change_seq'),
            update_time = $6, body = $7::jsonb
        WHERE name = $1 AND revision = $2
        RETURNING name, revision, body),""" + _LOG_AND_NOTIFY.format(8, 9, 10, 11, 12)

# Read after the write lock (so with a snapshot taken after it): the store's clock, and the row.
_CURRENT = """
    SELECT clock_timestamp() AS now, e.create_time, e.revision
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
    SELECT experiment, revision, action, actor, reason, fields, time, after FROM router_experiment_changes
    WHERE experiment = $1 AND revision > $2
    ORDER BY revision
    LIMIT $3"""

_CHANGED_SINCE = "SELECT change_seq, body FROM router_experiments WHERE change_seq > $1 ORDER BY change_seq"


# ----- the store -----------------------------------------------------------------------------

async def _end_open_transaction(conn: asyncpg.Connection) -> None:
    """What a pooled connection needs before reuse. The store keeps no session state (locks are
    transaction-scoped, LISTEN has its own connection, nothing is SET), so asyncpg's default
    reset, a round trip on every release, is skipped; only a transaction left open is ended."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


_Write = Callable[[asyncpg.Connection, asyncpg.Record], Awaitable["Experiment | None"]]


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
            stored = experiment.with_changes(create_time=current["create_time"], update_time=current["now"])
            row = await conn.fetchrow(_UPDATE, stored.name, expected_revision, stored.model_name, stored.state.name,
                                      stored.revision, stored.update_time, _json(_dump_experiment(stored)),
                                      *_change_args(change))
            return stored if row is not None else None

        return await self._write(experiment, update)

    async def _write(self, experiment: Experiment, write: _Write) -> Experiment | None:
        """One write transaction under the write lock: `write(conn, current)` gets the store's
        clock and the experiment's row as of after the lock. When the one-running index rejects
        it, the running experiment is read in a follow-up query: ModelBusy(its name), or, if it
        stopped meanwhile, the write is tried again."""
        for _ in range(_BUSY_ATTEMPTS):
            try:
                async with self._transaction() as conn:
                    await conn.execute(_WRITE_LOCK)
                    return await write(conn, await conn.fetchrow(_CURRENT, experiment.name))
            except pg_errors.UniqueViolationError as exc:
                if exc.constraint_name != RUNNING_INDEX:
                    raise
            holder = await self._fetchval(_HOLDER, experiment.model_name, experiment.name)
            if holder is not None:
                raise ModelBusy(holder)
        raise ModelBusy("")  # busy every time, its running experiment stopping and another starting

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
        rows = await self._fetch(_CHANGED_SINCE, cursor)
        if not rows:
            return cursor, []
        return rows[-1]["change_seq"], [_load_body(row["body"]) for row in rows]

    # ----- notifications -----------------------------------------------------------------

    async def wait_for_change(self, timeout_s: float) -> None:
        """Return at the next NOTIFY on the channel (any replica's commit), when the listener
        reconnects (notifications may have been missed), or after timeout_s; never raises."""
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), max(0.0, timeout_s))
        except asyncio.TimeoutError:
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
                    await asyncio.wait_for(lost.wait(), _LISTENER_KEEPALIVE_SECONDS)
                except asyncio.TimeoutError:
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
    return change.action.name, change.actor, change.reason, list(change.fields), _utc(change.time)


def _change_from_row(row: asyncpg.Record) -> ExperimentChange:
    return ExperimentChange(
        experiment=row["experiment"], revision=row["revision"], action=ChangeAction[row["action"]],
        actor=row["actor"], time=_utc(row["time"]), reason=row["reason"], fields=tuple(row["fields"]),
        after=_load_body(row["after"]) if row["after"] is not None else None,
    )


def _load_body(body: str) -> Experiment:
    """A stored body as an Experiment; one that no longer passes the checks is an internal error."""
    data = json.loads(body)
    try:
        return _load_experiment(data)
    except (InvalidArgument, KeyError, TypeError, ValueError) as exc:
        name = data.get("definition", {}).get("name") if isinstance(data, dict) else None
        raise RuntimeError(f"{_WHAT}: stored experiment {name!r} cannot be read: {exc}") from exc


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
        "stop_time": _dump_time(e.stop_time),
    }


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
        stop_time=_load_time(data.get("stop_time")),
    )

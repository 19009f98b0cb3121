"""The feature store over PostgreSQL (asyncpg): the views' source queries (FeatureSource) and the
materialisation state (MaterializationState).

Tables (created by the alembic revisions in ./migrations, version table
`pipeline_alembic_version`, run by `PostgresMaterializationState.connect` under an advisory
lock so replicas starting together do not race):
  pipeline_feature_view_state    feature_view -> definition_hash, materialized_until (the
                                 watermark), last_materialization_time
  pipeline_materialization_jobs  job_id -> seq (a view's jobs in order), state, window,
                                 counts, resume_after (progress), error

Locks. A view's materialisation holds the session advisory lock (namespace 'PIPE', hashtext of
the view's name) on a connection of its own, opened for the job and closed after it: whichever
replica runs it, a second one finds the lock taken; a crashed process's lock goes with its
connection.

Source queries wrap the view's own query: `SELECT ... FROM (<query>) AS q WHERE ...`, with the
join key and event-time column (names the declaration checked) quoted as identifiers and every
value a parameter. Several rows of one key (a view over an event table): the newest by event
time, except for the monitor's recent values of a feature, which are every row's of a window.

Every failure to reach PostgreSQL raises the port's Unavailable error (SourceUnavailable for
source queries, StateStoreUnavailable for the state); no asyncpg exception leaves this module.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from datetime import datetime
from pathlib import Path
from typing import Sequence

import asyncpg
from asyncpg import exceptions as pg_errors

from ...errors import Unavailable
from ...runtime import postgres_migrations as migrations
from .domain.feature_views import FeatureView, ValueType
from .domain.ports import (
    EncodedRow,
    EntityRow,
    Job,
    JobError,
    SourceQueryFailed,
    SourceUnavailable,
    StateStoreUnavailable,
    ViewState,
)
from .domain.values import EntityKey, batch_values, utc

log = logging.getLogger(__name__)

VERSION_TABLE = "pipeline_alembic_version"  # also in migrations/env.py
MIGRATIONS = Path(__file__).with_name("migrations")
_LOCK_NAMESPACE = 0x50495045  # 'PIPE'
_MIGRATION_LOCK = (_LOCK_NAMESPACE, 0)
_APPLICATION_NAME = "ml-serving-pipeline"
_POOL_SIZE = 10
SCHEMA = migrations.Schema(MIGRATIONS, VERSION_TABLE, _MIGRATION_LOCK, _APPLICATION_NAME)

_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, asyncio.TimeoutError,
    pg_errors.InterfaceError, pg_errors.InternalClientError, pg_errors.PostgresConnectionError,
    pg_errors.OperatorInterventionError, pg_errors.InsufficientResourcesError,
    pg_errors.TransactionRollbackError, pg_errors.ReadOnlySQLTransactionError,
    pg_errors.InvalidAuthorizationSpecificationError, pg_errors.InvalidCatalogNameError,
)


def _translated(exc: BaseException, unavailable: type[Unavailable], what: str) -> BaseException | None:
    if isinstance(exc, (Unavailable, SourceQueryFailed)):
        return None
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        log.debug("%s unavailable: %s: %s", what, type(exc).__name__, exc)
        return unavailable()
    if unavailable is SourceUnavailable and isinstance(exc, (pg_errors.SyntaxOrAccessError, pg_errors.DataError)):
        return SourceQueryFailed(str(exc))  # the declared query and the database disagree
    if isinstance(exc, pg_errors.PostgresError):
        return RuntimeError(f"{what} failed: {type(exc).__name__}: {exc}")
    return None


def _translate(unavailable: type[Unavailable], what: str):
    def decorate(method):
        @functools.wraps(method)
        async def wrapper(*args, **kwargs):
            try:
                return await method(*args, **kwargs)
            except Exception as exc:
                replacement = _translated(exc, unavailable, what)
                if replacement is None:
                    raise
                raise replacement from exc

        return wrapper

    return decorate


_source_errors = _translate(SourceUnavailable, "the feature source (PostgreSQL)")
_state_errors = _translate(StateStoreUnavailable, "the pipeline's state store (PostgreSQL)")


async def _pool(url: str, timeout_s: float, unavailable: type[Unavailable], name: str) -> asyncpg.Pool:
    try:
        return await asyncpg.create_pool(url, min_size=0, max_size=_POOL_SIZE, command_timeout=timeout_s,
                                         timeout=timeout_s,
                                         server_settings={"application_name": name, "TimeZone": "UTC"})
    except Exception as exc:
        raise (_translated(exc, unavailable, name) or exc) from exc


async def migrated_pool(url: str, timeout_s: float, name: str) -> asyncpg.Pool:
    """The pipeline's schema migrated (alembic, under an advisory lock), then a pool on it;
    StateStoreUnavailable if PostgreSQL cannot be reached."""
    try:
        await migrations.upgrade(SCHEMA, url, timeout_s)
    except migrations.UNREACHABLE as exc:
        log.warning("cannot migrate the pipeline's state store: %s", exc)
        raise StateStoreUnavailable() from exc
    return await _pool(url, timeout_s, StateStoreUnavailable, name)


async def _close_pool(pool: asyncpg.Pool, timeout_s: float) -> None:
    """A graceful close for at most `timeout_s`, then terminate(): never waits on a connection
    that a task still holds (nor on the graceful close's own cancellation, as wait_for would)."""
    closing = asyncio.ensure_future(pool.close())
    try:
        await asyncio.wait({closing}, timeout=timeout_s)
    finally:
        if not closing.done():
            closing.cancel()
        pool.terminate()  # a no-op once closed
        await asyncio.wait({closing}, timeout=1.0)
        if closing.done() and not closing.cancelled() and closing.exception() is not None:
            log.debug("closing a pool: %r", closing.exception())


async def _ping(pool: asyncpg.Pool, timeout_s: float) -> bool:
    try:
        async with pool.acquire(timeout=timeout_s) as conn:
            return await conn.fetchval("SELECT 1") == 1
    except Exception:  # noqa: BLE001
        return False


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PooledStore:
    """A store owning one pool: shared with the adapters that query beside it (`pool`), closed
    and pinged with the store's timeout."""

    def __init__(self, pool: asyncpg.Pool, timeout_s: float):
        self._pool, self._timeout = pool, timeout_s

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    async def close(self) -> None:
        await _close_pool(self._pool, self._timeout)

    async def ping(self) -> bool:
        return await _ping(self._pool, self._timeout)


# ----- the source -----------------------------------------------------------------------------

class PostgresFeatureSource(PooledStore):
    """FeatureSource: the views' queries. `timeout_s` bounds a read-through; materialisation's
    scans get `scan_timeout_s`. Its pool is the training sets' too (postgres_training_set.py)."""

    def __init__(self, pool: asyncpg.Pool, timeout_s: float, scan_timeout_s: float):
        super().__init__(pool, timeout_s)
        self._scan_timeout = scan_timeout_s
        self._encoding_queries: dict[str, str | None] = {}  # by view definition hash

    @classmethod
    async def connect(cls, url: str, *, timeout_seconds: float = 5.0,
                      scan_timeout_seconds: float = 300.0) -> "PostgresFeatureSource":
        """Opens the pool lazily (min size 0): a source down at start is not fatal."""
        pool = await _pool(url, timeout_seconds, SourceUnavailable, f"{_APPLICATION_NAME}-source")
        return cls(pool, timeout_seconds, scan_timeout_seconds)

    @_source_errors
    async def encoded_rows(self, view: FeatureView, keys: Sequence[EntityKey]) -> list[EncodedRow] | None:
        if not keys:
            return []
        sql = await self._encoding_query(view)
        if sql is None:
            return None
        records = await self._pool.fetch(sql, list(keys), timeout=self._scan_timeout)
        if any(marker in record["v"] for record in records for marker in _NOT_JSON_NUMBERS):
            return None  # NaN or an infinity somewhere: Python writes those its own way
        return [EncodedRow(_key(view, record["k"]), utc(record["t"]), record["v"]) for record in records]

    async def _encoding_query(self, view: FeatureView) -> str | None:
        """The query giving each row's values as one JSON array built by PostgreSQL, when every
        feature column has a type whose JSON is exactly Python's; None otherwise. Worked out once
        per view definition from the query's column types."""
        if view.definition_hash in self._encoding_queries:
            return self._encoding_queries[view.definition_hash]
        async with self._pool.acquire(timeout=self._timeout) as connection:
            statement = await connection.prepare(f"SELECT * FROM ({view.source.query}) AS q LIMIT 0")
            types = {attribute.name: attribute.type.name for attribute in statement.get_attributes()}
        expressions = []
        for feature in view.features:
            column = f"q.{_ident(feature.name)}"
            if feature.name not in types:
                expressions.append("NULL")
                continue
            shape = _EXACT_JSON[feature.type].get(types[feature.name])
            if shape is None:
                self._encoding_queries[view.definition_hash] = None
                return None
            value = shape.format(column)
            expressions.append(_LIST_GUARD.format(c=column, v=value) if types[feature.name].endswith("[]") else value)
        key, time = _ident(view.entity.join_key), _ident(view.source.event_time_column)
        array = "bigint[]" if view.entity.key_type is ValueType.INT else "text[]"
        sql = (f"SELECT DISTINCT ON (q.{key}) q.{key} AS k, q.{time} AS t, "
               f"json_build_array({', '.join(expressions)})::text AS v FROM ({view.source.query}) AS q "
               f"WHERE q.{key} = ANY($1::{array}) ORDER BY q.{key}, q.{time} DESC NULLS LAST")
        self._encoding_queries[view.definition_hash] = sql
        return sql

    @_source_errors
    async def max_event_time(self, view: FeatureView) -> datetime | None:
        sql = f"SELECT max(q.{_ident(view.source.event_time_column)}) FROM ({view.source.query}) AS q"
        return utc(await self._pool.fetchval(sql, timeout=self._scan_timeout))

    @_source_errors
    async def changed_keys(self, view: FeatureView, *, after: datetime | None, since: datetime | None,
                           until: datetime | None) -> list[EntityKey]:
        key, time = _ident(view.entity.join_key), _ident(view.source.event_time_column)
        conditions = [f"q.{key} IS NOT NULL"]
        params: list[object] = []
        for operator, bound in ((">", after), (">=", since), ("<=", until)):
            if bound is not None:
                params.append(bound)
                conditions.append(f"q.{time} {operator} ${len(params)}::timestamptz")
        sql = (f"SELECT DISTINCT q.{key} AS k FROM ({view.source.query}) AS q WHERE {' AND '.join(conditions)} "
               f"ORDER BY 1")
        records = await self._pool.fetch(sql, *params, timeout=self._scan_timeout)
        return [_key(view, record["k"]) for record in records]

    @_source_errors
    async def rows(self, view: FeatureView, keys: Sequence[EntityKey], *, timeout_s: float | None = None
                   ) -> list[EntityRow]:
        if not keys:
            return []
        key, time = _ident(view.entity.join_key), _ident(view.source.event_time_column)
        array = "bigint[]" if view.entity.key_type is ValueType.INT else "text[]"
        sql = (f"SELECT DISTINCT ON (q.{key}) * FROM ({view.source.query}) AS q WHERE q.{key} = ANY($1::{array}) "
               f"ORDER BY q.{key}, q.{time} DESC NULLS LAST")
        records = await self._pool.fetch(sql, list(keys), timeout=timeout_s or self._scan_timeout)
        join_key, event_time = view.entity.join_key, view.source.event_time_column
        return [EntityRow(_key(view, record[join_key]), utc(record[event_time]), values)
                for record, values in zip(records, batch_values(view, records))]


    @_source_errors
    async def recent_values(self, view: FeatureView, feature: str, *, start: datetime, end: datetime,
                            limit: int) -> list[float]:
        column, time = _ident(feature), _ident(view.source.event_time_column)
        # float8 in PostgreSQL: an int, numeric or real column reads as the double the monitor bins.
        sql = (f"SELECT q.{column}::float8 AS v FROM ({view.source.query}) AS q "
               f"WHERE q.{time} >= $1::timestamptz AND q.{time} <= $2::timestamptz AND q.{column} IS NOT NULL "
               f"ORDER BY q.{time} DESC LIMIT $3")
        records = await self._pool.fetch(sql, start, end, limit, timeout=self._scan_timeout)
        return [value for value in (record["v"] for record in records) if math.isfinite(value)]


# The source column types PostgreSQL's JSON writes exactly as Python's json writes the typed
# value (same numbers, same lists), per declared type: the column itself, or a cast that keeps
# the value (real to double precision is exact, and both write a double's shortest form).
_EXACT_JSON = {
    ValueType.INT: {"int2": "{}", "int4": "{}", "int8": "{}"},
    ValueType.FLOAT: {"float8": "{}", "float4": "{}::float8", "numeric": "{}::float8", "int2": "{}::float8",
                      "int4": "{}::float8", "int8": "{}::float8"},
    ValueType.STRING: {"text": "{}", "varchar": "{}"},
    ValueType.BOOL: {"bool": "{}"},
    ValueType.INT_LIST: {"int2[]": "{}", "int4[]": "{}", "int8[]": "{}"},
    ValueType.FLOAT_LIST: {"float8[]": "{}", "float4[]": "{}::float8[]"},
    ValueType.STRING_LIST: {"text[]": "{}", "varchar[]": "{}"},
}
# A list with a null element, or of more than one dimension, does not convert: null, as coerce says.
_LIST_GUARD = "CASE WHEN coalesce(array_ndims({c}), 1) = 1 AND array_position({c}, NULL) IS NULL THEN {v} END"
# What PostgreSQL's JSON writes for a double JSON has no number for: such a batch is read typed.
_NOT_JSON_NUMBERS = ('"NaN"', '"Infinity"', '"-Infinity"')


def _key(view: FeatureView, value: object) -> EntityKey:
    return int(value) if view.entity.key_type is ValueType.INT else str(value)


# ----- the state ------------------------------------------------------------------------------

_JOB_COLUMNS = ("job_id, feature_view, mode, state, definition_hash, create_time, start_time, end_time, window_start, "
                "window_end, entities_total, entities_written, resume_after, resumed_job_id, error_code, "
                "error_reason, error_message, entities_deleted")

_INSERT_JOB = f"""
    INSERT INTO pipeline_materialization_jobs ({_JOB_COLUMNS})
    VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"""

_UPDATE_JOB = """
    UPDATE pipeline_materialization_jobs
    SET mode = $3, state = $4, definition_hash = $5, create_time = $6, start_time = $7, end_time = $8,
        window_start = $9, window_end = $10, entities_total = $11, entities_written = $12, resume_after = $13,
        resumed_job_id = $14, error_code = $15, error_reason = $16, error_message = $17, entities_deleted = $18
    WHERE job_id = $1::uuid AND feature_view = $2"""

_LAST_JOB = f"""
    SELECT {_JOB_COLUMNS} FROM pipeline_materialization_jobs
    WHERE feature_view = $1
      AND seq < coalesce((SELECT seq FROM pipeline_materialization_jobs WHERE job_id = $2::uuid), 9223372036854775807)
    ORDER BY seq DESC LIMIT 1"""

_UPSERT_STATE = """
    INSERT INTO pipeline_feature_view_state (feature_view, definition_hash, materialized_until,
                                             last_materialization_time)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (feature_view) DO UPDATE
    SET definition_hash = EXCLUDED.definition_hash, materialized_until = EXCLUDED.materialized_until,
        last_materialization_time = EXCLUDED.last_materialization_time"""

_STATES = "SELECT feature_view, definition_hash, materialized_until, last_materialization_time " \
          "FROM pipeline_feature_view_state"


def _job_params(job: Job) -> tuple:
    error = job.error
    return (job.job_id, job.feature_view, job.mode, job.state, job.definition_hash, job.create_time, job.start_time,
            job.end_time, job.window_start, job.window_end, job.entities_total, job.entities_written,
            job.resume_after, job.resumed_job_id, error.code if error else None, error.reason if error else None,
            error.message if error else None, job.entities_deleted)


def _job(record) -> Job:
    error = JobError(record["error_reason"], record["error_message"] or "", record["error_code"] or "INTERNAL") \
        if record["error_reason"] else None
    return Job(job_id=str(record["job_id"]), feature_view=record["feature_view"], mode=record["mode"],
               state=record["state"], definition_hash=record["definition_hash"], create_time=record["create_time"],
               start_time=record["start_time"], end_time=record["end_time"], window_start=record["window_start"],
               window_end=record["window_end"], entities_total=record["entities_total"],
               entities_written=record["entities_written"], resume_after=record["resume_after"],
               resumed_job_id=record["resumed_job_id"], error=error, entities_deleted=record["entities_deleted"])


class _AdvisoryLock:
    def __init__(self, connection: asyncpg.Connection):
        self._connection = connection

    async def release(self) -> None:
        # Closing the connection ends its session, and the session's lock with it.
        try:
            await asyncio.wait_for(self._connection.close(), 5)
        except Exception:  # noqa: BLE001
            self._connection.terminate()


class PostgresMaterializationState(PooledStore):
    """Its pool is the run, schedule and monitor stores' too (the pipeline's own tables)."""

    def __init__(self, url: str, pool: asyncpg.Pool, timeout_s: float):
        super().__init__(pool, timeout_s)
        self._url = url

    @classmethod
    async def connect(cls, url: str, *, timeout_seconds: float = 5.0) -> "PostgresMaterializationState":
        """Migrate and open the pool; StateStoreUnavailable if PostgreSQL cannot be reached."""
        return cls(url, await migrated_pool(url, timeout_seconds, _APPLICATION_NAME), timeout_seconds)

    @_state_errors
    async def try_lock(self, feature_view: str) -> _AdvisoryLock | None:
        connection = await asyncpg.connect(self._url, timeout=self._timeout, command_timeout=self._timeout,
                                           server_settings={"application_name": f"{_APPLICATION_NAME}-lock"})
        try:
            taken = await connection.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", _LOCK_NAMESPACE,
                                              feature_view)
        except BaseException:
            connection.terminate()
            raise
        if not taken:
            await _AdvisoryLock(connection).release()
            return None
        return _AdvisoryLock(connection)

    @_state_errors
    async def view_states(self) -> dict[str, ViewState]:
        return {record["feature_view"]: ViewState(*record.values()) for record in await self._pool.fetch(_STATES)}

    @_state_errors
    async def view_state(self, feature_view: str) -> ViewState | None:
        record = await self._pool.fetchrow(_STATES + " WHERE feature_view = $1", feature_view)
        return ViewState(*record.values()) if record else None

    @_state_errors
    async def create_job(self, job: Job) -> None:
        await self._pool.execute(_INSERT_JOB, *_job_params(job))

    @_state_errors
    async def update_job(self, job: Job) -> None:
        await self._pool.execute(_UPDATE_JOB, *_job_params(job))

    @_state_errors
    async def get_job(self, job_id: str) -> Job | None:
        record = await self._pool.fetchrow(f"SELECT {_JOB_COLUMNS} FROM pipeline_materialization_jobs "
                                           f"WHERE job_id = $1::uuid", job_id)
        return _job(record) if record else None

    @_state_errors
    async def newest_job_time(self, feature_view: str) -> datetime | None:
        return await self._pool.fetchval("SELECT create_time FROM pipeline_materialization_jobs "
                                         "WHERE feature_view = $1 ORDER BY seq DESC LIMIT 1", feature_view)

    @_state_errors
    async def last_job(self, feature_view: str, *, before: Job) -> Job | None:
        record = await self._pool.fetchrow(_LAST_JOB, feature_view, before.job_id)
        return _job(record) if record else None

    @_state_errors
    async def finish(self, job: Job, state: ViewState) -> None:
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(_UPDATE_JOB, *_job_params(job))
            await connection.execute(_UPSERT_STATE, state.feature_view, state.definition_hash,
                                     state.materialized_until, state.last_materialization_time)

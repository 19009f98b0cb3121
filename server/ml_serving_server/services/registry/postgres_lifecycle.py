"""LifecycleStore over PostgreSQL (asyncpg): version stages, the audit history, the event feed.

Tables (created by the alembic revisions in ./migrations, version table
`registry_alembic_version`, run by `connect` under an advisory lock so replicas starting
together do not race):
  registry_version_stages  (model, version) -> stage, since
  registry_transitions     the audit history; `position` (bigserial) orders entries written at
                           the same instant, e.g. a promotion's archive-old and promote-new
  registry_events          the feed: sequence (primary key), type, time, model, version, and
                           the whole event as jsonb `payload`
  registry_event_head      one row: the newest sequence handed out
  registry_request_ids     (model, request_id) -> the version CreateModelVersion created
  registry_needs_repair    models whose MLflow state may differ from the stored lifecycle

Locks and order. `locked(model)` is one transaction on one pooled connection holding
`pg_advisory_xact_lock(NAMESPACE, crc32(model))`: every replica waits on the same lock,
released at commit or rollback. `append_event` takes its sequence with
`UPDATE registry_event_head SET head = head + 1 RETURNING head`: the row lock serialises
writers from that statement to their commit, so sequences are gap-free and committed in order,
and a reader that reads the head and then the events up to it never misses one committed
later with a smaller number. It also runs `pg_notify('registry_events', sequence)`, delivered
at commit to every replica's listener connection (`wait_for_change`).

Every failure to reach PostgreSQL (refused, timed out, pool exhausted, connection lost, server
shutting down, read-only standby) raises ports.BackendUnavailable; no asyncpg exception
leaves this module. Commands time out after `timeout_seconds` (a lock wait included).

The JSON written here (event payloads, gate results) is the store's own format, not a
public contract: enums by name, times ISO-8601 in UTC, floats as JSON numbers (NaN and the
infinities as the strings "NaN", "Infinity", "-Infinity").
"""

from __future__ import annotations

import asyncio
import zlib
import functools
import json
import logging
import math
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

import asyncpg
from asyncpg import exceptions as pg_errors

from ...runtime import postgres_migrations as migrations
from .domain.layout import gate_dict, gate_from_dict, signature_dict, signature_from_dict
from .domain.model import (
    Artifact,
    ArtifactFormat,
    EventType,
    GateResult,
    MetricGate,
    ModelVersion,
    RegistryEvent,
    Stage,
    StageTransition,
    TransitionQuery,
    VersionStatus,
)
from .domain.ports import BackendUnavailable, StageRecord

log = logging.getLogger(__name__)

CHANNEL = "registry_events"
VERSION_TABLE = "registry_alembic_version"  # also in migrations/env.py
MIGRATIONS = Path(__file__).with_name("migrations")

# Advisory locks use the two-int4-key form, a key space of its own (single bigint keys never
# collide with it); the first key says whose lock it is.
_MODEL_LOCK_NAMESPACE = 0x52454701  # 'REG' 1: (namespace, crc32(model)), one per model
_MIGRATION_LOCK_NAMESPACE = 0x52454702  # 'REG' 2: (namespace, 0), schema upgrades

_APPLICATION_NAME = "ml-serving-registry"
_LISTENER_KEEPALIVE_SECONDS = 5.0  # the listener connection is checked this often
_RECONNECT_BACKOFF = (0.1, 5.0)  # first and longest pause between listener reconnections
SCHEMA = migrations.Schema(MIGRATIONS, VERSION_TABLE, (_MIGRATION_LOCK_NAMESPACE, 0), _APPLICATION_NAME)


# ----- errors --------------------------------------------------------------------------------

# Failures that mean "cannot reach / cannot serve now": nothing is known to have changed.
_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable, ...
    asyncio.TimeoutError,  # command timeout, pool acquire timeout, connect timeout
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
    if isinstance(exc, BackendUnavailable):
        return None
    if isinstance(exc, pg_errors.ClientConfigurationError):
        return ValueError(f"lifecycle store (PostgreSQL) misconfigured: {exc}")
    if isinstance(exc, _UNAVAILABLE_ERRORS):
        return BackendUnavailable(f"lifecycle store (PostgreSQL) unavailable: {type(exc).__name__}: {exc}")
    if isinstance(exc, pg_errors.PostgresError):
        return RuntimeError(f"lifecycle store (PostgreSQL) failed: {type(exc).__name__}: {exc}")
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
    """Run the registry's pending migrations; BackendUnavailable when PostgreSQL cannot be reached
    (or another replica held the migration lock for too long)."""
    try:
        await migrations.upgrade(SCHEMA, dsn, timeout_seconds)
    except migrations.UNREACHABLE as exc:
        raise BackendUnavailable(f"lifecycle store (PostgreSQL) unavailable for migrations: {exc}") from exc


# ----- the store -----------------------------------------------------------------------------

async def _end_open_transaction(conn: asyncpg.Connection) -> None:
    """What a pooled connection needs before reuse. The store keeps no session state (locks are
    transaction-scoped, LISTEN has its own connection, nothing is SET), so asyncpg's default
    reset, a round trip on every release, is skipped; only a transaction left open is ended."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class PostgresLifecycle:
    """The LifecycleStore port. Build it with `await PostgresLifecycle.connect(dsn, ...)`."""

    def __init__(self, dsn: str, pool: asyncpg.Pool, timeout_seconds: float):
        self._dsn = dsn
        self._pool = pool
        self._timeout = timeout_seconds
        self._closed = False
        self._changed = asyncio.Event()  # replaced at each notification: one generation per event
        self._last_notified = 0  # the largest sequence a notification carried
        self._listener: asyncpg.Connection | None = None
        self._listener_task: asyncio.Task | None = None

    @classmethod
    async def connect(cls, dsn: str, *, timeout_seconds: float, pool_size: int = 10) -> "PostgresLifecycle":
        """Migrate, open the pool and the listening connection; BackendUnavailable if PostgreSQL
        cannot be reached."""
        await migrate(dsn, timeout_seconds)
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=pool_size, command_timeout=timeout_seconds, timeout=timeout_seconds,
                server_settings={"application_name": _APPLICATION_NAME}, reset=_end_open_transaction,
            )
        except Exception as exc:
            raise (_translated(exc) or exc) from exc
        store = cls(dsn, pool, timeout_seconds)
        try:
            listener, lost = await store._open_listener()
        except BaseException:
            pool.terminate()
            raise
        store._listener_task = asyncio.create_task(store._keep_listening(listener, lost),
                                                   name="registry-lifecycle-listener")
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
        try:
            async with self._pool.acquire(timeout=self._timeout) as conn:
                return await conn.fetchval("SELECT 1") == 1
        except Exception:
            return False

    # ----- the lock ----------------------------------------------------------------------

    @asynccontextmanager
    async def locked(self, model_name: str) -> AsyncIterator["PostgresLifecycleTx"]:
        conn = await self._acquire()
        try:
            transaction = _PlainTransaction(conn)
            try:
                # BEGIN and the lock in one round trip (a simple query; the key is a number, nothing quoted).
                await conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({_MODEL_LOCK_NAMESPACE}, "
                                   f"{_model_lock_key(model_name)})")
            except BaseException as exc:
                await _abandon(conn, transaction, self._timeout)
                replacement = _translated(exc) if isinstance(exc, Exception) else None
                if replacement is None:
                    raise
                raise replacement from exc
            tx = PostgresLifecycleTx(conn, model_name)
            try:
                yield tx
            except BaseException:
                tx._ended = True
                await _abandon(conn, transaction, self._timeout)
                raise
            tx._ended = True
            try:
                await transaction.commit()
            except Exception as exc:
                await _abandon(conn, transaction, self._timeout)
                raise (_translated(exc) or exc) from exc
        finally:
            await self._release(conn)

    async def _acquire(self) -> asyncpg.Connection:
        try:
            return await self._pool.acquire(timeout=self._timeout)
        except Exception as exc:
            raise (_translated(exc) or exc) from exc

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self._pool.acquire(timeout=self._timeout) as conn:
            return await conn.fetch(query, *args)

    async def _fetchval(self, query: str, *args: Any) -> Any:
        async with self._pool.acquire(timeout=self._timeout) as conn:
            return await conn.fetchval(query, *args)

    async def _execute(self, query: str, *args: Any) -> str:
        """One statement, committed at once."""
        async with self._pool.acquire(timeout=self._timeout) as conn:
            return await conn.execute(query, *args)

    async def _release(self, conn: asyncpg.Connection) -> None:
        try:
            await self._pool.release(conn, timeout=self._timeout)
        except Exception:  # the pool replaces a connection it could not reset
            log.debug("could not return a connection to the pool", exc_info=True)

    # ----- stages and request ids --------------------------------------------------------

    @_translate_errors
    async def stages(self, model_name: str) -> dict[str, StageRecord]:
        rows = await self._fetch(_SELECT_STAGES, model_name)
        return {row["version"]: StageRecord(Stage[row["stage"]], row["since"]) for row in rows}

    @_translate_errors
    async def stages_of(self, model_names: Sequence[str]) -> dict[str, dict[str, StageRecord]]:
        """Every model asked for is a key (with {} when it has no stages)."""
        found: dict[str, dict[str, StageRecord]] = {name: {} for name in model_names}
        if not found:
            return found
        rows = await self._fetch("SELECT model, version, stage, since FROM registry_version_stages "
                                 "WHERE model = ANY($1::text[])", list(found))
        for row in rows:
            found[row["model"]][row["version"]] = StageRecord(Stage[row["stage"]], row["since"])
        return found

    @_translate_errors
    async def find_request(self, model_name: str, request_id: str) -> str | None:
        return await self._fetchval("SELECT version FROM registry_request_ids WHERE model = $1 AND request_id = $2",
                                    model_name, request_id)

    # ----- the audit history -------------------------------------------------------------

    @_translate_errors
    async def transitions(self, query: TransitionQuery) -> list[StageTransition]:
        if query.limit <= 0:
            return []
        conditions: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if query.model_name is not None:
            conditions.append(f"model = {arg(query.model_name)}")
        if query.version is not None:
            conditions.append(f"version = {arg(query.version)}")
        if query.actor is not None:
            conditions.append(f"actor = {arg(query.actor)}")
        if query.start is not None:
            conditions.append(f"time >= {arg(_utc(query.start))}")
        if query.end is not None:
            conditions.append(f"time < {arg(_utc(query.end))}")
        if query.before is not None:
            before_time, before_id = query.before
            conditions.append(f"(time, transition_id) < ({arg(_utc(before_time))}, {arg(before_id)})")
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = await self._fetch(
            f"SELECT {_TRANSITION_COLUMNS} FROM registry_transitions {where} "
            f"ORDER BY time DESC, transition_id DESC LIMIT {arg(query.limit)}", *args)
        return [_transition_from_row(row) for row in rows]

    @_translate_errors
    async def production_at(self, model_name: str, at: datetime) -> str | None:
        """The entries that moved a version into or out of Production at the latest such instant
        up to `at` decide, replayed in the order they were written: a promotion writes two at
        one instant (the old version archived, the new one promoted), in either order."""
        rows = await self._fetch("""
            WITH production AS (
                SELECT version, from_stage, to_stage, time, position FROM registry_transitions
                WHERE model = $1 AND time <= $2 AND (from_stage = 'PRODUCTION' OR to_stage = 'PRODUCTION'))
            SELECT version, from_stage, to_stage FROM production
            WHERE time = (SELECT max(time) FROM production)
            ORDER BY position""", model_name, _utc(at))
        current: str | None = None
        for row in rows:
            if row["to_stage"] == Stage.PRODUCTION.name:
                current = row["version"]
            elif current == row["version"]:
                current = None
        return current

    # ----- the event feed ----------------------------------------------------------------

    @_translate_errors
    async def events_after(self, after: int, up_to: int, limit: int, model_names: Sequence[str] = (),
                           types: Sequence[EventType] = ()) -> list[RegistryEvent]:
        if limit <= 0 or up_to <= after:
            return []
        rows = await self._fetch("""
            SELECT sequence, payload FROM registry_events
            WHERE sequence > $1 AND sequence <= $2
              AND (cardinality($3::text[]) = 0 OR model = ANY($3::text[]))
              AND (cardinality($4::text[]) = 0 OR type = ANY($4::text[]))
            ORDER BY sequence LIMIT $5""",
            after, up_to, list(model_names), [t.name for t in types], limit)
        return [load_event(json.loads(row["payload"]), row["sequence"]) for row in rows]

    @_translate_errors
    async def head_sequence(self) -> int:
        return await self._fetchval("SELECT head FROM registry_event_head")

    @_translate_errors
    async def first_retained_sequence(self) -> int:
        return await self._fetchval(
            "SELECT COALESCE((SELECT min(sequence) FROM registry_events), (SELECT head FROM registry_event_head) + 1)")

    @_translate_errors
    async def prune_events(self, older_than: datetime) -> int:
        """Delete the oldest events, up to the first one whose time is not before `older_than`:
        what stays is always every sequence from first_retained_sequence() to the head (an
        event stamped out of order never leaves a hole)."""
        status = await self._execute("""
            DELETE FROM registry_events WHERE sequence < COALESCE(
                (SELECT min(sequence) FROM registry_events WHERE time >= $1),
                (SELECT head FROM registry_event_head) + 1)""", _utc(older_than))
        return int(status.split()[-1])

    async def wait_for_change(self, timeout: float, *, after_sequence: int | None = None) -> None:
        """Return at the next NOTIFY on the channel (any replica's commit), when the listener
        reconnects (notifications may have been missed), or after `timeout` seconds; never
        raises. With `after_sequence`, return at once if a notification already announced a
        newer sequence (closes the gap between reading the feed and starting to wait)."""
        if after_sequence is not None and self._last_notified > after_sequence:
            return
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), max(0.0, timeout))
        except asyncio.TimeoutError:
            pass

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _on_notify(self, _conn, _pid, _channel, payload: str) -> None:
        try:
            self._last_notified = max(self._last_notified, int(payload))
        except ValueError:
            pass
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
                    log.info("registry event listener reconnected")
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
                log.warning("registry event listener down (%s: %s); reconnecting in %.1f s",
                            type(exc).__name__, exc, backoff)
                if conn is not None:
                    conn.terminate()
                    conn = None
                self._listener = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _RECONNECT_BACKOFF[1])

    # ----- repair marks ------------------------------------------------------------------

    @_translate_errors
    async def mark_needs_repair(self, model_name: str) -> None:
        await self._execute("INSERT INTO registry_needs_repair (model, since) VALUES ($1, now()) "
                            "ON CONFLICT (model) DO NOTHING", model_name)

    @_translate_errors
    async def models_needing_repair(self) -> list[str]:
        rows = await self._fetch("SELECT model FROM registry_needs_repair ORDER BY since, model")
        return [row["model"] for row in rows]


class PostgresLifecycleTx:
    """The LifecycleTx port: one model's changes in the transaction `locked` opened."""

    def __init__(self, conn: asyncpg.Connection, model_name: str):
        self._conn = conn
        self._model = model_name
        self._ended = False

    def _connection(self) -> asyncpg.Connection:
        if self._ended:
            raise RuntimeError(f"the lifecycle transaction of model {self._model!r} has ended")
        return self._conn

    @_translate_errors
    async def stages(self) -> dict[str, StageRecord]:
        rows = await self._connection().fetch(_SELECT_STAGES, self._model)
        return {row["version"]: StageRecord(Stage[row["stage"]], row["since"]) for row in rows}

    @_translate_errors
    async def set_stage(self, version: str, stage: Stage, since: datetime) -> None:
        await self._connection().execute("""
            INSERT INTO registry_version_stages (model, version, stage, since) VALUES ($1, $2, $3, $4)
            ON CONFLICT (model, version) DO UPDATE SET stage = EXCLUDED.stage, since = EXCLUDED.since""",
            self._model, version, stage.name, _utc(since))

    @_translate_errors
    async def forget_version(self, version: str) -> None:
        await self._connection().execute("DELETE FROM registry_version_stages WHERE model = $1 AND version = $2",
                                         self._model, version)

    @_translate_errors
    async def forget_model(self) -> None:
        conn = self._connection()
        await conn.execute("DELETE FROM registry_version_stages WHERE model = $1", self._model)
        await conn.execute("DELETE FROM registry_request_ids WHERE model = $1", self._model)

    @_translate_errors
    async def record_transition(self, transition: StageTransition) -> None:
        t = transition
        await self._connection().execute(f"""
            INSERT INTO registry_transitions ({_TRANSITION_COLUMNS})
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11)""",
            t.transition_id, t.model_name, t.version, t.from_stage.name, t.to_stage.name, t.actor, t.reason,
            _utc(t.time), t.override, _json([dump_gate_result(g) for g in t.gate_results]), t.caused_by)

    @_translate_errors
    async def append_event(self, event: RegistryEvent) -> int:
        return await self._connection().fetchval("""
            WITH head AS (UPDATE registry_event_head SET head = head + 1 RETURNING head),
            stored AS (
                INSERT INTO registry_events (sequence, type, time, model, version, payload)
                SELECT head, $1, $2, $3, $4, $5::jsonb FROM head RETURNING sequence)
            SELECT sequence FROM stored, pg_notify($6, sequence::text)""",
            event.type.name, _utc(event.time), event.model_name, event.version, _json(dump_event(event)), CHANNEL)

    @_translate_errors
    async def remember_request(self, request_id: str, version: str) -> None:
        await self._connection().execute("""
            INSERT INTO registry_request_ids (model, request_id, version) VALUES ($1, $2, $3)
            ON CONFLICT (model, request_id) DO NOTHING""", self._model, request_id, version)

    @_translate_errors
    async def mark_repaired(self) -> None:
        await self._connection().execute("DELETE FROM registry_needs_repair WHERE model = $1", self._model)


def _model_lock_key(model_name: str) -> int:
    """The model's advisory-lock key: CRC-32 of its name as a signed 32-bit integer (every replica agrees)."""
    key = zlib.crc32(model_name.encode())
    return key - (1 << 32) if key >= 1 << 31 else key


class _PlainTransaction:
    """COMMIT / ROLLBACK of a transaction begun by a plain BEGIN (see `locked`)."""

    def __init__(self, conn: asyncpg.Connection):
        self._conn = conn

    async def commit(self) -> None:
        await self._conn.execute("COMMIT")

    async def rollback(self) -> None:
        if self._conn.is_in_transaction():
            await self._conn.execute("ROLLBACK")


async def _abandon(conn: asyncpg.Connection, transaction, timeout: float) -> None:
    """Roll back; a connection that cannot is closed (the pool replaces it)."""
    try:
        await asyncio.wait_for(transaction.rollback(), timeout)
    except asyncio.CancelledError:
        conn.terminate()
        raise
    except Exception:  # a transaction never started, a connection gone
        if not conn.is_closed():
            conn.terminate()


_SELECT_STAGES = "SELECT version, stage, since FROM registry_version_stages WHERE model = $1"
_TRANSITION_COLUMNS = ("transition_id, model, version, from_stage, to_stage, actor, reason, time, override, "
                       "gate_results, caused_by")


def _transition_from_row(row: asyncpg.Record) -> StageTransition:
    return StageTransition(
        transition_id=row["transition_id"], model_name=row["model"], version=row["version"],
        from_stage=Stage[row["from_stage"]], to_stage=Stage[row["to_stage"]], actor=row["actor"],
        reason=row["reason"], time=row["time"], override=row["override"],
        gate_results=tuple(load_gate_result(g) for g in json.loads(row["gate_results"])), caused_by=row["caused_by"],
    )


# ----- serialisation (the store's own format) --------------------------------------------------

_FORMAT = 1  # payload format version, for readers of older rows once the format changes


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


def _dump_float(value: float) -> float | str:
    value = float(value)
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _load_float(value: float | str) -> float:
    return float(value)  # float() reads "NaN", "Infinity" and "-Infinity"


def _name(member) -> str | None:
    return member.name if member is not None else None


def dump_gate(gate: MetricGate) -> dict:
    return {**gate_dict(gate), "threshold": _dump_float(gate.threshold)}


def load_gate(data: dict) -> MetricGate:
    return gate_from_dict({**data, "threshold": _load_float(data["threshold"])})


def dump_gate_result(result: GateResult) -> dict:
    return {"gate": dump_gate(result.gate), "actual": None if result.actual is None else _dump_float(result.actual),
            "passed": result.passed}


def load_gate_result(data: dict) -> GateResult:
    actual = data.get("actual")
    return GateResult(gate=load_gate(data["gate"]), actual=None if actual is None else _load_float(actual),
                      passed=bool(data["passed"]))


dump_signature = signature_dict
load_signature = signature_from_dict


def dump_artifact(artifact: Artifact | None) -> dict | None:
    if artifact is None:
        return None
    return {"uri": artifact.uri, "format": artifact.format.name, "sha256": artifact.sha256,
            "size_bytes": artifact.size_bytes}


def load_artifact(data: dict | None) -> Artifact | None:
    if data is None:
        return None
    return Artifact(uri=data["uri"], format=ArtifactFormat[data["format"]], sha256=data["sha256"],
                    size_bytes=int(data["size_bytes"]))


def dump_model_version(v: ModelVersion | None) -> dict | None:
    if v is None:
        return None
    return {
        "model_name": v.model_name, "version": v.version, "stage": v.stage.name, "description": v.description,
        "aliases": list(v.aliases), "artifact": dump_artifact(v.artifact), "source_run_id": v.source_run_id,
        "metrics": {k: _dump_float(x) for k, x in v.metrics.items()}, "parameters": dict(v.parameters),
        "tags": dict(v.tags), "signature": dump_signature(v.signature), "status": v.status.name,
        "status_message": v.status_message, "created_by": v.created_by, "create_time": _dump_time(v.create_time),
        "update_time": _dump_time(v.update_time), "stage_update_time": _dump_time(v.stage_update_time),
    }


def load_model_version(data: dict | None) -> ModelVersion | None:
    if data is None:
        return None
    return ModelVersion(
        model_name=data["model_name"], version=data["version"], stage=Stage[data["stage"]],
        description=data.get("description", ""), aliases=tuple(data.get("aliases", ())),
        artifact=load_artifact(data.get("artifact")), source_run_id=data.get("source_run_id", ""),
        metrics={k: _load_float(x) for k, x in data.get("metrics", {}).items()},
        parameters=dict(data.get("parameters", {})), tags=dict(data.get("tags", {})),
        signature=load_signature(data.get("signature", {})),
        status=VersionStatus[data.get("status", VersionStatus.READY.name)],
        status_message=data.get("status_message", ""), created_by=data.get("created_by", ""),
        create_time=_load_time(data.get("create_time")), update_time=_load_time(data.get("update_time")),
        stage_update_time=_load_time(data.get("stage_update_time")),
    )


def dump_transition(t: StageTransition | None) -> dict | None:
    if t is None:
        return None
    return {
        "transition_id": t.transition_id, "model_name": t.model_name, "version": t.version,
        "from_stage": t.from_stage.name, "to_stage": t.to_stage.name, "actor": t.actor, "reason": t.reason,
        "time": _dump_time(t.time), "override": t.override,
        "gate_results": [dump_gate_result(g) for g in t.gate_results], "caused_by": t.caused_by,
    }


def load_transition(data: dict | None) -> StageTransition | None:
    if data is None:
        return None
    return StageTransition(
        transition_id=data["transition_id"], model_name=data["model_name"], version=data["version"],
        from_stage=Stage[data["from_stage"]], to_stage=Stage[data["to_stage"]], actor=data.get("actor", ""),
        reason=data.get("reason", ""), time=_load_time(data["time"]), override=bool(data.get("override", False)),
        gate_results=tuple(load_gate_result(g) for g in data.get("gate_results", ())),
        caused_by=data.get("caused_by", ""),
    )


def dump_event(e: RegistryEvent) -> dict:
    """The event as JSON-able data, without its sequence (the row's key)."""
    return {
        "format": _FORMAT, "type": e.type.name, "time": _dump_time(e.time), "model_name": e.model_name,
        "version": e.version, "from_stage": _name(e.from_stage), "to_stage": _name(e.to_stage), "alias": e.alias,
        "actor": e.actor, "model_version": dump_model_version(e.model_version),
        "transition": dump_transition(e.transition),
    }


def load_event(data: dict, sequence: int) -> RegistryEvent:
    from_stage, to_stage = data.get("from_stage"), data.get("to_stage")
    return RegistryEvent(
        type=EventType[data["type"]], time=_load_time(data["time"]), model_name=data["model_name"],
        version=data.get("version", ""), from_stage=Stage[from_stage] if from_stage else None,
        to_stage=Stage[to_stage] if to_stage else None, alias=data.get("alias", ""), actor=data.get("actor", ""),
        model_version=load_model_version(data.get("model_version")),
        transition=load_transition(data.get("transition")), sequence=sequence,
    )

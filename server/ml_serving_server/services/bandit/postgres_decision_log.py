"""DecisionLogStore over PostgreSQL (asyncpg): the bandit's decision log.

Tables `bandit_decisions` and `bandit_decision_rewards` (migrations/, alembic, version table
`bandit_alembic_version`), migrated when the log first connects, not at start-up: the Bandit
service serves selections and rewards with PostgreSQL down, and the log catches up once it is
back (domain/decision_log.py keeps what is pending).

A batch is written by binary COPY into temporary tables, then inserted with ON CONFLICT DO
NOTHING, in one transaction: a batch written again after a lost acknowledgement adds nothing.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from datetime import datetime
from pathlib import Path
from typing import Sequence

import asyncpg
import numpy as np
from asyncpg import exceptions as pg_errors

from ...errors import DeadlineExceeded, Unavailable
from ...runtime import postgres_migrations as migrations
from .domain.decision_log import DecisionRecord, EvaluationRows, LogCursor, LoggedDecision, LoggedReward
from .domain.errors import ErrorReason

log = logging.getLogger(__name__)

VERSION_TABLE = "bandit_alembic_version"  # also in migrations/env.py
SCHEMA = migrations.Schema(Path(__file__).with_name("migrations"), VERSION_TABLE, (0x42414E44, 0),  # 'BAND'
                           "ml-serving-bandit")
_POOL_SIZE = 4
_DELETE_BATCH = 10_000

_DECISION_COLUMNS = ("bandit", "incarnation", "decided_at", "key", "decision_id", "user_id", "policy", "offered",
                     "chosen", "scores", "propensity", "choice_probabilities", "context")
_REWARD_COLUMNS = ("id", "bandit", "incarnation", "key", "arm", "reward", "rewarded_at")

_UNREACHABLE = (OSError, pg_errors.InterfaceError, pg_errors.InternalClientError, pg_errors.PostgresConnectionError,
                pg_errors.OperatorInterventionError, pg_errors.InsufficientResourcesError,
                pg_errors.ReadOnlySQLTransactionError, pg_errors.InvalidAuthorizationSpecificationError,
                pg_errors.InvalidCatalogNameError, *migrations.UNREACHABLE)


def _translate_errors(method):
    """PostgreSQL down or slow becomes UNAVAILABLE / DEADLINE_EXCEEDED with the log's reasons."""

    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except (asyncio.TimeoutError, pg_errors.QueryCanceledError) as exc:
            raise DeadlineExceeded(f"the decision log (PostgreSQL) answered too slowly: {type(exc).__name__}",
                                   reason=ErrorReason.DECISION_LOG_UNAVAILABLE) from exc
        except _UNREACHABLE as exc:
            raise Unavailable(f"the decision log (PostgreSQL) is unavailable: {type(exc).__name__}",
                              reason=ErrorReason.DECISION_LOG_UNAVAILABLE) from exc

    return wrapper


class PostgresDecisionLog:
    def __init__(self, url: str, timeout_s: float, evaluation_timeout_s: float):
        self._url, self._timeout, self._evaluation_timeout = url, timeout_s, evaluation_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._connecting = asyncio.Lock()

    async def _connected(self) -> asyncpg.Pool:
        """The pool, made (after migrating the schema) on first use and again after a failed try."""
        if self._pool is not None:
            return self._pool
        async with self._connecting:
            if self._pool is None:
                await migrations.upgrade(SCHEMA, self._url, self._timeout)
                self._pool = await asyncpg.create_pool(
                    self._url, min_size=0, max_size=_POOL_SIZE, timeout=self._timeout,
                    command_timeout=self._evaluation_timeout,
                    server_settings={"application_name": SCHEMA.application_name, "TimeZone": "UTC"})
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), self._timeout)
            except Exception:  # noqa: BLE001 - busy or unreachable connections
                self._pool.terminate()

    @_translate_errors
    async def write(self, decisions: Sequence[LoggedDecision], rewards: Sequence[LoggedReward]) -> None:
        pool = await self._connected()
        async with pool.acquire(timeout=self._timeout) as conn, conn.transaction():
            if decisions:
                await _insert_new(conn, "bandit_decisions", _DECISION_COLUMNS, [_decision_record(d) for d in decisions],
                                  self._timeout)
            if rewards:
                await _insert_new(conn, "bandit_decision_rewards", _REWARD_COLUMNS,
                                  [(r.id, r.bandit, r.incarnation, r.key, r.arm, r.reward, r.time) for r in rewards],
                                  self._timeout)

    @_translate_errors
    async def page(self, bandit: str, incarnation: int, start: datetime | None, end: datetime | None, limit: int,
                   after: LogCursor | None) -> list[DecisionRecord]:
        pool = await self._connected()
        rows = await pool.fetch(
            """SELECT d.*, coalesce(r.reward_sum, 0) AS reward_sum, coalesce(r.reward_count, 0) AS reward_count
                 FROM bandit_decisions d
                 LEFT JOIN LATERAL (SELECT sum(reward) AS reward_sum, count(*) AS reward_count
                                      FROM bandit_decision_rewards r
                                     WHERE r.bandit = d.bandit AND r.incarnation = d.incarnation AND r.key = d.key) r
                        ON true
                WHERE d.bandit = $1 AND d.incarnation = $2
                  AND ($3::timestamptz IS NULL OR d.decided_at >= $3) AND ($4::timestamptz IS NULL OR d.decided_at < $4)
                  AND ($5::timestamptz IS NULL OR (d.decided_at, d.key) < ($5, $6::bytea))
                ORDER BY d.decided_at DESC, d.key DESC
                LIMIT $7""",
            bandit, incarnation, start, end, after.time if after else None, after.key if after else None, limit,
            timeout=self._timeout)
        return [DecisionRecord(_decision_row(row), float(row["reward_sum"]), int(row["reward_count"])) for row in rows]

    @_translate_errors
    async def evaluation_rows(self, bandit: str, incarnation: int, start: datetime | None, end: datetime | None,
                              limit: int) -> EvaluationRows | None:
        pool = await self._connected()
        async with pool.acquire(timeout=self._timeout) as conn, conn.transaction(readonly=True,
                                                                                  isolation="repeatable_read"):
            # A log filled faster than autovacuum analyses it looks empty to the planner, which then
            # joins the rewards by a nested loop: quadratic. A hash join is right at any size.
            await conn.execute("SET LOCAL enable_nestloop = off")
            rows = await conn.fetch(
                """SELECT d.chosen[1] AS first, d.propensity, d.offered, d.context, r.reward
                     FROM bandit_decisions d
                     LEFT JOIN (SELECT key, arm, sum(reward) AS reward FROM bandit_decision_rewards
                                 WHERE bandit = $1 AND incarnation = $2 GROUP BY key, arm) r
                            ON r.key = d.key AND r.arm = d.chosen[1]
                    WHERE d.bandit = $1 AND d.incarnation = $2
                      AND ($3::timestamptz IS NULL OR d.decided_at >= $3)
                      AND ($4::timestamptz IS NULL OR d.decided_at < $4)
                    ORDER BY d.decided_at, d.key
                    LIMIT $5""",
                bandit, incarnation, start, end, limit + 1, timeout=self._evaluation_timeout)
        if len(rows) > limit:
            return None
        return _columns(rows)

    @_translate_errors
    async def delete_before(self, time: datetime) -> int:
        """Decisions made and rewards received before `time`, in batches (no long lock on the tables)."""
        pool = await self._connected()
        deleted = 0
        for table, column in (("bandit_decisions", "decided_at"), ("bandit_decision_rewards", "rewarded_at")):
            while True:
                status = await pool.execute(
                    f"DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} WHERE {column} < $1 LIMIT $2)",
                    time, _DELETE_BATCH, timeout=self._evaluation_timeout)
                count = int(status.split()[-1])
                deleted += count
                if count < _DELETE_BATCH:
                    break
        return deleted


async def _insert_new(conn: asyncpg.Connection, table: str, columns: tuple[str, ...], records: list[tuple],
                      timeout: float) -> None:
    staging = f"{table}_incoming"
    await conn.execute(f"CREATE TEMPORARY TABLE IF NOT EXISTS {staging} (LIKE {table}) ON COMMIT DELETE ROWS")
    await conn.copy_records_to_table(staging, records=records, columns=columns, timeout=timeout)
    names = ", ".join(columns)
    await conn.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM {staging} ON CONFLICT DO NOTHING",
                       timeout=timeout)


def _decision_record(d: LoggedDecision) -> tuple:
    return (d.bandit, d.incarnation, d.time, d.key, d.decision_id, d.user_id, d.policy, list(d.offered),
            list(d.chosen), list(d.scores), d.propensity, list(d.choice_probabilities), list(d.context))


def _decision_row(row: asyncpg.Record) -> LoggedDecision:
    return LoggedDecision(
        bandit=row["bandit"], incarnation=row["incarnation"], key=bytes(row["key"]), decision_id=row["decision_id"],
        time=row["decided_at"], user_id=row["user_id"], offered=tuple(row["offered"]), chosen=tuple(row["chosen"]),
        scores=tuple(row["scores"]), propensity=row["propensity"],
        choice_probabilities=tuple(row["choice_probabilities"]), context=tuple(row["context"]), policy=row["policy"])


def _columns(rows: list[asyncpg.Record]) -> EvaluationRows:
    n = len(rows)
    reward = np.fromiter((r["reward"] or 0.0 for r in rows), dtype=float, count=n)
    rewarded = np.fromiter((r["reward"] is not None for r in rows), dtype=bool, count=n)
    dimensions = {len(r["context"]) for r in rows}
    contexts = None
    if n and 0 not in dimensions and len(dimensions) == 1:
        contexts = np.array([r["context"] for r in rows], dtype=float)
    lengths = np.fromiter((len(r["offered"]) for r in rows), dtype=np.int64, count=n)
    flat = np.fromiter(itertools.chain.from_iterable(r["offered"] for r in rows), dtype=np.int64,
                       count=int(lengths.sum()))
    return EvaluationRows(
        first_chosen=np.fromiter((r["first"] for r in rows), dtype=np.int64, count=n),
        propensity=np.fromiter((r["propensity"] for r in rows), dtype=float, count=n),
        reward=reward, rewarded=rewarded, offered_flat=flat, offered_lengths=lengths, contexts=contexts)

"""Retraining runs and schedules over PostgreSQL (asyncpg): the RunStore and ScheduleStore ports.

Table `pipeline_retraining_runs` (migration p0003). The queue is the table itself: a worker
claims the oldest QUEUED run with `FOR UPDATE SKIP LOCKED` (concurrent claims skip each other's
row, so no run is claimed twice), and every later write of the worker is fenced by
(run_id, worker_id, attempt, state RUNNING): once the run is taken back (a missed heartbeat) or
ended, the stale worker's writes match no row.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Mapping, Sequence

import asyncpg

from .domain.ports import StateStoreUnavailable
from .domain.retraining import Attempt, Heartbeat, Run, RunError, RunState, Trigger
from .domain.schedules import Schedule
from .postgres_store import _APPLICATION_NAME, PooledStore, _state_errors, migrated_pool

_COLUMNS = """run_id::text AS run_id, seq, model_name, state, trigger, reason, parameters, schedule_id, alert_id,
              idempotency_key, attempt, max_attempts, worker_id, create_time, start_time, end_time,
              heartbeat_time, progress, stage, cancel_requested, metrics, mlflow_run_id, registered_version,
              error_reason, error_message, error_code"""
_ACTIVE_FENCE = "run_id = $1::uuid AND worker_id = $2 AND attempt = $3 AND state = 'RUNNING'"


def _run(record) -> Run:
    error = None
    if record["error_reason"] is not None:
        error = RunError(record["error_reason"], record["error_message"] or "", record["error_code"] or "INTERNAL")
    return Run(
        run_id=record["run_id"], model_name=record["model_name"], state=RunState(record["state"]),
        trigger=Trigger(record["trigger"]), create_time=record["create_time"], reason=record["reason"],
        parameters=json.loads(record["parameters"]), schedule_id=record["schedule_id"],
        alert_id=record["alert_id"], idempotency_key=record["idempotency_key"] or "", attempt=record["attempt"],
        max_attempts=record["max_attempts"], worker_id=record["worker_id"], start_time=record["start_time"],
        end_time=record["end_time"], heartbeat_time=record["heartbeat_time"], progress=record["progress"],
        stage=record["stage"], cancel_requested=record["cancel_requested"], metrics=json.loads(record["metrics"]),
        mlflow_run_id=record["mlflow_run_id"], registered_version=record["registered_version"], error=error)


class PostgresRunStore(PooledStore):
    """Its pool is a worker's training samples store's too (postgres_distributions.py)."""

    @classmethod
    async def connect(cls, url: str, *, timeout_seconds: float = 5.0) -> "PostgresRunStore":
        """Migrate (the pipeline's schema) and open a pool; StateStoreUnavailable when unreachable."""
        return cls(await migrated_pool(url, timeout_seconds, f"{_APPLICATION_NAME}-runs"), timeout_seconds)

    @_state_errors
    async def create(self, run: Run) -> tuple[Run, bool]:
        async with self._pool.acquire() as conn, conn.transaction():
            record = await conn.fetchrow(f"""
                INSERT INTO pipeline_retraining_runs (run_id, model_name, state, trigger, reason, parameters,
                    schedule_id, alert_id, idempotency_key, max_attempts, create_time)
                VALUES ($1::uuid, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, $11)
                ON CONFLICT DO NOTHING
                RETURNING {_COLUMNS}""",
                run.run_id, run.model_name, run.state.value, run.trigger.value, run.reason,
                json.dumps(run.parameters), run.schedule_id, run.alert_id, run.idempotency_key or None,
                run.max_attempts, run.create_time)
            if record is not None:
                return _run(record), False
            earlier = await conn.fetchrow(f"""
                SELECT {_COLUMNS} FROM pipeline_retraining_runs
                WHERE model_name = $1 AND (idempotency_key = $2
                      OR ($3 AND trigger = 'ALERT' AND state IN ('QUEUED', 'RUNNING')))
                ORDER BY seq LIMIT 1""", run.model_name, run.idempotency_key or None, run.trigger is Trigger.ALERT)
            if earlier is None:  # the conflicting run ended in between: a rare race, one more try
                raise StateStoreUnavailable("the retraining run store (a concurrent trigger; try again)")
            return _run(earlier), True

    @_state_errors
    async def get(self, run_id: str) -> Run | None:
        record = await self._pool.fetchrow(f"SELECT {_COLUMNS} FROM pipeline_retraining_runs WHERE run_id = $1::uuid",
                                           run_id)
        return None if record is None else _run(record)

    @_state_errors
    async def list(self, *, model_name: str, states: Sequence[RunState], limit: int, after_seq: int
                   ) -> tuple[list[Run], int | None]:
        records = await self._pool.fetch(f"""
            SELECT {_COLUMNS} FROM pipeline_retraining_runs
            WHERE ($1 = '' OR model_name = $1) AND (cardinality($2::text[]) = 0 OR state = ANY($2::text[]))
              AND ($3 = 0 OR seq < $3)
            ORDER BY seq DESC LIMIT $4""", model_name, [s.value for s in states], after_seq, limit + 1)
        more = len(records) > limit
        records = records[:limit]
        return [_run(r) for r in records], records[-1]["seq"] if more else None

    @_state_errors
    async def cancel(self, run_id: str, now: datetime) -> Run | None:
        record = await self._pool.fetchrow(f"""
            UPDATE pipeline_retraining_runs SET
                state = CASE WHEN state = 'QUEUED' THEN 'CANCELLED' ELSE state END,
                end_time = CASE WHEN state = 'QUEUED' THEN $2 ELSE end_time END,
                cancel_requested = cancel_requested OR state IN ('QUEUED', 'RUNNING')
            WHERE run_id = $1::uuid
            RETURNING {_COLUMNS}""", run_id, now)
        return None if record is None else _run(record)

    @_state_errors
    async def claim(self, worker_id: str, now: datetime) -> Run | None:
        record = await self._pool.fetchrow(f"""
            UPDATE pipeline_retraining_runs SET state = 'RUNNING', attempt = attempt + 1, worker_id = $1,
                start_time = $2, heartbeat_time = $2, progress = 0, stage = 'claimed',
                error_reason = NULL, error_message = NULL, error_code = NULL
            WHERE run_id = (SELECT run_id FROM pipeline_retraining_runs WHERE state = 'QUEUED'
                            ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED)
            RETURNING {_COLUMNS}""", worker_id, now)
        return None if record is None else _run(record)

    @_state_errors
    async def heartbeat(self, attempt: Attempt, now: datetime, progress: float, stage: str) -> Heartbeat:
        cancel = await self._pool.fetchval(f"""
            UPDATE pipeline_retraining_runs SET heartbeat_time = $4, progress = $5, stage = $6
            WHERE {_ACTIVE_FENCE} RETURNING cancel_requested""",
            attempt.run_id, attempt.worker_id, attempt.attempt, now, progress, stage)
        if cancel is None:
            return Heartbeat.LOST
        return Heartbeat.CANCEL if cancel else Heartbeat.OWNED

    @_state_errors
    async def finish(self, attempt: Attempt, now: datetime, state: RunState, *, metrics: Mapping[str, float] = {},
                     mlflow_run_id: str = "", registered_version: str = "", error: RunError | None = None) -> bool:
        status = await self._pool.execute(f"""
            UPDATE pipeline_retraining_runs SET state = $4, end_time = $5, heartbeat_time = $5,
                progress = CASE WHEN $4 = 'SUCCEEDED' THEN 1 ELSE progress END, stage = lower($4),
                metrics = $6::jsonb, mlflow_run_id = $7, registered_version = $8,
                error_reason = $9, error_message = $10, error_code = $11
            WHERE {_ACTIVE_FENCE}""",
            attempt.run_id, attempt.worker_id, attempt.attempt, state.value, now, json.dumps(dict(metrics)),
            mlflow_run_id, registered_version, *_error_columns(error))
        return status.endswith(" 1")

    @_state_errors
    async def requeue(self, attempt: Attempt, now: datetime, error: RunError) -> RunState | None:
        state = await self._pool.fetchval(f"""
            UPDATE pipeline_retraining_runs SET heartbeat_time = $4,
                state = CASE WHEN cancel_requested THEN 'CANCELLED' ELSE 'QUEUED' END,
                end_time = CASE WHEN cancel_requested THEN $4 ELSE end_time END,
                stage = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued again after a failed attempt' END,
                error_reason = CASE WHEN cancel_requested THEN NULL ELSE $5 END,
                error_message = CASE WHEN cancel_requested THEN NULL ELSE $6 END,
                error_code = CASE WHEN cancel_requested THEN NULL ELSE $7 END
            WHERE {_ACTIVE_FENCE}
            RETURNING state""",
            attempt.run_id, attempt.worker_id, attempt.attempt, now, *_error_columns(error))
        return None if state is None else RunState(state)

    @_state_errors
    async def sweep(self, stale_before: datetime, now: datetime) -> list[Run]:
        records = await self._pool.fetch(f"""
            UPDATE pipeline_retraining_runs SET
                state = CASE WHEN cancel_requested THEN 'CANCELLED'
                             WHEN attempt < max_attempts THEN 'QUEUED' ELSE 'FAILED' END,
                end_time = CASE WHEN cancel_requested OR attempt >= max_attempts THEN $2 ELSE end_time END,
                stage = CASE WHEN cancel_requested THEN 'cancelled'
                             WHEN attempt < max_attempts THEN 'queued again: its worker was lost' ELSE 'failed' END,
                error_reason = CASE WHEN cancel_requested THEN NULL ELSE 'WORKER_LOST' END,
                error_code = CASE WHEN cancel_requested THEN NULL ELSE 'UNAVAILABLE' END,
                error_message = CASE WHEN cancel_requested THEN NULL
                                     ELSE 'worker ' || worker_id || ' sent no heartbeat since ' || heartbeat_time::text END
            WHERE run_id IN (SELECT run_id FROM pipeline_retraining_runs
                             WHERE state = 'RUNNING' AND heartbeat_time < $1 FOR UPDATE SKIP LOCKED)
            RETURNING {_COLUMNS}""", stale_before, now)
        return [_run(r) for r in records]

    @_state_errors
    async def totals(self, bounds_s: Sequence[float]) -> tuple[int, dict[str, tuple[int, float, list[int]]]]:
        """(runs queued, per ended state: (runs, their seconds summed, runs of at most each bound)), the
        duration of a run from its start (its creation, if it never started) to its end. Two queries:
        the queued ones by the partial index, the ended ones by one pass over the table."""
        within = ", ".join(f"count(*) FILTER (WHERE seconds <= {float(bound)!r})" for bound in bounds_s)
        # A periodic task's read: the wait for a connection is bounded too (each query by command_timeout).
        async with self._pool.acquire(timeout=self._timeout) as conn:
            queued = await conn.fetchval("SELECT count(*) FROM pipeline_retraining_runs WHERE state = 'QUEUED'")
            records = await conn.fetch(f"""
                SELECT state, count(*) AS runs, coalesce(sum(seconds), 0)::float8 AS seconds
                       {", " + within if within else ""}
                FROM (SELECT state, greatest(extract(epoch FROM end_time - coalesce(start_time, create_time)),
                                             0)::float8 AS seconds
                      FROM pipeline_retraining_runs
                      WHERE state IN ('SUCCEEDED', 'FAILED', 'CANCELLED') AND end_time IS NOT NULL) AS ended
                GROUP BY state""")
        return queued, {r["state"]: (r["runs"], r["seconds"], list(r.values())[3:]) for r in records}


def _error_columns(error: RunError | None) -> tuple:
    return (None, None, None) if error is None else (error.reason, error.message, error.code)


# ----- schedules -----

_SCHEDULE_COLUMNS = """schedule_id::text AS schedule_id, seq, model_name, cron, time_zone, parameters, reason, enabled,
                       jitter_seconds, created_by, create_time, next_run_time, last_run_time, last_run_id"""


def _schedule(record) -> Schedule:
    return Schedule(
        schedule_id=record["schedule_id"], model_name=record["model_name"], cron=record["cron"],
        time_zone=record["time_zone"], create_time=record["create_time"], next_run_time=record["next_run_time"],
        parameters=json.loads(record["parameters"]), reason=record["reason"], enabled=record["enabled"],
        jitter_seconds=record["jitter_seconds"], created_by=record["created_by"],
        last_run_time=record["last_run_time"], last_run_id=record["last_run_id"])


class PostgresScheduleStore:
    """The ScheduleStore port, on the pool of the run store (table pipeline_retraining_schedules)."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    @_state_errors
    async def create(self, schedule: Schedule) -> None:
        await self._pool.execute("""
            INSERT INTO pipeline_retraining_schedules (schedule_id, model_name, cron, time_zone, parameters, reason,
                enabled, jitter_seconds, created_by, create_time, next_run_time)
            VALUES ($1::uuid, $2, $3, $4, $5::jsonb, $6, $7, $8, $9, $10, $11)""",
            schedule.schedule_id, schedule.model_name, schedule.cron, schedule.time_zone,
            json.dumps(schedule.parameters), schedule.reason, schedule.enabled, schedule.jitter_seconds,
            schedule.created_by, schedule.create_time, schedule.next_run_time)

    @_state_errors
    async def get(self, schedule_id: str) -> Schedule | None:
        record = await self._pool.fetchrow(
            f"SELECT {_SCHEDULE_COLUMNS} FROM pipeline_retraining_schedules WHERE schedule_id = $1::uuid", schedule_id)
        return None if record is None else _schedule(record)

    @_state_errors
    async def list(self, *, model_name: str, limit: int, after_seq: int) -> tuple[list[Schedule], int | None]:
        records = await self._pool.fetch(f"""
            SELECT {_SCHEDULE_COLUMNS} FROM pipeline_retraining_schedules
            WHERE ($1 = '' OR model_name = $1) AND seq > $2 ORDER BY seq LIMIT $3""", model_name, after_seq, limit + 1)
        more = len(records) > limit
        records = records[:limit]
        return [_schedule(r) for r in records], records[-1]["seq"] if more else None

    @_state_errors
    async def delete(self, schedule_id: str) -> bool:
        status = await self._pool.execute("DELETE FROM pipeline_retraining_schedules WHERE schedule_id = $1::uuid",
                                          schedule_id)
        return status.endswith(" 1")

    @_state_errors
    async def due(self, now: datetime) -> list[Schedule]:
        records = await self._pool.fetch(f"""
            SELECT {_SCHEDULE_COLUMNS} FROM pipeline_retraining_schedules
            WHERE enabled AND next_run_time <= $1 ORDER BY next_run_time LIMIT 1000""", now)
        return [_schedule(r) for r in records]

    @_state_errors
    async def advance(self, schedule: Schedule, *, last_run_time: datetime, last_run_id: str,
                      next_run_time: datetime) -> bool:
        status = await self._pool.execute("""
            UPDATE pipeline_retraining_schedules SET last_run_time = $3, last_run_id = $4, next_run_time = $5
            WHERE schedule_id = $1::uuid AND next_run_time = $2""",
            schedule.schedule_id, schedule.next_run_time, last_run_time, last_run_id, next_run_time)
        return status.endswith(" 1")

"""Training samples over PostgreSQL (asyncpg): the TrainingDistributions port.

Table `pipeline_training_samples` (migration p0006), one row per (run, feature) holding the
sample as a double precision[]. The newest run of a model is the one of its newest row (seq):
saving a run's samples again (a retried save) updates its rows in place, so it stays as old as
it was.
"""

from __future__ import annotations

from datetime import datetime
from typing import Mapping, Sequence

import asyncpg

from .postgres_store import _state_errors

_SAVE = """
    INSERT INTO pipeline_training_samples (run_id, feature, model_name, registered_version, stored_at, sample)
    VALUES ($1::uuid, $2, $3, $4, $5, $6::float8[])
    ON CONFLICT (run_id, feature) DO UPDATE
    SET model_name = EXCLUDED.model_name, registered_version = EXCLUDED.registered_version,
        stored_at = EXCLUDED.stored_at, sample = EXCLUDED.sample"""

_LATEST = """
    SELECT sample FROM pipeline_training_samples
    WHERE feature = $2 AND run_id = (SELECT run_id FROM pipeline_training_samples WHERE model_name = $1
                                     ORDER BY seq DESC LIMIT 1)"""


class PostgresTrainingDistributions:
    """The TrainingDistributions port, on the pipeline's state pool (migrated by whoever opened it)."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    @_state_errors
    async def save(self, model_name: str, registered_version: str, run_id: str,
                   samples: Mapping[str, Sequence[float]], at: datetime) -> None:
        rows = [(run_id, feature, model_name, registered_version, at, [float(v) for v in values])
                for feature, values in sorted(samples.items())]
        if not rows:
            return
        async with self._pool.acquire() as conn, conn.transaction():  # a run's samples all or none
            await conn.executemany(_SAVE, rows)

    @_state_errors
    async def latest(self, model_name: str, feature: str) -> list[float]:
        sample = await self._pool.fetchval(_LATEST, model_name, feature)
        return list(sample or [])

"""Scheduled materialisation in real servers over real PostgreSQL and Redis: two replicas with
the scheduler on start exactly one job for a due time, and it fills the online store."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb

from ml_serving_tools.devauth import mint_token

from .conftest import pipeline_server, stub_to

SCHEDULED = """
views:
  - name: {name}
    entity: {{name: user, join_key: user_id, key_type: int}}
    features:
      - {{name: score, type: float}}
    source:
      query: SELECT user_id, score, updated_at FROM {users}
      event_time_column: updated_at
    materialization_schedule: "0 0 1 1 *"
"""


async def jobs_of(database_url: str, view: str) -> list[tuple[str, str, int]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT job_id::text, state, entities_written FROM pipeline_materialization_jobs "
                                "WHERE feature_view = $1", view)
        return [tuple(row) for row in rows]
    finally:
        await conn.close()


async def test_two_replicas_run_a_due_schedule_once(tmp_path, source_tables, redis_url, key_prefix, database_url,
                                                    dev_keys):
    name = f"scheduled_{uuid.uuid4().hex[:8]}"  # (its own jobs in the shared database)
    (tmp_path / "views.yaml").write_text(SCHEDULED.format(name=name, users=source_tables["users"]))
    prefix = f"{key_prefix}:{uuid.uuid4().hex[:6]}"
    options = {"materialization_scheduler_enabled": True, "materialization_scheduler_tick_seconds": 0.1}
    async with pipeline_server(tmp_path, redis_url, prefix, database_url, dev_keys, **options) as first, \
            pipeline_server(tmp_path, redis_url, prefix, database_url, dev_keys, **options):
        # Due since last 1 January 00:00 and never run: the first look of either replica starts it.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            jobs = await jobs_of(database_url, name)
            if jobs and jobs[0][1] == "SUCCEEDED":
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # ten more looks by each replica
        (job,) = await jobs_of(database_url, name)
        assert job[1:] == ("SUCCEEDED", 200)
        async with stub_to(first, mint_token(dev_keys, subject="scheduled")) as stub:
            read = await stub.GetFeatures(pb.GetFeaturesRequest(feature_view=name, entity_id="7",
                                                                disable_read_through=True))
            assert read.entities[0].found
            assert read.entities[0].features["score"].source == pb.FEATURE_VALUE_SOURCE_ONLINE_STORE

"""PipelineClient.get_feature_values and the blocking FeatureStore against a real Pipeline server
(production interceptors, tokens checked) over a source table of this module's own in the
session's PostgreSQL and the session's Redis: values come back typed as dicts and as a DataFrame,
materialised or read through, with event times, and entities found nowhere are explicit."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import pandas as pd
import pytest

from ml_serving import FeatureStore, NotFoundError, PipelineClient
from ml_serving.pipeline import feature_views_as_dicts
from ml_serving_server.app import build_server
from ml_serving_server.services.pipeline.settings import PipelineSettings

from ...support import test_runtime

UPDATED = datetime(2026, 1, 1, tzinfo=timezone.utc)
VIEWS = """
views:
  - name: people
    entity: {{name: person, join_key: person_id, key_type: int}}
    features:
      - {{name: age, type: int}}
      - {{name: score, type: float}}
      - {{name: premium, type: bool}}
      - {{name: country, type: string}}
      - {{name: taste, type: embedding, dimension: 3}}
      - {{name: recent, type: int_list}}
    source:
      query: SELECT person_id, age, score, premium, country, taste, recent, updated_at FROM {table}
      event_time_column: updated_at
    compute_on_miss: true
"""


def expected(i: int) -> dict:
    """Person i's features as the table holds them (every 10th has no country)."""
    return {"age": 20 + i, "score": i / 4, "premium": i % 2 == 0, "country": None if i % 10 == 0 else f"c{i}",
            "taste": [float(i), 0.5, -1.0], "recent": [i, i + 1]}


@pytest.fixture(scope="module")
async def pipeline_address(database_url, redis_url, key_prefix, dev_keys, tmp_path_factory):
    """A Pipeline server over people 1..50 (person i updated at UPDATED + i minutes)."""
    table = f"client_people_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url)
    await conn.execute(f"""
        CREATE TABLE {table} (person_id bigint PRIMARY KEY, age int, score double precision, premium bool,
            country text, taste double precision[], recent bigint[], updated_at timestamptz NOT NULL);
        INSERT INTO {table} SELECT i, 20 + i, i / 4.0, i % 2 = 0, CASE WHEN i % 10 = 0 THEN NULL ELSE 'c' || i END,
            ARRAY[i, 0.5, -1.0], ARRAY[i, i + 1], TIMESTAMPTZ '2026-01-01 00:00+00' + i * interval '1 minute'
        FROM generate_series(1, 50) AS i""")
    folder = tmp_path_factory.mktemp("client-features")
    (folder / "views.yaml").write_text(VIEWS.format(table=table))
    runtime = test_runtime(redis_url, f"{key_prefix}:client-{uuid.uuid4().hex[:6]}", keys=dev_keys,
                           database_url=database_url, services=("pipeline",))
    server = await build_server(runtime, service_settings={
        "pipeline": PipelineSettings(feature_views_dir=str(folder), materialization_batch_entries=20)})
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop(1.0)
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


@pytest.fixture(scope="module")
async def pipeline(pipeline_address, token):
    async with PipelineClient(pipeline_address, token=token) as client:
        yield client


async def test_values_as_dicts_read_through_then_from_the_online_store(pipeline):
    first = await pipeline.get_feature_values("people", [1, 10, 999])  # nothing materialised yet: read through
    assert first == {1: expected(1), 10: expected(10), 999: None}
    assert type(first[1]["age"]) is int and type(first[1]["score"]) is float and first[10]["country"] is None
    raw = await pipeline.get_features("people", entity_ids=["1"])
    assert raw.entities[0].features["age"].source == 1  # FEATURE_VALUE_SOURCE_ONLINE_STORE: written back
    # Only what is online without read-through: 2 was never read nor materialised.
    assert await pipeline.get_feature_values("people", ["1", "2"], read_through=False) == \
        {"1": expected(1), "2": None}


async def test_a_materialised_view_as_a_dataframe_with_event_times(pipeline):
    jobs = await pipeline.materialize_features("people", mode="FULL", wait=True)
    assert [job.entities_written for job in jobs.jobs] == [50]
    ids = [*range(1, 51), 404]
    frame = await pipeline.get_feature_values("people", ids, as_dataframe=True, with_event_times=True,
                                              read_through=False)
    assert list(frame.index) == ids and frame.attrs["not_found"] == [404]
    names = sorted(expected(1))
    assert list(frame.columns) == names + [f"{name}__event_time" for name in names]
    assert str(frame["age"].dtype) == "Int64" and str(frame["premium"].dtype) == "boolean"  # 404 is missing
    for i in (1, 7, 50):
        row = frame.loc[i]
        assert {name: row[name] for name in expected(i) if name != "country"} == \
            {k: v for k, v in expected(i).items() if k != "country"}
        assert row["age__event_time"] == pd.Timestamp(UPDATED + timedelta(minutes=i))
    assert pd.isna(frame.loc[10, "country"]) and frame.loc[11, "country"] == "c11"
    assert frame.loc[404].isna().all()
    chosen = await pipeline.get_feature_values("people", [3], features=["taste", "age"], as_dataframe=True)
    assert list(chosen.columns) == ["taste", "age"] and chosen.loc[3, "taste"] == [3.0, 0.5, -1.0]


async def test_the_blocking_feature_store_reads_the_same(pipeline_address, token, pipeline):
    def read():
        with FeatureStore(pipeline_address, token=token) as store:
            return store.get_feature_values("people", [5, 6], features=["age", "recent"])
    assert await asyncio.to_thread(read) == {5: {"age": 25, "recent": [5, 6]}, 6: {"age": 26, "recent": [6, 7]}}


async def test_schema_as_dicts_and_errors(pipeline):
    views = feature_views_as_dicts(await pipeline.get_feature_schema())
    assert views["people"]["entity"]["join_key"] == "person_id"
    assert views["people"]["features"]["taste"] == {"type": "FEATURE_TYPE_DOUBLE_LIST", "dimension": 3}
    with pytest.raises(NotFoundError) as caught:
        await pipeline.get_feature_values("nope", [1])
    assert caught.value.reason == "FEATURE_VIEW_NOT_FOUND"

"""A Pipeline-only server over views of this test module's own source tables (created in the
session's database), with tokens checked."""

from __future__ import annotations

import contextlib
import uuid

import asyncpg
import grpc
import pytest
from mnbara.mlserving.pipeline.v1 import pipeline_pb2_grpc

from ml_serving_server.app import build_server
from ml_serving_server.services.pipeline.settings import PipelineSettings
from ml_serving_tools.devauth import mint_token

from ...support import bearer, test_runtime

VIEWS = """
views:
  - name: profile
    entity: {{name: user, join_key: user_id, key_type: int}}
    features:
      - {{name: score, type: float}}
      - {{name: level, type: int}}
      - {{name: premium, type: bool}}
      - {{name: country, type: string}}
      - {{name: taste, type: embedding, dimension: 2}}
    source:
      query: SELECT user_id, score, level, premium, country, taste, updated_at FROM {users}
      event_time_column: updated_at
    ttl: 1d
    compute_on_miss: true
  - name: activity
    entity: {{name: user, join_key: user_id, key_type: int}}
    features:
      - {{name: events, type: int}}
      - {{name: recent, type: int_list}}
    source:
      query: |
        SELECT user_id, count(*) AS events, (array_agg(item_id ORDER BY t DESC))[1:3] AS recent, max(t) AS t
        FROM {events} GROUP BY user_id
      event_time_column: t
  - name: handles
    entity: {{name: handle, join_key: handle, key_type: string}}
    features:
      - {{name: tags, type: string_list}}
    source:
      query: SELECT handle, tags, t FROM {handles}
      event_time_column: t
    compute_on_miss: true
"""


@pytest.fixture(scope="module")
async def source_tables(database_url):
    """users 1..200 (updated 2026-01-01 + id minutes), events of users 0..9, handles a..e."""
    suffix = uuid.uuid4().hex[:8]
    names = {"users": f"plt_users_{suffix}", "events": f"plt_events_{suffix}", "handles": f"plt_handles_{suffix}"}
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"""
            CREATE TABLE {names['users']} (user_id bigint PRIMARY KEY, score double precision, level int,
                premium bool, country text, taste real[], updated_at timestamptz NOT NULL);
            INSERT INTO {names['users']} SELECT i, i / 2.0, i % 5, i % 2 = 0, 'c' || i, ARRAY[i, 1]::real[],
                TIMESTAMPTZ '2026-01-01 00:00+00' + i * interval '1 minute' FROM generate_series(1, 200) AS i;
            CREATE TABLE {names['events']} (user_id bigint, item_id bigint, t timestamptz);
            INSERT INTO {names['events']} SELECT i % 10, i, TIMESTAMPTZ '2026-01-01 00:00+00' + i * interval '1 second'
                FROM generate_series(1, 50) AS i;
            CREATE TABLE {names['handles']} (handle text, tags text[], t timestamptz);
            INSERT INTO {names['handles']} SELECT h, ARRAY[h, upper(h)], TIMESTAMPTZ '2026-01-01 00:00+00'
                FROM unnest(ARRAY['a', 'b', 'c', 'd', 'e']) AS h;""")
        yield names
    finally:
        await conn.execute("; ".join(f"DROP TABLE IF EXISTS {t}" for t in names.values()))
        await conn.close()


@pytest.fixture(scope="module")
def features_dir(tmp_path_factory, source_tables):
    folder = tmp_path_factory.mktemp("features")
    (folder / "views.yaml").write_text(VIEWS.format(**source_tables))
    return folder


@contextlib.asynccontextmanager
async def pipeline_server(features_dir, redis_url, key_prefix, database_url, dev_keys=None, **settings):
    runtime = test_runtime(redis_url, key_prefix, keys=dev_keys, database_url=database_url, services=("pipeline",))
    server = await build_server(runtime, service_settings={
        "pipeline": PipelineSettings(feature_views_dir=str(features_dir), **settings)})
    try:
        yield server
    finally:
        await server.stop(1.0)


@contextlib.asynccontextmanager
async def stub_to(server, token: str | None = None):
    interceptors = bearer(token) if token else []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", interceptors=interceptors) as channel:
        yield pipeline_pb2_grpc.PipelineServiceStub(channel)


@pytest.fixture(scope="module")
async def server(features_dir, redis_url, key_prefix, database_url, dev_keys):
    prefix = f"{key_prefix}:{uuid.uuid4().hex[:6]}"
    async with pipeline_server(features_dir, redis_url, prefix, database_url, dev_keys,
                               materialization_batch_entries=50) as server:
        yield server


@pytest.fixture(scope="module")
async def stub(server, dev_keys):
    async with stub_to(server, mint_token(dev_keys, subject="pipeline-tests")) as stub:
        yield stub

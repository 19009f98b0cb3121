"""GetTrainingSet through an in-process server (production interceptors, tokens checked) over real
PostgreSQL: the streamed, column-wise answer of inline rows and of an entity query, values as of
each row's timestamp and never later (future rows planted), the errors, the scope, and
PostgreSQL down."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb

from ml_serving_tools.devauth import mint_token

from ...registry.faults import CuttableProxy
from ...support import error_info
from .conftest import pipeline_server, stub_to
from .test_dependencies_down import _via

T1 = datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
T2 = T1 + timedelta(days=1)
T3 = T1 + timedelta(days=2)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

VIEWS = """
views:
  - name: scores
    entity: {{name: user, join_key: user_id, key_type: int}}
    features:
      - {{name: score, type: float}}
      - {{name: tags, type: string_list}}
    source:
      query: SELECT user_id, score, tags, t FROM {history}
      event_time_column: t
  - name: fresh_scores
    entity: {{name: user, join_key: user_id, key_type: int}}
    features:
      - {{name: score, type: float}}
    source:
      query: SELECT user_id, score, t FROM {history}
      event_time_column: t
    ttl: 12h
  - name: totals
    entity: {{name: user, join_key: user_id, key_type: int}}
    features:
      - {{name: n, type: int}}
    source:
      query: SELECT user_id, count(*) AS n, max(t) AS t FROM {history} GROUP BY user_id
      event_time_column: t
"""


@pytest.fixture(scope="module")
async def tables(database_url):
    suffix = uuid.uuid4().hex[:8]
    names = {"history": f"ptt_history_{suffix}", "events": f"ptt_events_{suffix}"}
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"""
            CREATE TABLE {names['history']} (user_id bigint, score double precision, tags text[], t timestamptz);
            CREATE TABLE {names['events']} (user_id bigint, event_time timestamptz, clicked bool, weight numeric);""")
        await conn.executemany(f"INSERT INTO {names['history']} VALUES ($1, $2, $3, $4)", [
            (1, 1.0, ["a"], T1), (1, 2.0, ["b", "c"], T2), (1, 3.0, None, T3), (2, 20.0, [], T2)])
        await conn.executemany(f"INSERT INTO {names['events']} VALUES ($1, $2, $3, $4)", [
            (1, T1 - timedelta(seconds=1), False, 1.5), (1, T2 + timedelta(hours=1), True, None),
            (2, T3, True, 2), (1, T3 + timedelta(days=1), False, 0)])
        yield names
    finally:
        await conn.execute("; ".join(f"DROP TABLE IF EXISTS {t}" for t in names.values()))
        await conn.close()


@pytest.fixture(scope="module")
def views_dir(tmp_path_factory, tables):
    folder = tmp_path_factory.mktemp("training-views")
    (folder / "views.yaml").write_text(VIEWS.format(**tables))
    return folder


@pytest.fixture(scope="module")
async def server(views_dir, redis_url, key_prefix, database_url, dev_keys):
    async with pipeline_server(views_dir, redis_url, f"{key_prefix}:{uuid.uuid4().hex[:6]}", database_url, dev_keys,
                               training_set_batch_entries=2) as server:
        yield server


@pytest.fixture(scope="module")
async def stub(server, dev_keys):
    async with stub_to(server, mint_token(dev_keys, scopes=["pipeline.read"], subject="trainer")) as stub:
        yield stub


def stamp(value: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(value)
    return message


def micros(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


def inline(*rows, features=("scores",)) -> pb.GetTrainingSetRequest:
    return pb.GetTrainingSetRequest(features=features, entity_rows=pb.TrainingSetEntityRows(rows=[
        pb.TrainingSetEntityRow(entity_ids={"user_id": str(user)}, timestamp=stamp(at), columns=columns)
        for user, at, columns in rows]))


async def stream(call) -> list[pb.GetTrainingSetResponse]:
    return [message async for message in call]


def column(message: pb.TrainingSetColumn, field: str) -> list:
    if field == "string_values" and message.list_lengths:  # a list column: flat, cut by the lengths
        flat, starts = list(message.string_values), [0, *itertools.accumulate(message.list_lengths)]
        values = [flat[start:end] for start, end in zip(starts, starts[1:])]
    else:
        values = list(getattr(message, field))
    for i in message.null_rows:
        values[i] = None
    return values


def table(messages) -> list[dict]:
    """The answer row by row: {"row", "ids", "ts", "columns", "views": [(event time, [values]) | None]}."""
    header = messages[0]
    fields = {pb.FEATURE_TYPE_DOUBLE: "double_values", pb.FEATURE_TYPE_INT64: "int64_values",
              pb.FEATURE_TYPE_STRING_LIST: "string_values"}
    rows = []
    for message in messages:
        values = [column(c, fields[f.type]) for c, f in zip(message.values, header.features)]
        times = [column(c, "timestamp_micros") for c in message.event_times]
        for i in range(message.row_count):
            views, at = [], 0
            for v, name in enumerate(header.feature_views):
                width = sum(1 for f in header.features if f.feature_view == name)
                views.append(None if times[v][i] is None else (times[v][i], [c[i] for c in values[at:at + width]]))
                at += width
            rows.append({"row": message.row_indexes[i], "ids": [c.string_values[i] for c in message.entity_ids],
                         "ts": column(message.timestamps, "timestamp_micros")[i],
                         "columns": [next(iter(column(c, f) for f in ("bool_values", "double_values",
                                                                      "timestamp_micros", "string_values")
                                               if len(getattr(c, f))), None)[i] for c in message.columns],
                         "views": views})
    return rows


async def test_inline_rows_stream_values_as_of_their_time_in_batches(stub):
    label = {"clicked": pb.FeatureValue(bool_value=True)}
    messages = await stream(stub.GetTrainingSet(inline(
        (1, T1 - timedelta(seconds=1), label), (1, T2, {}), (1, T2 + timedelta(hours=1), label), (2, T1, label),
        (1, T3 + timedelta(days=9), {"clicked": pb.FeatureValue()}), features=["scores", "fresh_scores:score"])))
    header = messages[0]
    assert (list(header.join_keys), list(header.column_names), list(header.feature_views)) == (
        ["user_id"], ["clicked"], ["scores", "fresh_scores"])
    assert [(f.feature_view, f.name, f.type) for f in header.features] == [
        ("scores", "score", pb.FEATURE_TYPE_DOUBLE), ("scores", "tags", pb.FEATURE_TYPE_STRING_LIST),
        ("fresh_scores", "score", pb.FEATURE_TYPE_DOUBLE)]
    assert [m.row_count for m in messages] == [2, 2, 1] and not messages[1].feature_views
    rows = table(messages)
    assert [r["row"] for r in rows] == [0, 1, 2, 3, 4] and all(r["ids"] == ["1"] for r in rows[:3])
    assert [r["columns"] for r in rows] == [[True], [None], [True], [True], [None]]
    assert rows[0]["views"] == [None, None]  # before the first value
    assert rows[1]["views"] == [(micros(T2), [2.0, ["b", "c"]]), (micros(T2), [2.0])]
    assert rows[2]["views"] == [(micros(T2), [2.0, ["b", "c"]]), (micros(T2), [2.0])]
    assert rows[3]["views"] == [None, None]  # user 2's first value is at T2
    assert rows[4]["views"] == [(micros(T3), [3.0, None]), None]  # past the 12 h TTL of fresh_scores
    assert rows[4]["ts"] == micros(T3 + timedelta(days=9))


async def test_an_entity_query_never_sees_planted_future_values(stub, tables, database_url):
    request = pb.GetTrainingSetRequest(
        entity_query=f"SELECT user_id, event_time, clicked, weight FROM {tables['events']} ORDER BY event_time",
        features=["scores:score"])
    before = table(await stream(stub.GetTrainingSet(request)))
    assert [(r["ids"], r["columns"], r["views"]) for r in before] == [
        (["1"], [False, 1.5], [None]),
        (["1"], [True, None], [(micros(T2), [2.0])]),
        (["2"], [True, 2.0], [(micros(T2), [20.0])]),
        (["1"], [False, 0.0], [(micros(T3), [3.0])])]
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"INSERT INTO {tables['history']} SELECT u, 1e300, ARRAY['leak'], $1 "
                           f"FROM generate_series(1, 3) AS u", T3 + timedelta(days=1, microseconds=1))
        after = table(await stream(stub.GetTrainingSet(request)))
    finally:
        await conn.execute(f"DELETE FROM {tables['history']} WHERE score = 1e300")
        await conn.close()
    assert after == before


async def failed(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream(call)
    return caught.value


@pytest.mark.parametrize("request_, code, reason, field", [
    (pb.GetTrainingSetRequest(features=["scores"]), "INVALID_ARGUMENT", "INVALID_FIELD", "entity_dataframe"),
    (pb.GetTrainingSetRequest(features=["nope"], entity_query="SELECT 1"), "NOT_FOUND", "FEATURE_VIEW_NOT_FOUND", None),
    (pb.GetTrainingSetRequest(features=["scores:nope"], entity_query="SELECT 1"), "INVALID_ARGUMENT",
     "UNKNOWN_FEATURE", "features[0]"),
    (pb.GetTrainingSetRequest(features=["scores", "totals"], entity_query="SELECT 1"), "FAILED_PRECONDITION",
     "VIEW_NOT_POINT_IN_TIME", "features[1]"),
    (pb.GetTrainingSetRequest(features=["scores"], entity_query="SELECT user_id FROM nowhere"), "INVALID_ARGUMENT",
     "INVALID_FIELD", "entity_query"),
    (pb.GetTrainingSetRequest(features=["scores"], entity_query="SELECT 1 AS user_id, now() AS t, 2 AS n",
                              timestamp_column="n"), "INVALID_ARGUMENT", "INVALID_FIELD", "timestamp_column"),
    (inline(*[(1, T1, {})] * 10_001), "INVALID_ARGUMENT", "TOO_MANY_ENTITIES", "entity_rows.rows"),
    (pb.GetTrainingSetRequest(features=["scores"], entity_rows=pb.TrainingSetEntityRows(rows=[
        pb.TrainingSetEntityRow(entity_ids={"user_id": "x"}, timestamp=stamp(T1))])), "INVALID_ARGUMENT",
     "INVALID_FIELD", "entity_rows.rows[0].entity_ids[user_id]"),
], ids=["no-dataframe", "unknown-view", "unknown-feature", "aggregate-view", "bad-query", "bad-timestamp-column",
        "too-many-rows", "bad-key"])
async def test_errors_name_the_field(stub, request_, code, reason, field):
    error = await failed(stub.GetTrainingSet(request_))
    info = error_info(error)
    assert (error.code().name, info.reason) == (code, reason), error.details()
    if field:
        assert info.metadata["field"] == field


async def test_it_needs_pipeline_read(server, dev_keys):
    async with stub_to(server, mint_token(dev_keys, scopes=["pipeline.write"], subject="writer")) as writer:
        error = await failed(writer.GetTrainingSet(inline((1, T1, {}))))
    assert (error.code(), error_info(error).metadata["scope"]) == (grpc.StatusCode.PERMISSION_DENIED, "pipeline.read")


async def test_postgres_down_is_source_unavailable(views_dir, redis_url, key_prefix, database_url, dev_keys):
    proxy = await CuttableProxy("127.0.0.1", urlsplit(database_url).port or 5432).start()
    try:
        async with pipeline_server(views_dir, redis_url, f"{key_prefix}:{uuid.uuid4().hex[:6]}",
                                   _via(database_url, proxy.port), dev_keys, database_timeout_seconds=1.0,
                                   training_set_statement_timeout_seconds=1.0) as server, \
                stub_to(server, mint_token(dev_keys)) as stub:
            assert table(await stream(stub.GetTrainingSet(inline((1, T2, {})))))[0]["views"] == [
                (micros(T2), [2.0, ["b", "c"]])]
            proxy.cut_after(0)
            for request in (inline((1, T2, {})), pb.GetTrainingSetRequest(features=["scores"],
                                                                        entity_query="SELECT 1 AS user_id, now()")):
                error = await failed(stub.GetTrainingSet(request))
                assert (error.code(), error_info(error).reason) == (grpc.StatusCode.UNAVAILABLE, "SOURCE_UNAVAILABLE")
    finally:
        await proxy.stop()


async def test_a_client_that_stops_reading_frees_the_connection(stub):
    request = pb.GetTrainingSetRequest(features=["scores"], entity_query=(
        "SELECT 1 + g % 3 AS user_id, TIMESTAMPTZ '2026-03-05 00:00+00' AS ts FROM generate_series(1, 200000) AS g"))
    for _ in range(12):  # more than the source pool's 10 connections
        call = stub.GetTrainingSet(request)
        async for message in call:
            assert message.row_count == 2
            break
        call.cancel()
    (rows,) = [table(await stream(stub.GetTrainingSet(inline((1, T3, {})))))]
    assert rows[0]["views"] == [(micros(T3), [3.0, None])]

"""Point-in-time training sets against the real PostgreSQL (the session's database): an append-only
history of a user feature with values at t1 < t2 < t3; entity rows between them get exactly the
value as of their time, rows before t1 none; then future values are planted (event times after
every entity timestamp, extreme values) and never appear. TTLs, several entities, the query form
and its errors."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

import asyncpg
import pytest

from ml_serving_server.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument
from ml_serving_server.services.pipeline.domain.feature_views import Entity, Feature, FeatureView, Source, ValueType
from ml_serving_server.services.pipeline.domain.schema import FeatureSchema
from ml_serving_server.services.pipeline.domain.training import InlineRow, TrainingSets
from ml_serving_server.services.pipeline.postgres_training_set import PostgresTrainingSetSource

T1 = datetime(2026, 3, 1, 10, tzinfo=timezone.utc)
T2 = T1 + timedelta(days=1)
T3 = T1 + timedelta(days=2)
FUTURE = datetime(2031, 1, 1, tzinfo=timezone.utc)
SECOND = timedelta(seconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def views(history: str, items: str) -> tuple[FeatureView, ...]:
    user = Entity("user", "user_id", ValueType.INT)
    return (
        FeatureView("scores", user, (Feature("score", ValueType.FLOAT), Feature("level", ValueType.INT),
                                     Feature("tags", ValueType.STRING_LIST)),
                    Source(f"SELECT user_id, score, level, tags, t FROM {history}", "t")),
        FeatureView("recent_scores", user, (Feature("score", ValueType.FLOAT),),
                    Source(f"SELECT user_id, score, t FROM {history}", "t"), ttl=timedelta(hours=12)),
        FeatureView("prices", Entity("item", "sku", ValueType.STRING), (Feature("price", ValueType.FLOAT),),
                    Source(f"SELECT sku, price, valid_from FROM {items}", "valid_from")),
        FeatureView("totals", user, (Feature("n", ValueType.INT),),
                    Source(f"SELECT user_id, count(*) AS n, max(t) AS t FROM {history} GROUP BY user_id", "t")),
        FeatureView("declared_totals", user, (Feature("n", ValueType.INT),),
                    Source(f"SELECT user_id, count(*) OVER (PARTITION BY user_id ORDER BY t) AS n, t FROM {history}",
                           "t"), point_in_time=True),
    )


@pytest.fixture(scope="module")
async def tables(database_url):
    suffix = uuid.uuid4().hex[:8]
    names = {"history": f"pts_history_{suffix}", "items": f"pts_items_{suffix}", "entities": f"pts_entities_{suffix}",
             "sequence": f"pts_sequence_{suffix}"}
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"""
            CREATE TABLE {names['history']} (user_id bigint, score double precision, level int, tags text[],
                                             t timestamptz NOT NULL);
            CREATE INDEX ON {names['history']} (user_id, t);
            CREATE TABLE {names['items']} (sku text, price numeric, valid_from timestamp);
            CREATE TABLE {names['entities']} (user_id int, sku varchar, ts timestamptz, clicked bool, extra jsonb);
            CREATE SEQUENCE {names['sequence']};""")
        await conn.executemany(f"INSERT INTO {names['history']} VALUES ($1, $2, $3, $4, $5)", [
            (1, 1.0, 1, ["a"], T1), (1, 2.0, 2, ["b"], T2), (1, 3.0, 3, None, T3), (2, 20.0, 20, [], T2)])
        await conn.executemany(f"INSERT INTO {names['items']} VALUES ($1, $2, $3)", [
            ("x", 10, T1.replace(tzinfo=None)), ("x", 11, T3.replace(tzinfo=None))])
        yield names
    finally:
        await conn.execute("; ".join(f"DROP {'SEQUENCE' if key == 'sequence' else 'TABLE'} IF EXISTS {t}"
                                     for key, t in names.items()))
        await conn.close()


@pytest.fixture(scope="module")
def training(source, tables):
    adapter = PostgresTrainingSetSource(source.pool, statement_timeout_s=10, timeout_s=30)
    return TrainingSets(FeatureSchema(views(tables["history"], tables["items"])), adapter, batch_rows=3)


class Row(NamedTuple):
    row_index: int
    entity_ids: tuple
    timestamp: datetime | None
    columns: tuple
    views: tuple  # per view: None, or (event time, values)


def from_micros(micros: int | None) -> datetime | None:
    return None if micros is None else EPOCH + timedelta(microseconds=micros)


async def collect(training_set) -> list[Row]:
    rows = []
    async for batch in training_set.batches:
        assert 1 <= len(batch) <= 3
        for index, ids, timestamp, columns, views in batch.rows(training_set.plan):
            rows.append(Row(index, ids, from_micros(timestamp), columns,
                            tuple(None if v is None else (from_micros(v[0]), v[1]) for v in views)))
    return rows


# (user, timestamp) -> the score as of then (None: no value)
CASES = [
    (1, T1 - SECOND, None), (1, T1, 1.0), (1, T1 + SECOND, 1.0), (1, T2 - SECOND, 1.0), (1, T2, 2.0),
    (1, T2 + timedelta(hours=5), 2.0), (1, T3 + timedelta(days=30), 3.0), (2, T1 + SECOND, None), (2, T3, 20.0),
    (3, T3, None),
]


def inline(cases) -> list[InlineRow]:
    return [InlineRow({"user_id": str(user)}, at) for user, at, _ in cases]


async def test_each_row_gets_the_value_as_of_its_time_and_never_a_later_one(training, tables, database_url):
    before = await collect(await training.training_set(["scores"], rows=inline(CASES)))
    assert [row.row_index for row in before] == list(range(len(CASES)))
    for row, (user, at, score) in zip(before, CASES):
        assert row.entity_ids == (str(user),) and row.timestamp == at
        (found,) = row.views
        if score is None:
            assert found is None, (user, at)
        else:
            event_time, values = found
            assert values[0] == score and event_time <= at, (user, at)
    assert before[1].views[0][1] == (1.0, 1, ["a"]) and before[6].views[0][1] == (3.0, 3, None)

    # Plant the future: every user gets rows after every entity timestamp, with extreme values.
    conn = await asyncpg.connect(database_url)
    try:
        await conn.executemany(f"INSERT INTO {tables['history']} VALUES ($1, $2, $3, $4, $5)", [
            (user, 1e308, 2**31 - 1, ["leak"], FUTURE + timedelta(minutes=user)) for user in (1, 2, 3)])
        after = await collect(await training.training_set(["scores"], rows=inline(CASES)))
    finally:
        await conn.execute(f"DELETE FROM {tables['history']} WHERE t >= $1", FUTURE)
        await conn.close()
    assert [(r.row_index, r.views) for r in after] == [(r.row_index, r.views) for r in before]
    for row in after:
        for found in row.views:
            assert found is None or (found[0] <= row.timestamp and 1e308 not in found[1] and 2**31 - 1 not in found[1])


async def test_a_view_s_ttl_drops_values_older_than_it_before_the_timestamp(training):
    cases = [(1, T3 + timedelta(hours=11), 3.0), (1, T3 + timedelta(hours=12), 3.0),
             (1, T3 + timedelta(hours=12) + SECOND, None), (2, T2 + timedelta(days=1), None)]
    rows = await collect(await training.training_set(["recent_scores:score", "scores:score"], rows=inline(cases)))
    for row, (_, at, expected) in zip(rows, cases):
        recent, unbounded = row.views
        assert (recent and recent[1][0]) == expected, at
        assert unbounded is not None  # the view without a TTL still answers


async def test_the_query_form_joins_several_entities_and_passes_extra_columns(training, tables, database_url):
    conn = await asyncpg.connect(database_url)
    try:
        await conn.executemany(f"INSERT INTO {tables['entities']} VALUES ($1, $2, $3, $4, NULL)", [
            (1, "x", T2, True), (1, "x", T3 + SECOND, False), (2, "y", T1, True), (1, None, T1 - SECOND, None)])
        answer = await training.training_set(
            ["scores:score", "prices"],
            query=f"SELECT ts, user_id, sku, clicked FROM {tables['entities']} ORDER BY ts DESC;")
        assert (answer.plan.join_keys, answer.plan.column_names) == (("user_id", "sku"), ("clicked",))
        rows = await collect(answer)
    finally:
        await conn.execute(f"DELETE FROM {tables['entities']}")
        await conn.close()
    got = [(r.entity_ids, r.columns, [v and v[1] for v in r.views]) for r in rows]
    assert got == [
        (("1", "x"), (False,), [(3.0,), (11.0,)]),  # T3 + 1 s
        (("1", "x"), (True,), [(2.0,), (10.0,)]),  # T2
        (("2", "y"), (True,), [None, None]),  # T1
        (("1", None), (None,), [None, None]),  # before T1
    ]


async def test_views_that_cannot_be_read_as_of_a_past_time_are_refused(training):
    with pytest.raises(FailedPrecondition) as caught:
        await training.training_set(["scores", "totals:n"], rows=inline(CASES))
    assert caught.value.metadata == {"field": "features[1]", "feature_view": "totals"}
    rows = await collect(await training.training_set(["declared_totals"], rows=inline(CASES[:5])))
    assert [r.views[0] and r.views[0][1] for r in rows] == [None, (1,), (1,), (1,), (2,)]


@pytest.mark.parametrize("query, timestamp_column, field, words", [
    ("SELECT user_id, ts FROM no_such_table", "", "entity_query", "does not compile"),
    ("SELECT sku, ts FROM {entities}", "", "entity_query", "no column user_id"),
    ("SELECT user_id FROM {entities}", "", "entity_query", "no timestamp column"),
    ("SELECT sku AS user_id, ts FROM {entities}", "", "entity_query", "join key is an integer"),
    ("SELECT user_id, ts, extra FROM {entities}", "", "entity_query", "jsonb"),
    ("SELECT user_id, ts, ts FROM {entities}", "", "entity_query", "two columns"),
    ("SELECT user_id, ts, clicked FROM {entities}", "clicked", "timestamp_column", "not a timestamp"),
    ("SELECT user_id, ts FROM {entities}", "clicked", "timestamp_column", "no column 'clicked'"),
    ("WITH gone AS (DELETE FROM {entities} RETURNING *) SELECT user_id, ts FROM gone", "", "entity_query",
     "does not compile"),
    ("SELECT user_id, ts FROM {entities}; DROP TABLE {entities}", "", "entity_query", "single statement"),
])
async def test_a_bad_entity_query_is_refused_naming_the_field(training, tables, query, timestamp_column, field, words):
    with pytest.raises(InvalidArgument) as caught:
        await training.training_set(["scores"], query=query.format(**tables), timestamp_column=timestamp_column)
    assert caught.value.field == field and words in str(caught.value)


async def test_an_entity_query_may_only_read_and_is_bounded_in_time(source, training, tables):
    writing = f"SELECT user_id, t AS ts FROM {tables['history']} WHERE nextval('{tables['sequence']}') > 0"
    with pytest.raises(InvalidArgument) as caught:
        await collect(await training.training_set(["scores"], query=writing))
    assert caught.value.field == "entity_query" and "only read" in str(caught.value)
    slow = TrainingSets(training._schema, PostgresTrainingSetSource(source.pool, statement_timeout_s=0.2,
                                                                   timeout_s=5))
    with pytest.raises(DeadlineExceeded):
        await collect(await slow.training_set(["scores"], query="SELECT 1 AS user_id, now() AS ts "
                                                                "FROM pg_sleep(2)"))


async def test_inline_rows_are_checked_before_the_database_is_asked(training):
    with pytest.raises(InvalidArgument) as caught:
        await training.training_set(["scores", "prices"], rows=[InlineRow({"user_id": "1"}, T1)])
    assert caught.value.field == "entity_rows.rows[0].entity_ids" and "sku" in str(caught.value)
    with pytest.raises(InvalidArgument) as caught:
        await training.training_set(["scores"], rows=[InlineRow({"user_id": "1"}, T1), InlineRow({"user_id": "a"}, T1)])
    assert caught.value.field == "entity_rows.rows[1].entity_ids[user_id]"
    with pytest.raises(InvalidArgument) as caught:
        await training.training_set(["scores:nope"], rows=inline(CASES))
    assert caught.value.field == "features[0]"

"""Training sets without a database: which views can be read as of a past time, the request's
checks (before the source is asked), how an entity query's columns are resolved, and the SQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ml_serving_server.errors import FailedPrecondition, InvalidArgument, NotFound
from ml_serving_server.services.pipeline.declarations import DeclarationError, load_directory
from ml_serving_server.services.pipeline.domain.feature_views import Entity, Feature, FeatureView, Source, ValueType
from ml_serving_server.services.pipeline.domain.schema import FeatureSchema
from ml_serving_server.services.pipeline.domain.training import (
    MAX_INLINE_ROWS,
    Column,
    ColumnKind,
    InlineRow,
    TrainingSets,
)
from ml_serving_server.services.pipeline.postgres_training_set import training_set_sql

T = datetime(2026, 1, 1, tzinfo=timezone.utc)
USER = Entity("user", "user_id", ValueType.INT)


def view(name="scores", query="SELECT user_id, score, t FROM history", *, entity=USER, **kwargs) -> FeatureView:
    return FeatureView(name, entity, (Feature("score", ValueType.FLOAT), Feature("level", ValueType.INT)),
                       Source(query, "t"), **kwargs)


@pytest.mark.parametrize("query, capable", [
    ("SELECT user_id, score, level, t FROM history", True),
    ("SELECT user_id, score, level, t FROM history WHERE note = 'group by now()'", True),  # inside a string
    ("SELECT user_id, sum(x) AS score, 1 AS level, max(t) AS t FROM e GROUP BY user_id", False),
    ("SELECT user_id, score, level, t FROM history WHERE t > now() - interval '7 days'", False),
    ("SELECT user_id, score, level, t FROM history WHERE t > CURRENT_TIMESTAMP", False),
])
def test_views_over_aggregates_or_the_clock_are_not_point_in_time(query, capable):
    assert view(query=query).point_in_time_capable is capable
    assert view(query=query, point_in_time=not capable).point_in_time_capable is not capable  # declared wins


def test_the_flag_leaves_the_hash_of_a_view_without_it_alone(tmp_path):
    assert view().definition_hash == view(point_in_time=None).definition_hash != view(point_in_time=True).definition_hash
    (tmp_path / "v.yaml").write_text("""views:
  - name: a
    entity: {name: user, join_key: user_id, key_type: int}
    features: [{name: score, type: float}]
    source:
      query: SELECT user_id, score, t FROM h GROUP BY 1
      event_time_column: t
    point_in_time: true
""")
    assert load_directory(tmp_path).view("a", field="f").point_in_time_capable
    (tmp_path / "v.yaml").write_text((tmp_path / "v.yaml").read_text().replace("point_in_time: true",
                                                                               "point_in_time: maybe"))
    with pytest.raises(DeclarationError) as caught:
        load_directory(tmp_path)
    assert caught.value.field == "views[0].point_in_time" and caught.value.line == 8


def test_the_demo_s_aggregate_views_are_refused_and_its_tables_are_not():
    from ml_serving_server.services.pipeline.settings import PipelineSettings

    schema = load_directory(PipelineSettings().feature_views_path())
    assert {v.name: v.point_in_time_capable for v in schema.views} == {
        "item_catalog": True, "item_engagement": False, "user_engagement": False, "user_profile": True}


class Source_:
    def __init__(self, columns=()):
        self.columns, self.plans = list(columns), []

    async def describe_query(self, query):
        return self.columns

    def training_rows(self, plan, batch_rows):
        self.plans.append(plan)
        return _empty()


async def _empty():
    if False:
        yield


ITEM = Entity("item", "sku", ValueType.STRING)
SCHEMA = FeatureSchema((view(), view("recent", ttl=timedelta(hours=1)), view("prices", entity=ITEM),
                        view("totals", "SELECT user_id, count(*) AS score, 1 AS level, max(t) AS t FROM e GROUP BY 1")))


def training(columns=()) -> TrainingSets:
    return TrainingSets(SCHEMA, Source_(columns))


async def refused(error, coroutine):
    with pytest.raises(error) as caught:
        await coroutine
    return caught.value


async def test_feature_references_are_checked():
    sets = training()
    rows = [InlineRow({"user_id": "1"}, T)]
    assert (await refused(InvalidArgument, sets.training_set([], rows=rows))).field == "features"
    assert (await refused(NotFound, sets.training_set(["nope"], rows=rows))).reason.name == "FEATURE_VIEW_NOT_FOUND"
    unknown = await refused(InvalidArgument, sets.training_set(["scores", "scores:shoe"], rows=rows))
    assert (unknown.field, unknown.reason.name) == ("features[1]", "UNKNOWN_FEATURE")
    aggregate = await refused(FailedPrecondition, sets.training_set(["totals:score"], rows=rows))
    assert aggregate.reason.name == "VIEW_NOT_POINT_IN_TIME" and aggregate.metadata["feature_view"] == "totals"
    assert (await refused(InvalidArgument, sets.training_set(["scores"] * 101, rows=rows))).field == "features"
    plan = (await sets.training_set(["scores:level", "scores:score", "recent:level"], rows=rows)).plan
    assert [(s.view.name, [f.name for f in s.features]) for s in plan.views] == [
        ("scores", ["score", "level"]), ("recent", ["level"])]  # declaration order


async def test_inline_rows_are_checked():
    sets = training()
    both = ["scores", "prices"]
    assert (await refused(InvalidArgument, sets.training_set(both, rows=[]))).field == "entity_rows.rows"
    too_many = await refused(InvalidArgument, sets.training_set(
        both, rows=[InlineRow({"user_id": "1", "sku": "a"}, T)] * (MAX_INLINE_ROWS + 1)))
    assert too_many.reason.name == "TOO_MANY_ENTITIES"
    for row, field in [(InlineRow({"user_id": "1", "sku": "a"}, None), "entity_rows.rows[0].timestamp"),
                       (InlineRow({"user_id": "1"}, T), "entity_rows.rows[0].entity_ids"),
                       (InlineRow({"user_id": "1", "sku": "a", "x": "1"}, T), "entity_rows.rows[0].entity_ids"),
                       (InlineRow({"user_id": "one", "sku": "a"}, T), "entity_rows.rows[0].entity_ids[user_id]"),
                       (InlineRow({"user_id": "1", "sku": "a"}, T, {"user_id": (ColumnKind.INT, 1)}),
                        "entity_rows.rows[0].columns")]:
        assert (await refused(InvalidArgument, sets.training_set(both, rows=[row]))).field == field
    mixed = [InlineRow({"user_id": "1", "sku": "a"}, T, {"label": (ColumnKind.BOOL, True)}),
             InlineRow({"user_id": "2", "sku": "b"}, T, {"label": (ColumnKind.INT, 1)})]
    assert (await refused(InvalidArgument, sets.training_set(both, rows=mixed))).field == "entity_rows.rows[1].columns[label]"
    plan = (await sets.training_set(both, rows=[mixed[0], InlineRow({"user_id": "2", "sku": "b"}, T + timedelta(1))])
            ).plan
    assert (plan.join_keys, plan.keys, plan.column_names, plan.column_kinds) == (
        ("user_id", "sku"), ((1, 2), ("a", "b")), ("label",), (ColumnKind.BOOL,))
    assert plan.inline_columns == ((True,), (None,))


async def test_an_entity_query_s_columns_are_resolved_by_name_and_type():
    columns = [Column("clicked", ColumnKind.BOOL), Column("user_id", ColumnKind.INT), Column("at", ColumnKind.TIMESTAMP),
               Column("seen", ColumnKind.TIMESTAMP)]
    plan = (await training(columns).training_set(["scores"], query=" SELECT ... ; ")).plan
    assert (plan.query, plan.key_positions, plan.timestamp_position, plan.column_positions, plan.column_names) == (
        "SELECT ...", (1,), 2, (0, 3), ("clicked", "seen"))
    plan = (await training(columns).training_set(["scores"], query="q", timestamp_column="seen")).plan
    assert (plan.timestamp_position, plan.column_positions) == (3, (0, 2))
    for columns, words in [
        ([Column("at", ColumnKind.TIMESTAMP)], "no column user_id"),
        ([Column("user_id", ColumnKind.STRING, "text"), Column("at", ColumnKind.TIMESTAMP)], "integer"),
        ([Column("user_id", ColumnKind.INT)], "no timestamp column"),
        ([Column("user_id", ColumnKind.INT), Column("at", ColumnKind.TIMESTAMP), Column("j", ColumnKind.OTHER, "jsonb")],
         "jsonb"),
        ([Column("user_id", ColumnKind.INT), Column("user_id", ColumnKind.INT)], "two columns"),
    ]:
        error = await refused(InvalidArgument, training(columns).training_set(["scores"], query="q"))
        assert error.field == "entity_query" and words in str(error)
    long = await refused(InvalidArgument, training().training_set(["scores"], query="x" * 20_001))
    assert long.field == "entity_query"
    two = await refused(InvalidArgument, training().training_set(["scores"], query="SELECT 1; SELECT 2"))
    assert "single statement" in str(two)


async def test_the_sql_reads_each_view_at_or_before_the_timestamp_within_its_ttl():
    columns = [Column("user_id", ColumnKind.INT), Column("at", ColumnKind.TIMESTAMP), Column("w", ColumnKind.FLOAT)]
    plan = (await training(columns).training_set(["scores:score", "recent"], query="SELECT * FROM events")).plan
    sql, params = training_set_sql(plan)
    assert "FROM (SELECT * FROM events) AS s(__e0, __e1, __e2)" in sql
    assert sql.count("LEFT JOIN LATERAL") == 2 and sql.count('q."t" <= e.__ts') == 2
    assert sql.count("ORDER BY q.\"t\" DESC LIMIT 1") == 2
    assert 'q."t" >= e.__ts - $1::interval' in sql and params == [timedelta(hours=1)]  # only the view with a TTL
    assert "e.__x0::float8" in sql and not sql.rstrip().endswith("ORDER BY e.__row")  # a query is not sorted again
    plan = (await training().training_set(["prices"], rows=[InlineRow({"sku": "a"}, T)])).plan
    sql, params = training_set_sql(plan)
    assert "unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY" in sql and sql.endswith("ORDER BY e.__row")
    assert params == [["a"], [T]]

"""Feature views: every rule names its field; the definition hash follows the definition, and
the schema version follows every view."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from ml_serving_server.errors import InvalidArgument, NotFound
from ml_serving_server.services.pipeline.domain.errors import ErrorReason, InvalidDefinition, render_path
from ml_serving_server.services.pipeline.domain.feature_views import (
    MAX_FEATURES, Entity, Feature, FeatureView, Source, ValueType,
)
from ml_serving_server.services.pipeline.domain.schema import FeatureSchema

QUERY = "SELECT user_id, age, taste, updated_at FROM demo_users"


def features(*extra: Feature) -> tuple[Feature, ...]:
    return (Feature("age", ValueType.INT, "years"), Feature("taste", ValueType.FLOAT_LIST, dimension=8), *extra)


def view(**overrides) -> FeatureView:
    fields = dict(name="user_profile", description="who", entity=Entity("user", "user_id", ValueType.INT),
                  features=features(), source=Source(QUERY, "updated_at"), ttl=timedelta(days=1),
                  compute_on_miss=True, materialization_schedule="*/15 * * * *", tags={"team": "recsys"})
    return FeatureView(**{**fields, **overrides})


def test_a_valid_view_keeps_what_was_declared():
    declared = view()
    assert declared.features[1] == Feature("taste", ValueType.FLOAT_LIST, dimension=8)
    assert declared.tags == (("team", "recsys"),)
    assert len(declared.definition_hash) == 64 and int(declared.definition_hash, 16) >= 0


RULES = [
    # (what, overrides, the field named, words of the message)
    ("name missing", dict(name=""), "name", "is required"),
    ("name upper case", dict(name="Users"), "name", "must match"),
    ("name starts with a digit", dict(name="1users"), "name", "must match"),
    ("name with a dash", dict(name="user-profile"), "name", "must match"),
    ("name too long", dict(name="a" * 65), "name", "at most 64"),
    ("description too long", dict(description="x" * 2001), "description", "at most 2000"),
    ("entity name", dict(entity=Entity("User", "user_id")), "entity.name", "must match"),
    ("join key", dict(entity=Entity("user", "")), "entity.join_key", "is required"),
    ("key type", dict(entity=Entity("user", "user_id", ValueType.FLOAT)), "entity.key_type", "int, string"),
    ("no features", dict(features=()), "features", "at least one"),
    ("too many features", dict(features=tuple(Feature(f"f{i}", ValueType.INT) for i in range(MAX_FEATURES + 1))),
     "features", f"at most {MAX_FEATURES}"),
    ("feature name", dict(features=features(Feature("Clicks", ValueType.INT))), "features[2].name", "must match"),
    ("feature twice", dict(features=features(Feature("age", ValueType.FLOAT))), "features[2].name",
     "already the name of features[0]"),
    ("feature named as the join key", dict(features=features(Feature("user_id", ValueType.INT))),
     "features[2].name", "join key"),
    ("feature named as the event time", dict(features=features(Feature("updated_at", ValueType.INT))),
     "features[2].name", "event-time column"),
    ("feature type", dict(features=features(Feature("x", "int"))), "features[2].type", "must be one of"),
    ("dimension of an int", dict(features=features(Feature("x", ValueType.INT, dimension=3))),
     "features[2].dimension", "only a float list"),
    ("dimension zero", dict(features=features(Feature("x", ValueType.FLOAT_LIST, dimension=0))),
     "features[2].dimension", "from 1 to"),
    ("query empty", dict(source=Source("  ;  ", "updated_at")), "source.query", "is required"),
    ("two statements", dict(source=Source("SELECT 1; DROP TABLE demo_users", "updated_at")), "source.query",
     "single statement"),
    ("two statements, the second ending", dict(source=Source("SELECT 1; SELECT 2;", "updated_at")), "source.query",
     "single statement"),
    ("event-time column missing", dict(source=Source(QUERY, "")), "source.event_time_column", "is required"),
    ("event-time column is the key", dict(source=Source(QUERY, "user_id")), "source.event_time_column",
     "join key"),
    ("ttl zero", dict(ttl=timedelta(0)), "ttl", "positive"),
    ("ttl negative", dict(ttl=timedelta(seconds=-5)), "ttl", "positive"),
    ("ttl of centuries", dict(ttl=timedelta(days=40_000)), "ttl", "at most"),
    ("compute_on_miss not a bool", dict(compute_on_miss="yes"), "compute_on_miss", "true or false"),
    ("schedule of four fields", dict(materialization_schedule="* * * *"), "materialization_schedule", "five-field"),
    ("schedule of junk", dict(materialization_schedule="a b c d e;"), "materialization_schedule", "five-field"),
    ("tag key", dict(tags={"bad key": "x"}), "tags.bad key", "tag's key"),
    ("tag value", dict(tags={"team": "x" * 300}), "tags.team", "at most 256"),
]


@pytest.mark.parametrize("overrides, field, words", [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_each_rule_names_its_field(overrides, field, words):
    with pytest.raises(InvalidDefinition) as caught:
        view(**overrides)
    assert caught.value.field == field and render_path(caught.value.path) == field
    assert words in caught.value.problem
    assert str(caught.value).startswith(f"{field}: ")
    assert caught.value.reason is ErrorReason.INVALID_FIELD


@pytest.mark.parametrize("query", [
    "SELECT user_id, ';' AS sep, updated_at FROM demo_users",
    "SELECT user_id, updated_at FROM demo_users -- the users; all of them",
    "SELECT user_id, updated_at /* ; */ FROM \"odd;table\"",
    "SELECT user_id, updated_at FROM demo_users;\n",
])
def test_a_semicolon_that_ends_no_statement_is_allowed(query):
    assert view(source=Source(query, "updated_at")).source.query.endswith(("users", "\"odd;table\"", "of them"))


def test_an_absent_ttl_and_schedule_and_an_embedding_of_any_length_are_allowed():
    free = view(ttl=None, materialization_schedule="", features=(Feature("v", ValueType.FLOAT_LIST),))
    assert (free.ttl, free.materialization_schedule, free.features[0].dimension) == (None, "", None)


# ----- the definition hash -----

def changed(base: FeatureView) -> list[tuple[str, FeatureView]]:
    """The base view with one thing changed, for every field there is."""
    replace = dataclasses.replace
    first, second = base.features
    return [
        ("name", replace(base, name="user_profile2")),
        ("description", replace(base, description="who, really")),
        ("entity name", replace(base, entity=replace(base.entity, name="customer"))),
        ("join key", replace(base, entity=replace(base.entity, join_key="uid"))),
        ("key type", replace(base, entity=replace(base.entity, key_type=ValueType.STRING))),
        ("entity description", replace(base, entity=replace(base.entity, description="a person"))),
        ("feature name", replace(base, features=(replace(first, name="age_years"), second))),
        ("feature type", replace(base, features=(replace(first, type=ValueType.FLOAT), second))),
        ("feature description", replace(base, features=(replace(first, description="in years"), second))),
        ("dimension", replace(base, features=(first, replace(second, dimension=16)))),
        ("dimension dropped", replace(base, features=(first, replace(second, dimension=None)))),
        ("feature order", replace(base, features=(second, first))),
        ("feature added", replace(base, features=(first, second, Feature("clicks", ValueType.INT)))),
        ("query", replace(base, source=Source(QUERY + " WHERE age > 0", "updated_at"))),
        ("event-time column", replace(base, source=Source(QUERY, "event_time"))),
        ("ttl", replace(base, ttl=timedelta(days=2))),
        ("ttl dropped", replace(base, ttl=None)),
        ("compute_on_miss", replace(base, compute_on_miss=False)),
        ("schedule", replace(base, materialization_schedule="0 * * * *")),
        ("tag value", replace(base, tags={"team": "search"})),
        ("tag added", replace(base, tags={"team": "recsys", "tier": "1"})),
    ]


@pytest.mark.parametrize("what", [what for what, _ in changed(view())])
def test_the_hash_changes_whenever_any_field_does(what):
    other = dict(changed(view()))[what]
    assert other.definition_hash != view().definition_hash


def test_all_changes_hash_apart():
    hashes = [v.definition_hash for _, v in changed(view())]
    assert len(set(hashes)) == len(hashes)


def test_the_hash_ignores_how_the_definition_was_written():
    base = view(tags={"a": "1", "b": "2"})
    same = view(tags={"b": "2", "a": "1"}, source=Source(f"\n  {QUERY} ;\n", "updated_at"))
    assert same == base and same.definition_hash == base.definition_hash


# ----- the schema -----

def test_the_schema_is_in_name_order_and_refuses_one_name_twice():
    a, b = view(name="b_view"), view(name="a_view")
    assert [v.name for v in FeatureSchema((a, b)).views] == ["a_view", "b_view"]
    with pytest.raises(InvalidDefinition, match="two feature views are named 'a_view'"):
        FeatureSchema((b, b))


def test_the_version_follows_every_view_and_not_their_order():
    a, b = view(name="a_view"), view(name="b_view")
    version = FeatureSchema((a, b)).version
    assert FeatureSchema((b, a)).version == version
    assert FeatureSchema((a, dataclasses.replace(b, description="new"))).version != version
    assert FeatureSchema((a,)).version != version
    assert len(version) == 16


def test_select_one_all_or_refuse():
    schema = FeatureSchema((view(name="a_view"), view(name="b_view")))
    assert schema.select("") == schema.views
    assert schema.select("b_view") == (schema.views[1],)
    with pytest.raises(NotFound) as missing:
        schema.select("c_view")
    assert missing.value.reason is ErrorReason.FEATURE_VIEW_NOT_FOUND
    assert missing.value.metadata == {"feature_view": "c_view"}
    for name, words in [("x" * 65, "at most 64 characters, got 65"), ("C-View", "must match")]:
        with pytest.raises(InvalidArgument) as bad:
            schema.select(name)
        assert bad.value.field == "feature_view" and words in bad.value.message

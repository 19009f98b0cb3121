"""Online reads over in-memory ports: one round trip, typed values with their event time and
origin, read-through and write-back, TTL, not found, and what each store being down does."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ml_serving_server.errors import InvalidArgument, NotFound
from ml_serving_server.services.pipeline.domain.feature_views import ValueType
from ml_serving_server.services.pipeline.domain.online import FeatureReader, ValueSource, ViewSelection
from ml_serving_server.services.pipeline.domain.ports import EntityRow, SourceUnavailable
from ml_serving_server.services.pipeline.domain.schema import FeatureSchema

from ..fakes import T0, FakeOnline, FakeSource, view

NOW = T0 + timedelta(days=1)


class Clock:
    def __init__(self):
        self.now = NOW

    def __call__(self):
        return self.now


def make(*views):
    views = views or (view(ttl=timedelta(hours=1)), view("cached", compute_on_miss=False, ttl=timedelta(hours=1)),
                      view("named", key_type=ValueType.STRING))
    source, online, clock = FakeSource(), FakeOnline(), Clock()
    return FeatureReader(FeatureSchema(views), source, online, clock=clock), source, online, clock


def ids(*texts):
    return [(f"entity_ids[{i}]", t) for i, t in enumerate(texts)]


async def store(online, reader, name, key, at, **values):
    v = reader._schema.view(name, field="x")
    await online.write(v, [EntityRow(key, T0, values)], at)


async def test_cached_values_come_typed_from_one_round_trip():
    reader, source, online, _ = make()
    for key in range(100):
        await store(online, reader, "scores", key, NOW, score=key * 1.0, tags=["a"])
    result = await reader.get_features("scores", ids(*map(str, range(100))))
    assert online.reads == 1 and source.row_calls == []
    assert [e.entity_id for e in result.entities] == [str(k) for k in range(100)]
    first = result.entities[7]
    assert first.found and not first.read_through
    assert first.features["score"].value == 7.0 and first.features["score"].source is ValueSource.ONLINE_STORE
    assert first.features["score"].event_time == T0 and first.features["tags"].value == ["a"]


async def test_a_miss_is_read_through_and_written_back():
    reader, source, online, _ = make()
    source.put("scores", 5, T0, score=2.5, tags=[])
    result = await reader.get_features("scores", ids("5", "6"), ["score"])
    hit, nowhere = result.entities
    assert hit.found and hit.read_through and hit.features["score"].source is ValueSource.READ_THROUGH
    assert set(hit.features) == {"score"} and result.read_through_count == 1
    assert not nowhere.found and nowhere.features["score"].source is ValueSource.NOT_FOUND
    assert nowhere.features["score"].value is None
    assert ("scores", 5) in online.hashes and ("scores", 6) not in online.hashes
    again = await reader.get_features("scores", ids("5"))
    assert again.entities[0].features["score"].source is ValueSource.ONLINE_STORE


async def test_read_through_disabled_or_not_declared_answers_not_found():
    reader, source, online, _ = make()
    source.put("scores", 5, T0, score=2.5, tags=[])
    source.put("cached", 5, T0, score=2.5, tags=[])
    for name, through in (("scores", False), ("cached", True)):
        result = await reader.get_features(name, ids("5"), read_through=through)
        assert not result.entities[0].found and source.row_calls == []


async def test_a_value_past_its_ttl_is_recomputed_or_flagged_stale():
    reader, source, online, clock = make()
    for name in ("scores", "cached"):
        await store(online, reader, name, 1, NOW - timedelta(hours=2), score=1.0, tags=[])
        source.put(name, 1, T0 + timedelta(hours=3), score=9.0, tags=[])
    recomputed = (await reader.get_features("scores", ids("1"))).entities[0].features["score"]
    assert (recomputed.value, recomputed.source, recomputed.stale) == (9.0, ValueSource.READ_THROUGH, False)
    flagged = (await reader.get_features("cached", ids("1"))).entities[0].features["score"]
    assert (flagged.value, flagged.source, flagged.stale) == (1.0, ValueSource.ONLINE_STORE, True)


async def test_redis_down_serves_from_the_source_and_says_so():
    reader, source, online, _ = make()
    source.put("cached", 3, T0, score=1.0, tags=["x"])
    online.down = True
    result = await reader.get_features("cached", ids("3", "4"))
    assert result.online_store_unavailable
    assert result.entities[0].features["tags"].value == ["x"] and not result.entities[1].found


async def test_postgres_down_serves_cached_values_and_fails_a_read_through():
    reader, source, online, _ = make()
    await store(online, reader, "scores", 1, NOW, score=1.0, tags=[])
    source.down = True
    assert (await reader.get_features("scores", ids("1"))).entities[0].found
    with pytest.raises(SourceUnavailable):
        await reader.get_features("scores", ids("1", "2"))


async def test_both_down_is_unavailable():
    reader, source, online, _ = make()
    source.down = online.down = True
    with pytest.raises(SourceUnavailable):
        await reader.get_features("scores", ids("1"))


@pytest.mark.parametrize("name, entities, features, field, reason", [
    ("scores", ["1", "x"], [], "entity_ids[1]", "INVALID_FIELD"),
    ("scores", ["99999999999999999999"], [], "entity_ids[0]", "INVALID_FIELD"),
    ("scores", [], [], "entity_ids", "INVALID_FIELD"),
    ("scores", ["1"] * 1001, [], "entity_ids", "TOO_MANY_ENTITIES"),
    ("scores", ["1"], ["score", "nope"], "feature_names[1]", "UNKNOWN_FEATURE"),
    ("named", ["x" * 300], [], "entity_ids[0]", "INVALID_FIELD"),
    ("", ["1"], [], "feature_view", "INVALID_FIELD"),
])
async def test_bad_requests_name_the_field(name, entities, features, field, reason):
    reader, *_ = make()
    with pytest.raises(InvalidArgument) as caught:
        await reader.get_features(name, ids(*entities), features)
    assert (caught.value.field, caught.value.reason.name) == (field, reason)
    assert len(str(caught.value)) < 300


async def test_an_unknown_view_is_not_found():
    reader, *_ = make()
    with pytest.raises(NotFound) as caught:
        await reader.get_features("nope", ids("1"))
    assert caught.value.reason.name == "FEATURE_VIEW_NOT_FOUND"


async def test_string_keys_and_repeated_ids():
    reader, source, online, _ = make()
    source.put("named", "ann", T0, score=1.0, tags=None)
    result = await reader.get_features("named", ids("ann", "ann", "42"))
    assert [e.found for e in result.entities] == [True, True, False]
    assert source.row_calls == [["ann", "42"]]


def test_source_values_are_coerced_to_their_declared_types():
    from decimal import Decimal

    from ml_serving_server.services.pipeline.domain.feature_views import Feature
    from ml_serving_server.services.pipeline.domain.values import coerce

    assert coerce(Feature("a", ValueType.FLOAT), Decimal("0.25")) == 0.25
    assert coerce(Feature("a", ValueType.INT), Decimal("3")) == 3
    assert coerce(Feature("a", ValueType.INT), 2.5) is None  # does not convert: null, logged
    assert coerce(Feature("a", ValueType.FLOAT_LIST), (1, Decimal("2.5"))) == [1.0, 2.5]
    assert coerce(Feature("a", ValueType.INT_LIST), [1, None]) is None
    assert coerce(Feature("a", ValueType.BOOL), 1) is True and coerce(Feature("a", ValueType.STRING), 7) == "7"


async def test_several_views_are_read_in_one_round_trip_and_each_reads_through_on_its_own():
    reader, source, online, _ = make()
    await store(online, reader, "scores", 1, NOW, score=1.0, tags=["a"])
    source.put("cached", 1, T0, score=9.0, tags=[])  # not computed on a miss: not found online
    source.put("scores", 2, T0, score=2.0, tags=["b"])
    answer = await reader.read([ViewSelection("scores"), ViewSelection("cached", ("score",))], ids("1", "2"))
    assert online.reads == 1 and answer.read_through_count == 2  # entity 2 of scores, both features
    scores, cached = answer.views
    assert [e.source for e in scores.entities] == [ValueSource.ONLINE_STORE, ValueSource.READ_THROUGH]
    assert [e.found for e in cached.entities] == [False, False] and cached.feature_names == ["score"]


async def test_views_of_other_entities_or_key_types_are_refused_naming_the_view():
    reader, _, _, _ = make(view("scores"), view("other_type", key_type=ValueType.STRING))
    with pytest.raises(InvalidArgument) as refused:
        await reader.read([ViewSelection("scores", field_prefix=None), ViewSelection("other_type", field_prefix=None)],
                          ids("1"))
    assert refused.value.field == "views[1].feature_view" and "int key" in refused.value.message


async def test_one_view_whose_source_is_down_fails_the_read_and_leaves_nothing_running():
    reader, source, online, _ = make()
    source.down = True
    with pytest.raises(SourceUnavailable):
        await reader.read([ViewSelection("scores"), ViewSelection("cached")], ids("1"))
    online.down = True  # both stores down: the read says so once both views are done
    with pytest.raises(SourceUnavailable):
        await reader.read([ViewSelection("scores"), ViewSelection("cached")], ids("1"))

"""Features as plain Python (ml_serving.pipeline), from GetFeatures answers built by hand: every
FeatureValue kind decoded, entities found nowhere explicit, DataFrames typed, ids as given,
long id lists split into calls of 1000, the blocking FeatureStore alike."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb

import ml_serving
from ml_serving import pipeline

T1 = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=timezone.utc)
T2 = datetime(2026, 2, 1, tzinfo=timezone.utc)


def stamp(moment: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(moment)
    return result


def entity(entity_id: str, values: dict[str, pb.FeatureValue], event_time: datetime = T1,
           found: bool = True) -> pb.EntityFeatures:
    source = pb.FEATURE_VALUE_SOURCE_ONLINE_STORE if found else pb.FEATURE_VALUE_SOURCE_NOT_FOUND
    message = pb.EntityFeatures(entity_id=entity_id, found=found)
    for name, value in values.items():
        feature = message.features[name]
        feature.source = source
        if found:
            feature.value.CopyFrom(value)
            feature.event_time.CopyFrom(stamp(event_time))
    return message


PROFILE = {
    "age": pb.FeatureValue(int64_value=2**62),
    "activity": pb.FeatureValue(double_value=0.25),
    "premium": pb.FeatureValue(bool_value=False),
    "country": pb.FeatureValue(string_value="DE"),
    "taste": pb.FeatureValue(double_list_value=pb.DoubleList(values=[0.5, -1.0, 0.0, 2.0])),
    "recent": pb.FeatureValue(int64_list_value=pb.Int64List(values=[7, 3])),
    "tags": pb.FeatureValue(string_list_value=pb.StringList(values=["a", "b"])),
    "nothing": pb.FeatureValue(),
}
EMPTY = {name: pb.FeatureValue() for name in PROFILE}


def response() -> pb.GetFeaturesResponse:
    """Entity 1 with every kind, 2 found with other values, 3 found nowhere."""
    second = dict(PROFILE, age=pb.FeatureValue(int64_value=-5), premium=pb.FeatureValue(bool_value=True),
                  country=pb.FeatureValue(), taste=pb.FeatureValue(double_list_value=pb.DoubleList()))
    return pb.GetFeaturesResponse(feature_view="profile", entities=[
        entity("1", PROFILE), entity("2", second, event_time=T2), entity("3", EMPTY, found=False)])


@pytest.mark.parametrize("value, expected", [
    (pb.FeatureValue(), None),
    (pb.FeatureValue(int64_value=0), 0),
    (pb.FeatureValue(int64_value=-(2**63)), -(2**63)),
    (pb.FeatureValue(double_value=1.5), 1.5),
    (pb.FeatureValue(string_value=""), ""),
    (pb.FeatureValue(bool_value=False), False),
    (pb.FeatureValue(bytes_value=b"\x00\xff"), b"\x00\xff"),
    (pb.FeatureValue(timestamp_value=stamp(T1)), T1),
    (pb.FeatureValue(int64_list_value=pb.Int64List(values=[1, 2])), [1, 2]),
    (pb.FeatureValue(double_list_value=pb.DoubleList(values=[0.5])), [0.5]),
    (pb.FeatureValue(double_list_value=pb.DoubleList()), []),
    (pb.FeatureValue(string_list_value=pb.StringList(values=["x"])), ["x"]),
])
def test_each_kind_decodes_to_its_python_type(value, expected):
    decoded = ml_serving.feature_value(value)
    assert decoded == expected and type(decoded) is type(expected)
    if isinstance(decoded, list):
        assert all(type(item) is type(want) for item, want in zip(decoded, expected))


def test_dicts_hold_typed_values_and_none_for_entities_found_nowhere():
    values = ml_serving.features_as_dicts(response())
    assert list(values) == ["1", "2", "3"] and list(values["1"]) == sorted(PROFILE)
    assert values["1"] == {"age": 2**62, "activity": 0.25, "premium": False, "country": "DE",
                           "taste": [0.5, -1.0, 0.0, 2.0], "recent": [7, 3], "tags": ["a", "b"], "nothing": None}
    assert values["2"]["country"] is None and values["2"]["taste"] == [] and values["2"]["premium"] is True
    assert values["3"] is None


def test_dicts_follow_the_asked_order_and_add_event_times():
    values = ml_serving.features_as_dicts(response(), ["taste", "age"], with_event_times=True,
                                          entity_ids={"1": 1, "2": 2})
    assert list(values[1])[:2] == ["taste", "age"]
    assert values[1]["age__event_time"] == T1 and values[2]["taste__event_time"] == T2
    assert values["3"] is None  # an id the mapping does not name stays as answered


def test_a_dataframe_has_a_row_per_entity_and_typed_columns():
    frame = ml_serving.features_as_dataframe(response(), ["age", "premium"], entity_ids={"1": 1, "2": 2, "3": 3})
    assert list(frame.index) == [1, 2, 3] and frame.index.name == "entity_id"
    assert list(frame.columns) == ["age", "premium", *sorted(set(PROFILE) - {"age", "premium"})]
    assert frame.attrs["not_found"] == [3]
    assert str(frame["age"].dtype) == "Int64" and frame["age"].tolist()[:2] == [2**62, -5]
    assert pd.isna(frame.loc[3, "age"]) and str(frame["premium"].dtype) == "boolean"
    assert frame["activity"].dtype == "float64" and pd.isna(frame.loc[3, "activity"])
    assert frame.loc[1, "taste"] == [0.5, -1.0, 0.0, 2.0] and frame.loc[2, "taste"] == []
    assert frame.loc[1, "recent"] == [7, 3] and frame.loc[1, "country"] == "DE"
    assert pd.isna(frame.loc[2, "country"]) and pd.isna(frame.loc[1, "nothing"])


def test_a_dataframe_without_missing_values_keeps_numpy_types_and_event_times_are_utc():
    answered = pb.GetFeaturesResponse(entities=[entity("a", PROFILE), entity("b", PROFILE, event_time=T2)])
    frame = ml_serving.features_as_dataframe(answered, with_event_times=True)
    assert frame["age"].dtype == "int64" and frame["premium"].dtype == "bool"
    assert isinstance(frame["age__event_time"].dtype, pd.DatetimeTZDtype) and str(frame["age__event_time"].dt.tz) == "UTC"
    assert frame.loc["b", "taste__event_time"] == pd.Timestamp(T2)
    assert frame.attrs["not_found"] == []


class FakeChannel:
    """A grpc.aio channel stand-in answering GetFeatures for the ids asked (a negative id: not found)."""

    def __init__(self):
        self.requests = []

    def unary_unary(self, method, *args, **kwargs):
        async def call(request, timeout=None, metadata=None):
            return answer(self.requests, request)
        return call

    unary_stream = stream_unary = stream_stream = unary_unary


class BlockingChannel(FakeChannel):
    def unary_unary(self, method, *args, **kwargs):
        return lambda request, timeout=None, metadata=None: answer(self.requests, request)

    def close(self):
        pass


def answer(requests: list, request: pb.GetFeaturesRequest) -> pb.GetFeaturesResponse:
    requests.append(request)
    ids = ([request.entity_id] if request.entity_id else []) + list(request.entity_ids)
    return pb.GetFeaturesResponse(feature_view=request.feature_view, entities=[
        entity(i, {"n": pb.FeatureValue(int64_value=int(i))}, found=not i.startswith("-")) for i in ids])


async def test_get_feature_values_keys_by_the_ids_given_and_splits_long_lists():
    channel = FakeChannel()
    client = ml_serving.PipelineClient(channel=channel)
    ids = [*range(2500), "-1", 7]  # 7 again: asked once
    values = await client.get_feature_values("v", ids, features=["n"], read_through=False)
    assert [len(r.entity_ids) for r in channel.requests] == [1000, 1000, 501]
    assert all(list(r.feature_names) == ["n"] and r.disable_read_through for r in channel.requests)
    assert list(values) == [*range(2500), "-1"] and values[1234] == {"n": 1234} and values["-1"] is None
    frame = await client.get_feature_values("v", "-1", as_dataframe=True)
    assert frame.attrs["not_found"] == ["-1"] and list(frame.index) == ["-1"]


def test_the_blocking_feature_store_answers_the_same():
    channel = BlockingChannel()
    with ml_serving.FeatureStore(channel=channel) as store:
        assert store.get_feature_values("v", [5, "6"], with_event_times=True) == {
            5: {"n": 5, "n__event_time": T1}, "6": {"n": 6, "n__event_time": T1}}
        frame = store.get_feature_values("v", [5, -1], as_dataframe=True)
    assert frame.loc[5, "n"] == 5 and pd.isna(frame.loc[-1, "n"]) and str(frame["n"].dtype) == "Int64"
    assert not channel.requests[0].disable_read_through


@pytest.mark.parametrize("bad, error", [([], ValueError), ([1.5], TypeError), ([True], TypeError)])
async def test_bad_id_lists_are_refused_before_any_call(bad, error):
    channel = FakeChannel()
    with pytest.raises(error):
        await ml_serving.PipelineClient(channel=channel).get_feature_values("v", bad)
    assert channel.requests == []


async def test_materialize_takes_a_mode_by_name():
    sent = []

    class Channel(FakeChannel):
        def unary_unary(self, method, *args, **kwargs):
            async def call(request, timeout=None, metadata=None):
                sent.append(request)
                return pb.MaterializeFeaturesResponse()
            return call

    client = ml_serving.PipelineClient(channel=Channel())
    await client.materialize_features("user_profile", mode="FULL", wait=True)
    await client.materialize_features()
    assert sent[0] == pb.MaterializeFeaturesRequest(feature_views=["user_profile"], mode=pb.MATERIALIZATION_MODE_FULL,
                                                    wait=True)
    assert sent[1] == pb.MaterializeFeaturesRequest()


def test_schema_views_as_dicts():
    schema = pb.GetFeatureSchemaResponse(version="v1", feature_views=[pb.FeatureView(
        name="profile", entity=pb.EntitySpec(name="user", join_key="user_id", value_type=pb.FEATURE_TYPE_INT64),
        features=[pb.FeatureSpec(name="taste", type=pb.FEATURE_TYPE_DOUBLE_LIST, dimension=4)])])
    views = pipeline.feature_views_as_dicts(schema)
    assert views["profile"]["entity"]["join_key"] == "user_id"
    assert views["profile"]["features"] == {"taste": {"type": "FEATURE_TYPE_DOUBLE_LIST", "dimension": 4}}


def test_without_pandas_the_dataframe_asks_for_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_pandas(name, *args, **kwargs):
        if name == "pandas":
            raise ImportError("no pandas")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pandas)
    with pytest.raises(ImportError, match=r"ml-serving-mesh\[pandas\]"):
        ml_serving.features_as_dataframe(response())


_LIST_FIELDS = {"int64_list_value": "int64_list_values", "double_list_value": "double_list_values",
                "string_list_value": "string_list_values"}
_TYPES = {"int64_value": (pb.FEATURE_TYPE_INT64, "int64_values"), "double_value": (pb.FEATURE_TYPE_DOUBLE, "double_values"),
          "bool_value": (pb.FEATURE_TYPE_BOOL, "bool_values"), "string_value": (pb.FEATURE_TYPE_STRING, "string_values"),
          "int64_list_value": (pb.FEATURE_TYPE_INT64_LIST, "int64_list_values"),
          "double_list_value": (pb.FEATURE_TYPE_DOUBLE_LIST, "double_list_values"),
          "string_list_value": (pb.FEATURE_TYPE_STRING_LIST, "string_list_values")}
_ELEMENTS = {"int64_list_values": "int64_values", "double_list_values": "double_values",
             "string_list_values": "string_values"}
_PLACEHOLDER = {"int64_values": 0, "double_values": 0.0, "bool_values": False, "string_values": ""}


def as_columns(answer: pb.GetFeaturesResponse) -> pb.GetFeaturesResponse:
    """The same answer in the columns layout, built field by field (as the server's docs say)."""
    out = pb.GetFeaturesResponse(feature_view=answer.feature_view, entity_ids=[e.entity_id for e in answer.entities])
    status = out.view_statuses.add(feature_view=answer.feature_view, found=[e.found for e in answer.entities])
    for row, e in enumerate(answer.entities):
        if e.found:
            status.event_times.timestamp_micros.append(e.features["age"].event_time.ToMicroseconds())
        else:
            status.event_times.timestamp_micros.append(0)
            status.event_times.null_rows.append(row)
    for name, value in PROFILE.items():
        kind, field_name = _TYPES.get(value.WhichOneof("kind"), (pb.FEATURE_TYPE_DOUBLE, "double_values"))
        column = out.columns.add(feature_view=answer.feature_view, name=name, type=kind)
        for row, e in enumerate(answer.entities):
            given = e.features[name].value
            if given.WhichOneof("kind") is None and not (e.found and field_name in _LIST_FIELDS.values()):
                column.values.null_rows.append(row)
                given = None
            if field_name.endswith("_list_values"):  # flat: the elements, and the row's length
                elements = [] if given is None else getattr(given, given.WhichOneof("kind") or field_name[:-1]).values
                getattr(column.values, _ELEMENTS[field_name]).extend(elements)
                column.values.list_lengths.append(len(elements))
            else:
                getattr(column.values, field_name).append(
                    _PLACEHOLDER[field_name] if given is None else getattr(given, given.WhichOneof("kind")))
    return out


def test_the_columns_layout_gives_the_same_dicts_and_dataframe():
    by_entity, by_column = response(), as_columns(response())
    ids = {"1": 1, "2": 2, "3": 3}
    assert ml_serving.features_as_dicts(by_column, with_event_times=True, entity_ids=ids) == \
        ml_serving.features_as_dicts(by_entity, with_event_times=True, entity_ids=ids)
    assert list(ml_serving.features_as_dicts(by_column)["1"]) == list(PROFILE)  # the answer's order
    names = sorted(PROFILE)
    pd.testing.assert_frame_equal(ml_serving.features_as_dataframe(by_column, names, entity_ids=ids),
                                  ml_serving.features_as_dataframe(by_entity, names, entity_ids=ids))


def test_a_list_column_reads_flat_and_in_the_nested_form_of_older_servers():
    flat = pb.TrainingSetColumn(double_values=[1.0, 2.0, 3.0], list_lengths=[2, 0, 1], null_rows=[1])
    nested = pb.TrainingSetColumn(null_rows=[1])
    for row in ([1.0, 2.0], [], [3.0]):
        nested.double_list_values.add().values.extend(row)
    for column in (flat, nested):
        assert ml_serving.pipeline.column_values(column, "double_list_values") == [[1.0, 2.0], None, [3.0]]

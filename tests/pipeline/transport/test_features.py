"""MaterializeFeatures and GetFeatures through an in-process server (production interceptors,
tokens checked) over real PostgreSQL and Redis: materialise, read 1 and 100 entities, change
source rows and see only those rewritten, read-through, the errors and the scopes."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import asyncpg
import grpc
import pytest
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb

from ml_serving_server.services.pipeline.postgres_store import PostgresMaterializationState
from ml_serving_tools.devauth import mint_token

from ...support import error_info
from .conftest import stub_to

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
ONLINE = pb.FEATURE_VALUE_SOURCE_ONLINE_STORE
THROUGH = pb.FEATURE_VALUE_SOURCE_READ_THROUGH
NOT_FOUND = pb.FEATURE_VALUE_SOURCE_NOT_FOUND


async def failed(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def materialize(stub, *views, mode=pb.MATERIALIZATION_MODE_UNSPECIFIED, wait=True):
    return stub.MaterializeFeatures(pb.MaterializeFeaturesRequest(feature_views=views, mode=mode, wait=wait))


@pytest.fixture(scope="module")
async def materialized(stub):
    response = await materialize(stub, "profile", "activity")
    return {job.feature_view: job for job in response.jobs}


async def test_a_first_materialisation_writes_every_entity(stub, materialized):
    profile, activity = materialized["profile"], materialized["activity"]
    assert (profile.state, profile.mode, profile.entities_written, profile.entities_total) == (
        pb.JOB_STATE_SUCCEEDED, pb.MATERIALIZATION_MODE_FULL, 200, 200)
    assert activity.state == pb.JOB_STATE_SUCCEEDED and activity.entities_written == 10
    assert profile.window_end.ToDatetime(tzinfo=timezone.utc) == datetime(2026, 1, 1, 3, 20, tzinfo=timezone.utc)
    schema = await stub.GetFeatureSchema(pb.GetFeatureSchemaRequest(feature_view="profile"))
    (view,) = schema.feature_views
    assert view.materialized_until == profile.window_end and view.HasField("last_materialization_time")


async def test_read_one_entity_typed_with_its_event_time(stub, materialized):
    response = await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="profile", entity_id="6"))
    (entity,) = response.entities
    assert entity.entity_id == "6" and entity.found and not entity.read_through
    f = entity.features
    assert (f["score"].value.double_value, f["level"].value.int64_value, f["premium"].value.bool_value,
            f["country"].value.string_value, list(f["taste"].value.double_list_value.values)) == (
        3.0, 1, True, "c6", [6.0, 1.0])
    assert all(v.source == ONLINE and not v.stale for v in f.values())
    assert f["score"].event_time.ToDatetime(tzinfo=timezone.utc) == datetime(2026, 1, 1, 0, 6, tzinfo=timezone.utc)
    assert response.read_through_count == 0 and not response.online_store_unavailable


async def test_read_a_hundred_entities_and_chosen_features(stub, materialized):
    ids = [str(i) for i in range(101, 201)]
    response = await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="profile", entity_ids=ids,
                                                            feature_names=["level", "country"]))
    assert [e.entity_id for e in response.entities] == ids
    assert all(e.found and set(e.features) == {"level", "country"} for e in response.entities)
    assert response.entities[-1].features["country"].value.string_value == "c200"
    activity = await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="activity", entity_ids=["3"]))
    assert list(activity.entities[0].features["recent"].value.int64_list_value.values) == [43, 33, 23]


async def test_the_columns_layout_answers_what_the_entities_layout_does(stub, materialized):
    ids = ["6", "150", "999999", "3"]  # 999999: nowhere
    by_entity = await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="profile", entity_ids=ids))
    by_column = await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="profile", entity_ids=ids,
                                                             layout=pb.FEATURES_LAYOUT_COLUMNS))
    assert not by_column.entities and list(by_column.entity_ids) == ids and by_column.feature_view == "profile"
    (status,) = by_column.view_statuses
    assert list(status.found) == [e.found for e in by_entity.entities] == [True, True, False, True]
    assert list(status.sources) == [ONLINE, ONLINE, NOT_FOUND, ONLINE] and not any(status.stale)
    assert list(status.event_times.null_rows) == [2] and status.event_times.timestamp_micros[0] == (
        by_entity.entities[0].features["score"].event_time.ToMicroseconds())
    columns = {c.name: c for c in by_column.columns}
    assert [c.name for c in by_column.columns] == ["score", "level", "premium", "country", "taste"]
    assert columns["level"].type == pb.FEATURE_TYPE_INT64 and list(columns["level"].values.null_rows) == [2]
    assert list(columns["level"].values.int64_values) == [e.features["level"].value.int64_value
                                                           for e in by_entity.entities]
    assert columns["country"].values.string_values[1] == "c150"
    tastes = [list(e.features["taste"].value.double_list_value.values) for e in by_entity.entities]
    taste = columns["taste"].values  # a list column is flat: elements row after row, and each row's length
    assert not taste.double_list_values and list(taste.list_lengths) == [len(t) for t in tastes]
    assert list(taste.double_values) == [x for t in tastes for x in t]


async def test_several_views_of_one_entity_in_one_call(stub, materialized):
    request = pb.GetFeaturesRequest(entity_ids=["3", "150"], views=[
        pb.FeatureViewSelection(feature_view="profile", feature_names=["country"]),
        pb.FeatureViewSelection(feature_view="activity")])
    by_entity = await stub.GetFeatures(request)
    assert by_entity.feature_view == ""
    three, other = by_entity.entities
    assert set(three.features) == {"profile:country", "activity:events", "activity:recent"}
    assert three.found and three.features["profile:country"].value.string_value == "c3"
    assert list(three.features["activity:recent"].value.int64_list_value.values) == [43, 33, 23]
    # 150 has a profile but no activity: found (in one view), its activity features not found
    assert other.found and other.features["activity:events"].source == NOT_FOUND
    request.layout = pb.FEATURES_LAYOUT_COLUMNS
    by_column = await stub.GetFeatures(request)
    assert [s.feature_view for s in by_column.view_statuses] == ["profile", "activity"]
    assert [list(s.found) for s in by_column.view_statuses] == [[True, True], [True, False]]
    assert [(c.feature_view, c.name) for c in by_column.columns] == [
        ("profile", "country"), ("activity", "events"), ("activity", "recent")]


async def test_changed_rows_are_the_only_ones_rewritten(stub, materialized, source_tables, database_url):
    before = await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="profile", entity_ids=["10", "11"]))
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"UPDATE {source_tables['users']} SET score = -1, updated_at = "
                           f"TIMESTAMPTZ '2026-02-01 00:00+00' + user_id * interval '1 second' "
                           f"WHERE user_id IN (10, 20, 30)")
    finally:
        await conn.close()
    (job,) = (await materialize(stub, "profile")).jobs
    assert (job.mode, job.state, job.entities_written) == (pb.MATERIALIZATION_MODE_INCREMENTAL,
                                                           pb.JOB_STATE_SUCCEEDED, 3)
    assert job.window_start == materialized["profile"].window_end
    after = await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="profile", entity_ids=["10", "11"]))
    changed, same = after.entities
    assert changed.features["score"].value.double_value == -1
    assert changed.features["score"].event_time.ToDatetime(tzinfo=timezone.utc) == datetime(
        2026, 2, 1, 0, 0, 10, tzinfo=timezone.utc)
    assert changed.features["score"].computed_at != before.entities[0].features["score"].computed_at
    assert same.features["score"].computed_at == before.entities[1].features["score"].computed_at  # not rewritten
    (nothing,) = (await materialize(stub, "profile")).jobs
    assert nothing.entities_written == 0


async def test_a_miss_is_read_through_and_an_unknown_entity_is_not_found(stub, materialized):
    response = await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="handles", entity_ids=["b", "zz"]))
    hit, nowhere = response.entities
    assert hit.found and hit.read_through and hit.features["tags"].source == THROUGH
    assert list(hit.features["tags"].value.string_list_value.values) == ["b", "B"]
    assert not nowhere.found and nowhere.features["tags"].source == NOT_FOUND
    assert not nowhere.features["tags"].value.HasField("kind")
    assert response.read_through_count == 1
    again = await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="handles", entity_ids=["b"]))
    assert again.entities[0].features["tags"].source == ONLINE  # written back
    off = await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="handles", entity_ids=["c"],
                                                       disable_read_through=True))
    assert not off.entities[0].found


async def test_without_wait_the_job_is_answered_queued(stub, materialized):
    (job,) = (await materialize(stub, "handles", wait=False)).jobs
    assert job.state == pb.JOB_STATE_QUEUED and job.job_id
    for _ in range(100):  # let it end before the module's other tests materialise
        await asyncio.sleep(0.05)
        try:
            await materialize(stub, "handles", wait=True)
            break
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    else:
        pytest.fail("the queued job never ended")


async def test_a_job_is_read_back_by_its_id(stub, materialized):
    job = materialized["profile"]
    read = (await stub.GetMaterializationJob(pb.GetMaterializationJobRequest(job_id=job.job_id))).job
    assert (read.job_id, read.state, read.entities_written, read.entities_total, read.window_end) == (
        job.job_id, pb.JOB_STATE_SUCCEEDED, 200, 200, job.window_end)
    error = await failed(stub.GetMaterializationJob(pb.GetMaterializationJobRequest(job_id="nope")))
    assert (error.code(), error_info(error).metadata["field"]) == (grpc.StatusCode.INVALID_ARGUMENT, "job_id")
    error = await failed(stub.GetMaterializationJob(pb.GetMaterializationJobRequest(
        job_id="6f1c1c4e-0000-4000-8000-000000000000")))
    assert (error.code(), error_info(error).reason) == (grpc.StatusCode.NOT_FOUND, "MATERIALIZATION_JOB_NOT_FOUND")


async def test_one_materialisation_per_view(stub, database_url):
    state = await PostgresMaterializationState.connect(database_url)
    lock = await state.try_lock("activity")  # as another replica running it would
    try:
        error = await failed(materialize(stub, "profile", "activity"))
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        info = error_info(error)
        assert (info.reason, info.metadata["feature_view"]) == ("MATERIALIZATION_IN_PROGRESS", "activity")
    finally:
        await lock.release()
        await state.close()
    (job,) = (await materialize(stub, "profile")).jobs  # the lock of profile was given back
    assert job.state == pb.JOB_STATE_SUCCEEDED


@pytest.mark.parametrize("request_, code, reason, field", [
    (pb.GetFeaturesRequest(feature_view="profile", entity_ids=["1", "x1"]), "INVALID_ARGUMENT", "INVALID_FIELD",
     "entity_ids[1]"),
    (pb.GetFeaturesRequest(feature_view="profile", entity_id="1.5"), "INVALID_ARGUMENT", "INVALID_FIELD", "entity_id"),
    (pb.GetFeaturesRequest(feature_view="profile", entity_ids=["1"], feature_names=["score", "x" * 5000]),
     "INVALID_ARGUMENT", "UNKNOWN_FEATURE", "feature_names[1]"),
    (pb.GetFeaturesRequest(feature_view="profile", entity_ids=["1"] * 1001), "INVALID_ARGUMENT",
     "TOO_MANY_ENTITIES", "entity_ids"),
    (pb.GetFeaturesRequest(feature_view="profile"), "INVALID_ARGUMENT", "INVALID_FIELD", "entity_ids"),
    (pb.GetFeaturesRequest(feature_view="nope", entity_id="1"), "NOT_FOUND", "FEATURE_VIEW_NOT_FOUND", None),
    (pb.GetFeaturesRequest(entity_id="1", views=[pb.FeatureViewSelection(feature_view="profile"),
                                                 pb.FeatureViewSelection(feature_view="handles")]),
     "INVALID_ARGUMENT", "INVALID_FIELD", "views[1].feature_view"),
    (pb.GetFeaturesRequest(entity_id="1", views=[pb.FeatureViewSelection(feature_view="profile"),
                                                 pb.FeatureViewSelection(feature_view="profile")]),
     "INVALID_ARGUMENT", "INVALID_FIELD", "views[1].feature_view"),
    (pb.GetFeaturesRequest(entity_id="1", views=[pb.FeatureViewSelection(feature_view="activity",
                                                                         feature_names=["events", "x" * 300])]),
     "INVALID_ARGUMENT", "UNKNOWN_FEATURE", "views[0].feature_names[1]"),
    (pb.GetFeaturesRequest(entity_id="1", views=[pb.FeatureViewSelection(feature_view="activity")] * 17),
     "INVALID_ARGUMENT", "INVALID_FIELD", "views"),
    (pb.GetFeaturesRequest(feature_view="profile", entity_id="1", views=[pb.FeatureViewSelection(
        feature_view="activity")]), "INVALID_ARGUMENT", "INVALID_FIELD", "feature_view"),
])
async def test_bad_reads_are_refused_naming_the_field(stub, request_, code, reason, field):
    error = await failed(stub.GetFeatures(request_))
    assert error.code().name == code
    info = error_info(error)
    assert info.reason == reason and info.domain == "pipeline.mlserving.mnbara"
    if field:
        assert info.metadata["field"] == field and error.details().startswith(field)
    assert len(error.details()) < 300  # never echoes unbounded input


async def test_bad_materialisations_are_refused(stub):
    error = await failed(materialize(stub, "profile", "Nope"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(error).metadata["field"] == "feature_views[1]"
    error = await failed(materialize(stub, "nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_scopes(server, dev_keys):
    reader = mint_token(dev_keys, scopes=["pipeline.read"], subject="reader")
    async with stub_to(server, reader) as stub:
        error = await failed(materialize(stub, "profile"))
        assert (error.code(), error_info(error).metadata["scope"]) == (grpc.StatusCode.PERMISSION_DENIED,
                                                                       "pipeline.write")
        assert (await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="handles", entity_id="a"))).entities
    writer = mint_token(dev_keys, scopes=["pipeline.write"], subject="writer")
    async with stub_to(server, writer) as stub:
        error = await failed(stub.GetFeatures(pb.GetFeaturesRequest(feature_view="handles", entity_id="a")))
        assert (error.code(), error_info(error).metadata["scope"]) == (grpc.StatusCode.PERMISSION_DENIED,
                                                                       "pipeline.read")

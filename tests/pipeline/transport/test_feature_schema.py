"""GetFeatureSchema through the real in-process mesh (production interceptors, tokens checked):
the views declared in the checkout's features/, one view, the errors, the scope, and a server
that refuses to start on a bad declaration."""

from __future__ import annotations

import grpc
import pytest
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb
from mnbara.mlserving.pipeline.v1 import pipeline_pb2_grpc

from ml_serving_server.app import build_server
from ml_serving_server.services.pipeline.declarations import DeclarationError, load_directory
from ml_serving_server.services.pipeline.settings import PipelineSettings
from ml_serving_tools.devauth import mint_token
from ml_serving_tools.paths import ROOT

from ...support import BearerToken, error_info, test_runtime

DOMAIN = "pipeline.mlserving.mnbara"


@pytest.fixture(scope="module")
def stub(channel) -> pipeline_pb2_grpc.PipelineServiceStub:
    return pipeline_pb2_grpc.PipelineServiceStub(channel)


@pytest.fixture(scope="module")
def declared():
    """What the mesh read at start: the checkout's features/ (PIPELINE_FEATURE_VIEWS_DIR unset)."""
    return load_directory(ROOT / "features")


async def failed(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_every_view_in_name_order_with_the_schema_version(stub, declared):
    response = await stub.GetFeatureSchema(pb.GetFeatureSchemaRequest())
    assert [v.name for v in response.feature_views] == [v.name for v in declared.views] == sorted(
        v.name for v in declared.views)
    assert response.version == declared.version
    assert [v.definition_hash for v in response.feature_views] == [v.definition_hash for v in declared.views]


async def test_one_view_as_declared(stub, declared):
    response = await stub.GetFeatureSchema(pb.GetFeatureSchemaRequest(feature_view="user_profile"))
    (view,) = response.feature_views
    assert response.version == declared.version  # the whole schema's, whatever was asked
    assert (view.entity.name, view.entity.join_key, view.entity.value_type) == ("user", "user_id",
                                                                                pb.FEATURE_TYPE_INT64)
    features = {f.name: f for f in view.features}
    assert features["is_premium"].type == pb.FEATURE_TYPE_BOOL
    assert features["country"].type == pb.FEATURE_TYPE_STRING
    assert (features["taste"].type, features["taste"].dimension) == (pb.FEATURE_TYPE_DOUBLE_LIST, 4)
    assert features["activity"].type == pb.FEATURE_TYPE_DOUBLE and features["activity"].dimension == 0
    assert "FROM demo_users" in view.source.query and view.source.timestamp_column == "updated_at"
    assert view.ttl.ToSeconds() == 90 * 86400 and view.compute_on_miss
    assert view.materialization_schedule == "*/15 * * * *" and view.tags["team"] == "recsys"
    # Nothing materialises the demo views in this session: no watermark to report.
    assert not view.HasField("materialized_until") and not view.HasField("last_materialization_time")


async def test_an_unknown_view_is_not_found(stub):
    error = await failed(stub.GetFeatureSchema(pb.GetFeatureSchemaRequest(feature_view="no_such_view")))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(error)
    assert (info.reason, info.domain, info.metadata["feature_view"]) == ("FEATURE_VIEW_NOT_FOUND", DOMAIN,
                                                                         "no_such_view")


@pytest.mark.parametrize("name, words", [("v" * 65, "at most 64 characters"), ("User Profile", "must match")])
async def test_a_name_no_view_can_have_is_invalid(stub, name, words):
    error = await failed(stub.GetFeatureSchema(pb.GetFeatureSchemaRequest(feature_view=name)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(error)
    assert (info.reason, info.domain, info.metadata["field"]) == ("INVALID_FIELD", DOMAIN, "feature_view")
    assert error.details().startswith("feature_view: ") and words in error.details()


async def test_a_token_without_pipeline_read_is_permission_denied(mesh, dev_keys):
    token = mint_token(dev_keys, scopes=["pipeline.write", "bandit.read"], subject="no-reader")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}", interceptors=[BearerToken(token)]) as chan:
        error = await failed(pipeline_pb2_grpc.PipelineServiceStub(chan).GetFeatureSchema(
            pb.GetFeatureSchemaRequest()))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(error)
    assert (info.reason, info.domain, info.metadata["scope"]) == ("SCOPE_REQUIRED", DOMAIN, "pipeline.read")


async def test_a_bad_declaration_stops_the_server_naming_file_line_and_field(tmp_path, redis_url, key_prefix):
    bad = tmp_path / "users.yaml"
    bad.write_text((ROOT / "features" / "users.yaml").read_text().replace("type: embedding", "type: vector", 1))
    line = next(n for n, text in enumerate(bad.read_text().splitlines(), start=1) if "type: vector" in text)
    runtime = test_runtime(redis_url, key_prefix, services=("pipeline",))
    with pytest.raises(DeclarationError) as caught:
        await build_server(runtime, service_settings={"pipeline": PipelineSettings(feature_views_dir=str(tmp_path))})
    assert str(caught.value).startswith(f"{bad}:{line}: views[0].features[5].type: must be one of ")


async def test_a_server_of_a_good_folder_serves_it(tmp_path, redis_url, key_prefix, database_url):
    (tmp_path / "one.yaml").write_text(
        "views:\n  - name: only_view\n    entity: {name: user, join_key: user_id, key_type: string}\n"
        "    features: [{name: score, type: float}]\n"
        "    source: {query: 'SELECT user_id, score, t FROM scores', event_time_column: t}\n")
    runtime = test_runtime(redis_url, key_prefix, services=("pipeline",), database_url=database_url)
    mesh = await build_server(runtime, service_settings={"pipeline": PipelineSettings(feature_views_dir=str(tmp_path))})
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as chan:
            response = await pipeline_pb2_grpc.PipelineServiceStub(chan).GetFeatureSchema(pb.GetFeatureSchemaRequest())
    finally:
        await mesh.stop(0)
    (view,) = response.feature_views
    assert (view.name, view.entity.value_type, view.compute_on_miss, view.HasField("ttl")) == (
        "only_view", pb.FEATURE_TYPE_STRING, False, False)
    assert response.version == load_directory(tmp_path).version

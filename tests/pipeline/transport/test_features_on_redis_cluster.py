"""The feature store on a three-node Redis Cluster (REDIS_CLUSTER): a Pipeline server of its own
whose online store is the cluster. Materialisation and GetFeatures of many entities over several
views answer as they do on one Redis (the records fall on every node)."""

from __future__ import annotations

import uuid

import pytest
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb

from ml_serving_server.app import build_server
from ml_serving_server.services.pipeline.settings import PipelineSettings
from ml_serving_tools.devauth import mint_token

from ...support import test_runtime
from .conftest import stub_to

ONLINE = pb.FEATURE_VALUE_SOURCE_ONLINE_STORE
FULL = pb.MATERIALIZATION_MODE_FULL


@pytest.fixture(scope="module")
async def cluster_stub(features_dir, redis_cluster_url, key_prefix, database_url, dev_keys):
    runtime = test_runtime(redis_cluster_url, f"{key_prefix}:fc{uuid.uuid4().hex[:6]}", keys=dev_keys,
                           database_url=database_url, redis_cluster=True, services=("pipeline",))
    server = await build_server(runtime, service_settings={"pipeline": PipelineSettings(
        feature_views_dir=str(features_dir), materialization_batch_entries=50,
        materialization_scheduler_enabled=False)})
    try:
        async with stub_to(server, mint_token(dev_keys, subject="pipeline-cluster-tests")) as stub:
            yield stub
    finally:
        await server.stop(1.0)


async def test_features_are_materialised_and_read_on_the_cluster(cluster_stub):
    stub = cluster_stub
    response = await stub.MaterializeFeatures(pb.MaterializeFeaturesRequest(
        feature_views=["profile", "activity", "handles"], mode=FULL, wait=True))
    written = {job.feature_view: (job.state, job.entities_written) for job in response.jobs}
    assert written == {"profile": (pb.JOB_STATE_SUCCEEDED, 200), "activity": (pb.JOB_STATE_SUCCEEDED, 10),
                       "handles": (pb.JOB_STATE_SUCCEEDED, 5)}

    ids = [str(i) for i in range(200, 100, -1)]
    hundred = await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="profile", entity_ids=ids,
                                                           feature_names=["level", "country"]))
    assert [e.entity_id for e in hundred.entities] == ids
    assert [e.features["country"].value.string_value for e in hundred.entities] == [f"c{i}" for i in ids]
    assert all(f.source == ONLINE for e in hundred.entities for f in e.features.values())
    assert hundred.read_through_count == 0 and not hundred.online_store_unavailable

    several = await stub.GetFeatures(pb.GetFeaturesRequest(entity_ids=["3", "7", "150"], views=[
        pb.FeatureViewSelection(feature_view="profile", feature_names=["country"]),
        pb.FeatureViewSelection(feature_view="activity", feature_names=["events"])]))
    three, seven, other = several.entities
    assert three.features["profile:country"].value.string_value == "c3"
    assert three.features["activity:events"].value.int64_value == 5
    assert (seven.features["profile:country"].source, seven.features["activity:events"].source) == (ONLINE, ONLINE)
    assert other.features["activity:events"].source == pb.FEATURE_VALUE_SOURCE_NOT_FOUND

    handles = await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="handles", entity_ids=["e", "a"]))
    assert [list(e.features["tags"].value.string_list_value.values) for e in handles.entities] == [
        ["e", "E"], ["a", "A"]]
    assert all(e.features["tags"].source == ONLINE for e in handles.entities)

"""When what the feature store stands on fails. Redis down: reads are served from the source and
say so, materialisation fails its jobs as ONLINE_STORE_UNAVAILABLE. PostgreSQL down (reached
through a TCP proxy the test cuts) with Redis up: cached values are served, a read-through fails
UNAVAILABLE (SOURCE_UNAVAILABLE), the schema and materialisation STATE_STORE_UNAVAILABLE."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb

from ml_serving_tools.devauth import mint_token

from ...registry.faults import CuttableProxy
from ...support import error_info
from .conftest import pipeline_server, stub_to

NOWHERE_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


async def failed(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_redis_down_serves_from_the_source_and_says_so(features_dir, key_prefix, database_url, dev_keys):
    async with pipeline_server(features_dir, NOWHERE_REDIS, key_prefix, database_url, dev_keys) as server, \
            stub_to(server, mint_token(dev_keys)) as stub:
        response = await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="profile", entity_ids=["7", "9999"]))
        assert response.online_store_unavailable
        found, missing = response.entities
        assert found.found and found.features["country"].value.string_value == "c7"
        assert found.features["country"].source == pb.FEATURE_VALUE_SOURCE_READ_THROUGH
        assert not missing.found
        (job,) = (await stub.MaterializeFeatures(pb.MaterializeFeaturesRequest(
            feature_views=["handles"], mode=pb.MATERIALIZATION_MODE_FULL, wait=True))).jobs
        assert job.state == pb.JOB_STATE_FAILED and job.error.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert "online feature store" in job.error.message


async def test_postgres_down_serves_cached_values_and_fails_what_needs_it(features_dir, redis_url, key_prefix,
                                                                          database_url, dev_keys):
    proxy = await CuttableProxy("127.0.0.1", urlsplit(database_url).port or 5432).start()
    prefix = f"{key_prefix}:{uuid.uuid4().hex[:6]}"
    try:
        async with pipeline_server(features_dir, redis_url, prefix, _via(database_url, proxy.port), dev_keys,
                                   read_through_timeout_seconds=1.0, database_timeout_seconds=1.0) as server, \
                stub_to(server, mint_token(dev_keys)) as stub:
            (job,) = (await stub.MaterializeFeatures(pb.MaterializeFeaturesRequest(
                feature_views=["profile"], mode=pb.MATERIALIZATION_MODE_FULL, wait=True))).jobs
            assert job.state == pb.JOB_STATE_SUCCEEDED
            proxy.cut_after(0)
            cached = await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="profile", entity_ids=["1", "2"]))
            assert all(e.found and e.features["score"].source == pb.FEATURE_VALUE_SOURCE_ONLINE_STORE
                       for e in cached.entities)
            error = await failed(stub.GetFeatures(pb.GetFeaturesRequest(feature_view="profile",
                                                                        entity_ids=["1", "5000"])))
            assert (error.code(), error_info(error).reason) == (grpc.StatusCode.UNAVAILABLE, "SOURCE_UNAVAILABLE")
            for call in (stub.GetFeatureSchema(pb.GetFeatureSchemaRequest()),
                         stub.MaterializeFeatures(pb.MaterializeFeaturesRequest(feature_views=["profile"]))):
                error = await failed(call)
                assert (error.code(), error_info(error).reason) == (grpc.StatusCode.UNAVAILABLE,
                                                                    "STATE_STORE_UNAVAILABLE")
            proxy.revive()
            back = await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="profile", entity_ids=["5000", "3"]))
            assert [e.found for e in back.entities] == [False, True]
    finally:
        await proxy.stop()

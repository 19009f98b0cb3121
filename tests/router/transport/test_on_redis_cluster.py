"""The Router on a three-node Redis Cluster (REDIS_CLUSTER): a server of its own (Registry,
Inference and Router, on the session's PostgreSQL, MLflow and TorchServe) whose measurements
live on the cluster. An experiment's predictions, exposures, outcomes and results come out as
they do on one Redis."""

from __future__ import annotations

import uuid

import pytest

from mnbara.mlserving.router.v1 import router_pb2 as pb
from ml_serving import RouterClient
from ml_serving_server.app import build_server
from ml_serving_tools import stack as stack_module

from ...conftest import inference_settings_for, router_settings_for
from ...registry.conftest import registry_settings_for, unique_name
from ...support import test_runtime
from .conftest import experiment


@pytest.fixture(scope="module")
async def cluster_router(redis_cluster_url, key_prefix, dev_keys, database_url, mlflow_uri, s3_endpoint,
                         torchserve_endpoints, token):
    runtime = test_runtime(redis_cluster_url, f"{key_prefix}:rc{uuid.uuid4().hex[:6]}", keys=dev_keys,
                           database_url=database_url, redis_cluster=True,
                           services=("registry", "inference", "router"))
    token_file = str(stack_module.service_token_file(dev_keys))
    server = await build_server(runtime, service_settings={
        "registry": registry_settings_for(mlflow_uri, s3_endpoint),
        "inference": inference_settings_for(torchserve_endpoints, s3_endpoint, token_file),
        "router": router_settings_for(torchserve_endpoints, str(stack_module.service_token_file(
            dev_keys, subject="router", scopes=stack_module.ROUTER_SCOPES)), monitor_feed_seconds=0)})
    try:
        async with RouterClient(f"127.0.0.1:{server.port}", token=token) as client:
            yield client
    finally:
        await server.stop(1.0)


async def test_an_experiment_is_measured_on_the_cluster_as_on_one_redis(cluster_router, two_versions):
    router = cluster_router
    name = unique_name("cluster")
    await router.create_experiment(experiment(name, two_versions))
    try:
        served: dict[str, int] = {}
        for index in range(30):
            response = await router.predict(f"c-{index}", {"x": index}, experiment=name)
            assert dict(response.prediction.struct_value)["x"] == index
            served[response.assignment.variant] = served.get(response.assignment.variant, 0) + 1
        assert set(served) == {"control", "treatment"}

        outcomes = [pb.RecordOutcomeRequest(event_id=f"e-{index}", experiment=name, user_id=f"c-{index}",
                                            converted=index % 3 == 0) for index in range(30)]
        first = await router.batch_record_outcomes(pb.BatchRecordOutcomesRequest(outcomes=outcomes + outcomes[:5]))
        assert (first.applied_count, first.duplicate_count, first.not_counted_count) == (30, 5, 0)
        stranger = await router.record_outcome(experiment=name, user_id="never-seen", converted=True,
                                               event_id="e-stranger")
        assert not stranger.counted and not stranger.duplicate

        results = await router.get_experiment_results(name)
        by_variant = {v.variant: v for v in results.variants}
        assert {v: by_variant[v].request_count for v in served} == served
        assert {v: by_variant[v].exposures for v in served} == served
        assert sum(v.outcome_count for v in results.variants) == 10
        assert all(by_variant[v].latency_p50_ms > 0 for v in served)
    finally:
        await router.stop_experiment(pb.StopExperimentRequest(name=name))

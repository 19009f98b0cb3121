"""When what the Router stands on fails: each failure is a meaningful status, and what can still
be answered from memory (assignment) still is.

A Router-only server talks to the session mesh's Registry; PostgreSQL and Redis are reached
through TCP proxies these tests cut, TorchServe or the Registry through addresses where nothing
listens."""

from __future__ import annotations

import contextlib
from urllib.parse import urlsplit, urlunsplit

import grpc
import pytest

from mnbara.mlserving.router.v1 import router_pb2 as pb
from ml_serving import RouterClient, errors
from ml_serving_server.app import build_server
from ml_serving_tools import stack as stack_module

from ...conftest import router_settings_for
from ...registry.conftest import unique_name
from ...registry.faults import CuttableProxy
from ...support import test_runtime
from .conftest import experiment

NOWHERE = "127.0.0.1:1"  # nothing listens on port 1


def _via(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


@contextlib.asynccontextmanager
async def router_server(mesh, dev_keys, redis_url, database_url, key_prefix, torchserve_endpoints, **settings):
    """A server hosting only the Router (Registry: the session mesh's), and a client to it."""
    token_file = str(stack_module.service_token_file(dev_keys, subject="router", scopes=stack_module.ROUTER_SCOPES))
    options = {"registry_addr": f"127.0.0.1:{mesh.port}", **settings}
    runtime = test_runtime(redis_url, key_prefix, keys=dev_keys, database_url=database_url, services=("router",))
    server = await build_server(runtime, service_settings={
        "router": router_settings_for(torchserve_endpoints, token_file, **options)})
    try:
        async with RouterClient(f"127.0.0.1:{server.port}", token=stack_module.devauth.mint_token(dev_keys),
                                timeout=10) as client:
            yield client
    finally:
        await server.stop(1.0)


@pytest.fixture
def deps(mesh, dev_keys, redis_url, database_url, key_prefix, torchserve_endpoints):
    return dict(mesh=mesh, dev_keys=dev_keys, redis_url=redis_url, database_url=database_url, key_prefix=key_prefix,
                torchserve_endpoints=torchserve_endpoints)


async def test_torchserve_down_fails_predict_as_unavailable_and_assignment_goes_on(deps, two_versions):
    async with router_server(**deps, torchserve_grpc_addr=NOWHERE, torchserve_management_addr=NOWHERE) as router:
        name = unique_name("ts-down")
        await router.create_experiment(experiment(name, two_versions), paused=True)
        with pytest.raises(errors.UnavailableError) as caught:
            await router.predict("u1", {"x": 1}, experiment=name)
        assert caught.value.reason == "BACKEND_UNAVAILABLE"
        assert (await router.assign_variant("u1", experiment=name)).assignment.variant == "control"


async def test_registry_down_refuses_changes_it_cannot_check_as_unavailable(deps, two_versions):
    async with router_server(**deps, registry_addr=NOWHERE, registry_timeout_seconds=0.5) as router:
        with pytest.raises(errors.UnavailableError) as caught:
            await router.create_experiment(experiment(unique_name("reg-down"), two_versions))
        assert caught.value.reason == "REGISTRY_UNAVAILABLE"
        with pytest.raises(errors.UnavailableError) as caught:
            await router.assign_variant("u1", model_name=two_versions)  # its Production version: unknown now
        assert caught.value.reason == "REGISTRY_UNAVAILABLE"


async def test_postgres_down_fails_reads_and_writes_and_cached_assignment_goes_on(deps, two_versions):
    proxy = await CuttableProxy("127.0.0.1", urlsplit(deps["database_url"]).port or 5432).start()
    deps = {**deps, "database_url": _via(deps["database_url"], proxy.port)}
    try:
        async with router_server(**deps) as router:
            name = unique_name("pg-down")
            await router.create_experiment(experiment(name, two_versions), paused=True)
            proxy.cut_after(0)
            for call in (router.get_experiment(name),
                         router.pause_experiment(pb.PauseExperimentRequest(name=name))):
                with pytest.raises(errors.UnavailableError) as caught:
                    await call
                assert caught.value.reason == "STATE_STORE_UNAVAILABLE"
            assert (await router.assign_variant("u1", experiment=name)).assignment.variant == "control"
            proxy.revive()
            assert (await router.get_experiment(name)).experiment.name == name  # the pool reconnects
    finally:
        await proxy.stop()


async def test_redis_down_fails_outcomes_and_results_and_assignment_goes_on(deps, two_versions):
    proxy = await CuttableProxy("127.0.0.1", urlsplit(deps["redis_url"]).port or 6379).start()
    deps = {**deps, "redis_url": _via(deps["redis_url"], proxy.port)}
    try:
        async with router_server(**deps) as router:
            name = unique_name("redis-down")
            await router.create_experiment(experiment(name, two_versions), paused=True)
            proxy.cut_after(0)
            outcome = router.record_outcome(experiment=name, user_id="u1", converted=True, event_id="e1")
            for call in (outcome, router.get_experiment_results(name)):
                with pytest.raises(errors.UnavailableError) as caught:
                    await call
                assert caught.value.reason == "STATE_STORE_UNAVAILABLE"
            assert (await router.assign_variant("u1", experiment=name)).assignment.variant == "control"
            with pytest.raises(errors.UnavailableError):  # no retry hides the outage
                await router.get_experiment_results(name)
            proxy.revive()
            results = await router.get_experiment_results(name)
            assert results.experiment == name
    finally:
        await proxy.stop()


async def test_a_token_without_router_admin_changes_nothing(mesh, dev_keys, two_versions):
    reader = stack_module.devauth.mint_token(dev_keys, scopes=["router.read"])
    name = unique_name("scoped")
    async with RouterClient(f"127.0.0.1:{mesh.port}", token=reader) as router:
        with pytest.raises(errors.PermissionDeniedError) as caught:
            await router.create_experiment(experiment(name, two_versions))
        assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(errors.NotFoundError):
            await router.get_experiment(name)

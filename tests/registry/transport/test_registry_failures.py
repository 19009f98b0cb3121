"""MLflow failing under the registry: down, hung, or dying at each step of a promotion. A proxy in
front of the session's real MLflow cuts or stalls it at an exact request; the registry must
answer UNAVAILABLE, change nothing it cannot finish, keep resolving from its cache, and put
MLflow's view back once it answers."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import pytest
from mlflow.tracking import MlflowClient
from ml_serving import RegistryClient, UnavailableError
from mnbara.mlserving.registry.v1 import registry_pb2 as pb

from ..conftest import mar_bytes, registry_settings_for, start_registry, unique_name
from ..faults import CuttableProxy

PRODUCTION, STAGING = pb.STAGE_PRODUCTION, pb.STAGE_STAGING


@pytest.fixture
async def cut(database_url, mlflow_uri, s3_endpoint, dev_keys, token):
    """(proxy, client of a registry replica that reaches MLflow only through the proxy)."""
    target = urlsplit(mlflow_uri)
    proxy = await CuttableProxy(target.hostname, target.port).start()
    settings = registry_settings_for(proxy.uri, s3_endpoint, mlflow_timeout_seconds=1.0)
    server = await start_registry(database_url, settings, dev_keys)
    client = RegistryClient(f"127.0.0.1:{server.port}", token=token, timeout=20)
    yield proxy, client
    proxy.revive()
    await client.close()
    await server.stop(1.0)
    await proxy.stop()


async def eventually(check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await asyncio.to_thread(check):
                return
        except Exception:  # noqa: BLE001 - not yet
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.2)


async def model_with_production_and_candidate(registry: RegistryClient) -> str:
    name = unique_name("fault")
    await registry.create_registered_model(name)
    for _ in range(2):
        await registry.create_model_version(name, artifact=mar_bytes(name), artifact_file_name="m.mar")
        await registry.transition_stage(name, str(_ + 1), STAGING)
    await registry.transition_stage(name, "1", PRODUCTION)
    return name


async def test_mlflow_dying_at_each_step_of_a_promotion_leaves_the_previous_state_whole(cut, mlflow_uri):
    proxy, registry = cut
    name = await model_with_production_and_candidate(registry)
    history_before = len((await registry.list_stage_transitions(model_name=name)).transitions)
    assert (await registry.resolve(name)).version == "1"  # cached: from now on resolve needs no MLflow
    plain = MlflowClient(mlflow_uri)
    for budget in range(40):
        proxy.cut_after(budget)
        try:
            await registry.transition_stage(name, "2", PRODUCTION)
            break  # enough requests got through: the promotion is whole
        except UnavailableError as error:
            assert error.reason == "BACKEND_UNAVAILABLE"
        # The registry's own view did not move: still version 1, no audit entry, no event.
        assert (await registry.resolve(name)).version == "1"
        assert len((await registry.list_stage_transitions(model_name=name)).transitions) == history_before
        proxy.revive()
        # What MLflow took before it died is put back by the repair loop.
        await eventually(lambda: plain.get_model_version_by_alias(name, "production").version == "1"
                         and plain.get_model_version(name, "2").tags["mnbara.stage"] == "Staging"
                         and plain.get_model_version(name, "1").tags["mnbara.stage"] == "Production")
    else:
        pytest.fail("the promotion never succeeded")
    assert budget >= 3, budget  # it did fail part-way at least once
    proxy.revive()
    assert (await registry.resolve(name)).version == "2"
    assert plain.get_model_version_by_alias(name, "production").version == "2"
    assert plain.get_model_version(name, "1").tags["mnbara.stage"] == "Archived"


async def test_mlflow_down_is_unavailable_and_resolve_keeps_answering_from_the_cache(cut):
    proxy, registry = cut
    name = await model_with_production_and_candidate(registry)
    assert (await registry.resolve(name)).version == "1"  # warm
    proxy.cut_after(0)
    started = time.monotonic()
    for call in (registry.get_registered_model(name), registry.create_registered_model(unique_name()),
                 registry.create_model_version(name, artifact=mar_bytes(name), artifact_file_name="m.mar")):
        with pytest.raises(UnavailableError) as raised:
            await call
        assert raised.value.reason == "BACKEND_UNAVAILABLE"
    assert time.monotonic() - started < 10
    resolved_at = time.monotonic()
    assert (await registry.resolve(name)).version == "1"
    assert (await registry.resolve(f"{name}@staging")).version == "2"
    assert time.monotonic() - resolved_at < 0.5  # from memory, not a timed-out MLflow call
    proxy.revive()
    assert (await registry.get_registered_model(name)).registered_model.production_version == "1"


async def test_a_hung_mlflow_is_unavailable_within_the_timeout(cut):
    proxy, registry = cut
    name = unique_name()
    await registry.create_registered_model(name)
    proxy.stalled = True
    started = time.monotonic()
    with pytest.raises(UnavailableError) as raised:
        await registry.get_registered_model(name)
    assert raised.value.reason == "BACKEND_UNAVAILABLE"
    assert time.monotonic() - started < 8  # mlflow_timeout_seconds is 1 here


async def test_killing_the_mlflow_process_mid_promotions_leaves_a_whole_state(database_url, s3_endpoint, dev_keys,
                                                                              token, tmp_path):
    """A private MLflow, SIGKILLed while promotions of two versions alternate, then restarted on its port:
    every promotion either happened whole or not at all, and MLflow agrees with the registry again."""
    from ml_serving_tools import devservices

    mlflow = devservices.start_mlflow(tmp_path, database_url, s3_endpoint)
    server = await start_registry(database_url, registry_settings_for(mlflow.uri, s3_endpoint,
                                                                      mlflow_timeout_seconds=1.0), dev_keys)
    registry = RegistryClient(f"127.0.0.1:{server.port}", token=token, timeout=20)
    try:
        name = await model_with_production_and_candidate(registry)
        assert (await registry.resolve(name)).version == "1"
        outcomes: list[str] = []

        async def promote_back_and_forth() -> None:
            candidate = "2"
            for _ in range(200):
                try:
                    await registry.transition_stage(name, candidate, PRODUCTION)
                    outcomes.append("promoted")
                    await registry.transition_stage(name, "2" if candidate == "1" else "1", STAGING)
                    candidate = "2" if candidate == "1" else "1"
                except UnavailableError:
                    outcomes.append("unavailable")
                    return

        promoting = asyncio.create_task(promote_back_and_forth())
        await asyncio.sleep(1.5)
        await asyncio.to_thread(mlflow.kill)
        await asyncio.wait_for(promoting, 30)
        assert outcomes[-1] == "unavailable" and "promoted" in outcomes
        # The registry's view is whole: exactly one version in Production, the other archived by that
        # promotion or already restored to Staging.
        production = (await registry.resolve(name)).version
        other = "2" if production == "1" else "1"
        other_stage = (await registry.resolve(f"{name}/{other}")).stage
        assert other_stage in (STAGING, pb.STAGE_ARCHIVED)
        other_tag = "Staging" if other_stage == STAGING else "Archived"
        await asyncio.to_thread(mlflow.restart)
        plain = MlflowClient(mlflow.uri)
        await eventually(lambda: plain.get_model_version_by_alias(name, "production").version == production
                         and plain.get_model_version(name, production).tags["mnbara.stage"] == "Production"
                         and plain.get_model_version(name, other).tags["mnbara.stage"] == other_tag, timeout=30)
        assert (await registry.get_registered_model(name)).registered_model.production_version == production
    finally:
        await registry.close()
        await server.stop(1.0)
        await asyncio.to_thread(mlflow.stop)

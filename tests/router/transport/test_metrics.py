"""The Router's domain metrics through the in-process mesh, real TorchServe, PostgreSQL and Redis:
predictions by experiment, variant and outcome, exposures, outcomes counted once, and canary
verdicts counted once while two replicas drive the canary, with its traffic share as a gauge."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from ml_serving import RouterClient, errors
from mnbara.mlserving.router.v1 import router_pb2 as pb
from prometheus_client import REGISTRY

from ml_serving_server.app import build_server
from ml_serving_server.runtime import metric_labels
from ml_serving_tools import stack as stack_module

from ...conftest import inference_settings_for, router_settings_for
from ...registry.conftest import registry_settings_for, unique_name
from ...support import private_database, test_runtime
from .conftest import experiment, served_model
from .test_canaries import canary, state_of


@pytest.fixture(autouse=True)
def fresh_label_bounds(monkeypatch):
    """The session's other tests may have used up the names a label admits: these start afresh."""
    monkeypatch.setattr(metric_labels, "BOUNDS", metric_labels.LabelBounds())


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def per_variant(name: str, experiment_name: str, **labels: str) -> Counter:
    return Counter({variant: value(name, experiment=experiment_name, variant=variant, **labels)
                    for variant in ("control", "treatment")})


async def test_predictions_exposures_and_outcomes_by_variant(router, created, two_versions):
    running = await created(experiment(unique_name("metrics"), two_versions))
    served: Counter = Counter()
    for index in range(8):
        response = await router.predict(f"m-{index}", {"x": index}, experiment=running.name)
        served[response.assignment.variant] += 1
    await router.assign_variant("m-0", experiment=running.name, dry_run=True)  # no exposure
    with pytest.raises(errors.InvalidArgumentError):  # assigned, then refused: a failed prediction
        await router.predict("m-0", b"x" * (4 * 1024 * 1024 + 1), experiment=running.name)
    failed_variant = (await router.assign_variant("m-0", experiment=running.name, dry_run=True)).assignment.variant
    outcome = pb.RecordOutcomeRequest(event_id="m-e0", experiment=running.name, user_id="m-0", converted=True)
    await router.batch_record_outcomes(pb.BatchRecordOutcomesRequest(outcomes=[outcome, outcome]))  # one counts

    assert per_variant("mlserving_router_predictions_total", running.name, outcome="ok") == served
    assert per_variant("mlserving_router_predictions_total", running.name, outcome="error") == \
        Counter({failed_variant: 1})
    assert per_variant("mlserving_router_exposures_total", running.name) == served + Counter({failed_variant: 1})
    assert per_variant("mlserving_router_outcomes_total", running.name) == Counter({failed_variant: 1})


async def predict_until(router, model: str, canary_id: str, wanted: int, timeout_s: float = 30.0) -> Counter:
    """Predict for new users until the canary is in state `wanted`: the variants served."""
    served: Counter = Counter()
    deadline = time.monotonic() + timeout_s
    while (await state_of(router, canary_id)).state != wanted:
        assert time.monotonic() < deadline, "the canary did not get there in time"
        for _ in range(5):
            response = await router.predict(f"c-{sum(served.values())}", {"x": 1}, model_name=model)
            served[response.assignment.variant] += 1
        await asyncio.sleep(0.1)
    return served


async def step_becomes(model: str, percent: float | None, timeout_s: float = 10.0) -> None:
    """Each replica's catalog reports the step as it knows it: wait until both know the change."""
    deadline = time.monotonic() + timeout_s
    while (now := REGISTRY.get_sample_value("mlserving_router_canary_step", {"model": model})) != percent:
        assert time.monotonic() < deadline, f"the canary's step is {now}, not {percent}"
        await asyncio.sleep(0.05)


async def test_canary_verdicts_count_once_with_two_replicas_driving(
        token, echo_archive, dev_keys, redis_url, postgres_server, key_prefix, mlflow_uri, s3_endpoint,
        torchserve_endpoints):
    # Both replicas on a database of their own: the session's is shared with the session mesh
    # and the e2e stack, whose canary drivers would take verdicts (counted in their processes).
    with private_database(postgres_server) as database_url:
        first = await build_server(
            test_runtime(redis_url, key_prefix, keys=dev_keys, database_url=database_url),
            service_settings={
                "registry": registry_settings_for(mlflow_uri, s3_endpoint),
                "inference": inference_settings_for(torchserve_endpoints, s3_endpoint,
                                                    str(stack_module.service_token_file(dev_keys))),
                "router": router_settings(dev_keys, torchserve_endpoints, registry_addr="")})
        second = await build_server(
            test_runtime(redis_url, key_prefix, keys=dev_keys, database_url=database_url, services=("router",)),
            service_settings={"router": router_settings(dev_keys, torchserve_endpoints,
                                                        registry_addr=f"127.0.0.1:{first.port}")})
        try:
            async with RouterClient(f"127.0.0.1:{first.port}", token=token) as router:
                await _verdicts_count_once(router, f"127.0.0.1:{first.port}", token, echo_archive)
        finally:
            await second.stop(1.0)
            await first.stop(1.0)


def router_settings(dev_keys, torchserve_endpoints, registry_addr: str):
    token_file = str(stack_module.service_token_file(dev_keys, subject="router", scopes=stack_module.ROUTER_SCOPES))
    if registry_addr:
        return router_settings_for(torchserve_endpoints, token_file, registry_addr=registry_addr)
    return router_settings_for(torchserve_endpoints, token_file)


async def _verdicts_count_once(router, addr: str, token: str, echo_archive) -> None:
    async with served_model(addr, token, [echo_archive, echo_archive], "canary") as model:
        verdicts = {v: value("mlserving_router_canary_verdicts_total", model=model, verdict=v)
                    for v in ("advanced", "awaiting_promotion", "rolled_back", "promoted")}
        before = {v: value("mlserving_router_predictions_total", experiment="", variant=v, outcome="ok")
                  for v in ("canary", "stable")}
        started = (await router.start_canary(pb.StartCanaryRequest(canary=canary(
            model, steps=(5000, 10000), interval_s=1.0, min_requests=1, manual_promotion=True)))).canary
        await step_becomes(model, 50.0)

        served = await predict_until(router, model, started.canary_id, pb.CANARY_STATE_AWAITING_PROMOTION)
        await step_becomes(model, 100.0)
        await router.rollback_canary(pb.RollbackCanaryRequest(canary_id=started.canary_id, reason="test over"))
        await step_becomes(model, None)  # a finished canary has no step

        counted = {v: value("mlserving_router_canary_verdicts_total", model=model, verdict=v) - verdicts[v]
                   for v in verdicts}
        assert counted == {"advanced": 1, "awaiting_promotion": 1, "rolled_back": 1, "promoted": 0}
        assert {v: value("mlserving_router_predictions_total", experiment="", variant=v, outcome="ok")
                - before[v] for v in before} == {v: served[v] for v in before}

"""Canaries over gRPC against real TorchServe, Registry, PostgreSQL and Redis: a healthy canary
walks to 100% and is promoted in the Registry, a faulty one rolls back on its own, too little
traffic holds the step, and two replicas never both drive one canary."""

from __future__ import annotations

import asyncio
import time

import pytest
from google.protobuf import duration_pb2

from mnbara.mlserving.registry.v1 import registry_pb2 as rpb
from mnbara.mlserving.router.v1 import router_pb2 as pb
from ml_serving import RegistryClient, errors
from ml_serving_server.app import build_server
from ml_serving_tools import stack as stack_module

from ...conftest import router_settings_for
from ...support import test_runtime
from .conftest import experiment, served_model


def canary(model: str, *, steps=(2000, 5000, 10000), interval_s: float = 1.0, min_requests: int = 20,
           max_increase: float = 0.05, canary_version: str = "2", **fields) -> pb.Canary:
    return pb.Canary(model_name=model, canary_version=canary_version, steps_bps=list(steps),
                     step_interval=duration_pb2.Duration(seconds=int(interval_s),
                                                         nanos=int(interval_s % 1 * 1e9)),
                     min_requests_per_step=min_requests,
                     thresholds=pb.CanaryThresholds(max_error_rate_increase=max_increase), **fields)


async def drive_traffic(router, model: str, canary_id: str, wanted: int, timeout_s: float = 60.0) -> list[str]:
    """Predict for ever new users (input n = i) until the canary is in state `wanted`; the
    errors callers saw meanwhile."""
    failures: list[str] = []
    deadline = time.monotonic() + timeout_s
    index = 0
    while time.monotonic() < deadline:
        for _ in range(20):
            index += 1
            try:
                await router.predict(f"user-{index}", {"n": index}, model_name=model)
            except errors.MLServingError as error:
                failures.append(error.reason)
        now = await state_of(router, canary_id)
        if now.state == wanted:
            return failures
        assert now.state in (pb.CANARY_STATE_RUNNING, pb.CANARY_STATE_PAUSED), now
    raise AssertionError(f"the canary did not get there within {timeout_s} s: {now}")


async def state_of(router, canary_id: str) -> pb.Canary:
    return (await router.get_canary(pb.GetCanaryRequest(canary_id=canary_id))).canary


async def events_of(router, canary_id: str) -> list[pb.CanaryEvent]:
    return (await router.list_canary_events(pb.ListCanaryEventsRequest(canary_id=canary_id))).events


async def stage_of(mesh, token, model: str, version: str) -> int:
    async with RegistryClient(f"127.0.0.1:{mesh.port}", token=token) as registry:
        return (await registry.get_model_version(model, version)).model_version.stage


async def test_a_healthy_canary_walks_to_production_driven_by_one_of_two_replicas(
        mesh, token, router, echo_archive, dev_keys, redis_url, database_url, key_prefix, torchserve_endpoints):
    second = await build_server(
        test_runtime(redis_url, key_prefix, keys=dev_keys, database_url=database_url, services=("router",)),
        service_settings={"router": router_settings_for(
            torchserve_endpoints, str(stack_module.service_token_file(dev_keys, subject="router",
                                                                      scopes=stack_module.ROUTER_SCOPES)),
            registry_addr=f"127.0.0.1:{mesh.port}")})
    try:
        async with served_model(f"127.0.0.1:{mesh.port}", token, [echo_archive, echo_archive]) as model:
            started = (await router.start_canary(pb.StartCanaryRequest(canary=canary(model)))).canary
            assert (started.stable_version, started.current_weight_bps) == ("1", 2000)

            failures = await drive_traffic(router, model, started.canary_id, pb.CANARY_STATE_PROMOTED)
            assert failures == []
            trail = await events_of(router, started.canary_id)
            kinds = [e.event_type for e in trail]
            assert kinds == [pb.CANARY_EVENT_TYPE_STARTED, pb.CANARY_EVENT_TYPE_ADVANCED,
                             pb.CANARY_EVENT_TYPE_ADVANCED, pb.CANARY_EVENT_TYPE_PROMOTED]
            assert [(e.from_weight_bps, e.to_weight_bps) for e in trail[1:3]] == [(2000, 5000), (5000, 10000)]
            assert all(e.automatic and e.canary_stats.request_count >= 20 for e in trail[1:])
            assert await stage_of(mesh, token, model, "2") == rpb.STAGE_PRODUCTION
            assert await stage_of(mesh, token, model, "1") == rpb.STAGE_ARCHIVED
            after = (await router.assign_variant("anyone", model_name=model, dry_run=True)).assignment
            assert (after.model_version, after.reason) == ("2", pb.ASSIGNMENT_REASON_DEFAULT)
    finally:
        await second.stop(1.0)


async def test_a_faulty_canary_rolls_back_on_its_own_and_then_nobody_sees_an_error(
        mesh, token, router, echo_archive, flaky_archive):
    async with served_model(f"127.0.0.1:{mesh.port}", token, [echo_archive, flaky_archive]) as model:
        interval = 2.0
        started = (await router.start_canary(pb.StartCanaryRequest(
            canary=canary(model, interval_s=interval)))).canary
        began = time.monotonic()

        failures = await drive_traffic(router, model, started.canary_id, pb.CANARY_STATE_ROLLED_BACK,
                                       timeout_s=interval * 10)
        took = time.monotonic() - began
        assert failures and set(failures) == {"MODEL_HANDLER_ERROR"}
        final = await state_of(router, started.canary_id)
        assert final.current_weight_bps == 0 and "error rate" in final.rollback_reason
        last = (await events_of(router, started.canary_id))[-1]
        assert last.event_type == pb.CANARY_EVENT_TYPE_ROLLED_BACK and last.automatic and last.actor == "router"
        assert last.canary_stats.error_count > 0 and last.stable_stats.error_count == 0
        assert took < interval * 3 + 5, f"rolled back after {took:.1f} s"
        for index in range(100):  # every input, those the faulty version fails on included
            response = await router.predict(f"after-{index}", {"n": index}, model_name=model)
            assert response.assignment.model_version == "1"
        # Traffic goes back first; the Registry is told right after (the driver archives the version).
        deadline = time.monotonic() + 15
        while await stage_of(mesh, token, model, "2") != rpb.STAGE_ARCHIVED:
            assert time.monotonic() < deadline, "the rolled-back version was not archived in the Registry"
            await asyncio.sleep(0.2)


async def test_too_little_traffic_holds_the_step_and_says_so(mesh, token, router, echo_archive):
    async with served_model(f"127.0.0.1:{mesh.port}", token, [echo_archive, echo_archive]) as model:
        started = (await router.start_canary(pb.StartCanaryRequest(
            canary=canary(model, min_requests=1000)))).canary
        try:
            deadline = time.monotonic() + 15
            while True:
                now = await state_of(router, started.canary_id)
                if "waiting for traffic" in now.status_message:
                    break
                assert time.monotonic() < deadline, now
                await asyncio.sleep(0.3)
            assert (now.state, now.current_step, now.current_weight_bps) == (pb.CANARY_STATE_RUNNING, 0, 2000)
            assert "0 of 1000" in now.status_message
        finally:
            await router.rollback_canary(pb.RollbackCanaryRequest(canary_id=started.canary_id, reason="test over"))


async def test_manual_operations_and_what_they_refuse(mesh, token, router, echo_archive):
    async with served_model(f"127.0.0.1:{mesh.port}", token, [echo_archive, echo_archive]) as model:
        request = pb.StartCanaryRequest(canary=canary(model, manual_promotion=True), request_id=f"start-{model}")
        started = (await router.start_canary(request)).canary
        assert (await router.start_canary(request)).canary.canary_id == started.canary_id  # a retry
        with pytest.raises(errors.FailedPreconditionError) as caught:
            await router.start_canary(pb.StartCanaryRequest(canary=canary(model)))
        assert caught.value.reason == "MODEL_HAS_ACTIVE_CANARY"
        with pytest.raises(errors.FailedPreconditionError) as caught:
            await router.create_experiment(experiment(f"exp-{started.canary_id[:8]}", model))
        assert caught.value.reason == "MODEL_HAS_ACTIVE_CANARY"

        paused = (await router.pause_canary(pb.PauseCanaryRequest(canary_id=started.canary_id, reason="look"))).canary
        assert paused.state == pb.CANARY_STATE_PAUSED
        resumed = (await router.resume_canary(pb.ResumeCanaryRequest(canary_id=started.canary_id))).canary
        assert resumed.state == pb.CANARY_STATE_RUNNING
        with pytest.raises(errors.InvalidArgumentError):
            await router.rollback_canary(pb.RollbackCanaryRequest(canary_id=started.canary_id))  # no reason
        rolled = (await router.rollback_canary(pb.RollbackCanaryRequest(canary_id=started.canary_id,
                                                                        reason="changed my mind"))).canary
        assert (rolled.state, rolled.rollback_reason) == (pb.CANARY_STATE_ROLLED_BACK, "changed my mind")
        with pytest.raises(errors.FailedPreconditionError) as caught:
            await router.promote_canary(pb.PromoteCanaryRequest(canary_id=started.canary_id))
        assert caught.value.reason == "CANARY_FINISHED"
        kinds = [e.event_type for e in await events_of(router, started.canary_id)]
        assert kinds == [pb.CANARY_EVENT_TYPE_STARTED, pb.CANARY_EVENT_TYPE_PAUSED, pb.CANARY_EVENT_TYPE_RESUMED,
                         pb.CANARY_EVENT_TYPE_ROLLED_BACK]
        listed = (await router.list_canaries(pb.ListCanariesRequest(model_name=model))).canaries
        assert [c.canary_id for c in listed] == [started.canary_id]


@pytest.mark.parametrize("change, reason, field", [
    (dict(steps_bps=[5000, 2000]), "INVALID_STEPS", "canary.steps_bps[1]"),
    (dict(steps_bps=[]), "INVALID_STEPS", "canary.steps_bps"),
    (dict(step_interval=duration_pb2.Duration(seconds=0)), "INVALID_STEPS", "canary.step_interval"),
    (dict(thresholds=pb.CanaryThresholds(max_error_rate_increase=2)), "INVALID_THRESHOLDS",
     "canary.thresholds.max_error_rate_increase"),
    (dict(canary_version="x"), "INVALID_FIELD", "canary.canary_version"),
    (dict(canary_version="1"), "INVALID_FIELD", "canary.canary_version"),
], ids=["decreasing", "none", "interval", "threshold", "version", "same-version"])
async def test_bad_canaries_are_refused_naming_the_field(router, two_versions, change, reason, field):
    request = canary(two_versions)
    for key, value in change.items():
        if key in ("steps_bps",):
            del request.steps_bps[:]
            request.steps_bps.extend(value)
        elif key in ("step_interval", "thresholds"):
            getattr(request, key).CopyFrom(value)
        else:
            setattr(request, key, value)
    with pytest.raises(errors.InvalidArgumentError) as caught:
        await router.start_canary(pb.StartCanaryRequest(canary=request))
    assert (caught.value.reason, caught.value.metadata["field"]) == (reason, field)


async def test_an_unknown_canary_version_is_not_found(router, two_versions):
    with pytest.raises(errors.NotFoundError) as caught:
        await router.start_canary(pb.StartCanaryRequest(canary=canary(two_versions, canary_version="99")))
    assert caught.value.reason == "MODEL_VERSION_NOT_FOUND"

"""Failures of TorchServe under the mesh, end to end: killing a model's worker under load (64
predictions in flight) hangs no request and fails only what was inside that worker, as
UNAVAILABLE; TorchServe down answers UNAVAILABLE (BACKEND_UNAVAILABLE) at once, the Inference
service's health turns NOT_SERVING while the server's stays SERVING, so the other services keep
answering through Envoy; TorchServe back, everything serves again.

A private TorchServe and stack (conftest.py); the model is the `slow` handler (50 ms per request),
promoted to Staging so that the deployer loads it with one worker and batch size 1."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import grpc
import pytest
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mnbara.mlserving.inference.v1 import inference_pb2 as pb
from mnbara.mlserving.inference.v1 import inference_pb2_grpc

from ...support import error_info
from .conftest import INFERENCE_SERVICE, eventually, json_body

IN_FLIGHT = 64
SLEEP_MS = 50
DEADLINE_S = 20.0  # 64 x 50 ms one at a time, plus a new worker (about 2 s; more on a busy machine)
SERVE_WITHIN_S = 20.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture(scope="module")
async def channel(private_mesh):
    async with grpc.aio.insecure_channel(private_mesh.stack.grpc_addr) as chan:
        yield chan


@pytest.fixture(scope="module")
def auth(private_mesh):
    return (("authorization", f"Bearer {private_mesh.token}"),)


def predict_request(name: str, **inputs) -> pb.PredictRequest:
    struct = struct_pb2.Struct()
    struct.update(inputs)
    return pb.PredictRequest(model_name=name, version="1", inputs=struct)


async def describe(stub, name: str, auth) -> pb.LoadedModel:
    reply = await stub.DescribeLoadedModel(pb.DescribeLoadedModelRequest(model_name=name, version="1"),
                                           metadata=auth, timeout=10)
    return reply.loaded_model


async def ready_worker(stub, name: str, auth) -> int:
    """The pid of the model's one worker, once it is ready."""
    try:
        model = await describe(stub, name, auth)
    except grpc.aio.AioRpcError as error:
        raise AssertionError(f"not loaded: {error.code().name}") from None
    ready = [w for w in model.workers if w.status == pb.WORKER_STATUS_READY]
    assert model.status == pb.LOADED_MODEL_STATUS_READY and len(ready) == 1 and ready[0].pid > 0, model
    return ready[0].pid


@pytest.fixture(scope="module")
async def slow_model(private_mesh, handler_archives, channel, auth) -> str:
    """The slow handler, version 1 in Staging, deployed (batch size 1, one worker) and ready."""
    mesh = private_mesh
    name, _ = await mesh.register(handler_archives["slow"], prefix="slow")
    mesh.transition(name, "1", "STAGE_STAGING")
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    await eventually(lambda: ready_worker(stub, name, auth), SERVE_WITHIN_S, "the slow model's worker is ready")
    model = await describe(stub, name, auth)
    assert (model.batch_size, model.min_workers, model.max_workers) == (1, 1, 1)
    return name


async def test_killing_the_worker_under_load_fails_only_what_it_held(slow_model, channel, auth):
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    name = slow_model
    pid = await ready_worker(stub, name, auth)
    killed_at: list[float] = []

    async def one(i: int) -> tuple[str, str, float, float]:
        started = time.monotonic()
        try:
            reply = await stub.Predict(predict_request(name, sleep_ms=SLEEP_MS, i=i), metadata=auth,
                                       timeout=DEADLINE_S)
            assert reply.prediction.struct_value.fields["i"].number_value == i
            return "OK", "", time.monotonic() - started, time.monotonic()
        except grpc.aio.AioRpcError as error:
            reason = error_info(error).reason if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED else ""
            return error.code().name, reason, time.monotonic() - started, time.monotonic()

    tasks = [asyncio.create_task(one(i)) for i in range(IN_FLIGHT)]
    pending = set(tasks)
    while len(tasks) - len(pending) < 3:  # the worker is busy working through the queue
        _, pending = await asyncio.wait(pending, timeout=DEADLINE_S, return_when=asyncio.FIRST_COMPLETED)
    os.kill(pid, signal.SIGKILL)  # the model's worker: a child of the private TorchServe
    killed_at.append(time.monotonic())
    in_flight_at_kill = len(pending)
    results = await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S + 5)

    codes = Counter(code for code, *_ in results)
    failures = [(code, reason) for code, reason, *_ in results if code != "OK"]
    print(f"in flight at the kill: {in_flight_at_kill}; outcomes: {dict(codes)}; failures: {failures}; "
          f"slowest: {max(r[2] for r in results):.2f} s")
    assert in_flight_at_kill >= IN_FLIGHT - 10  # the kill happened under load
    assert all(elapsed < DEADLINE_S for _, _, elapsed, _ in results)  # nothing hung
    assert set(codes) <= {"OK", "UNAVAILABLE"}, codes
    assert all(reason in ("WORKER_DIED", "BACKEND_UNAVAILABLE") for _, reason in failures), failures
    # Batch size 1: one request was inside the worker (and Predict retries it once on the new worker).
    assert len(failures) <= 1, failures
    assert sum(1 for _, _, _, done in results if done > killed_at[0]) >= in_flight_at_kill - 1

    new_pid = await eventually(lambda: ready_worker(stub, name, auth), SERVE_WITHIN_S, "a new worker is ready")
    assert new_pid != pid
    after = await asyncio.gather(*(stub.Predict(predict_request(name, sleep_ms=1, i=i), metadata=auth, timeout=10)
                                   for i in range(8)))
    assert [r.prediction.struct_value.fields["i"].number_value for r in after] == list(range(8))


async def test_torchserve_down_is_unavailable_and_only_inference_stops_serving(private_mesh, slow_model, channel,
                                                                               auth):
    mesh, name = private_mesh, slow_model
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    health = health_pb2_grpc.HealthStub(channel)

    async def health_of(service: str) -> int:
        return (await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)).status

    async def inference_health_is(status: int) -> None:
        assert await health_of(INFERENCE_SERVICE) == status

    await eventually(lambda: inference_health_is(SERVING), 10, "Inference health SERVING")
    mesh.stop_torchserve()

    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Predict(predict_request(name, sleep_ms=1), metadata=auth, timeout=10)
    elapsed = time.monotonic() - started
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(caught.value).reason == "BACKEND_UNAVAILABLE"
    assert elapsed < 2.0, f"UNAVAILABLE after {elapsed:.2f} s"
    reply = mesh.rest("POST", f"/api/v1/inference/models/{name}:predict", {"inputs": {"sleep_ms": 1}, "version": "1"})
    assert reply.status == 503 and json_body(reply)["details"][0]["reason"] == "BACKEND_UNAVAILABLE"

    await eventually(lambda: inference_health_is(NOT_SERVING), 10, "Inference health NOT_SERVING")
    assert await health_of("") == SERVING  # the server as a whole stays in rotation
    assert await health_of("mnbara.mlserving.registry.v1.RegistryService") == SERVING
    # Envoy health-checks the mesh on "": the other services still answer through it.
    for _ in range(3):  # more than one health-check interval of Envoy's
        got = mesh.rest("GET", f"/api/v1/registry/models/{name}")
        assert got.status == 200 and got.json()["registeredModel"]["name"] == name, json_body(got)
    live = mesh.rest("GET", "/v2/health/live")
    assert live.status == 200 and live.json()["live"] is True
    not_ready = mesh.rest("GET", "/v2/health/ready")
    assert not_ready.status == 503, (not_ready.status, json_body(not_ready))

    mesh.start_torchserve(same_model_store=False)  # back, empty: the deployer loads the model again
    await eventually(lambda: inference_health_is(SERVING), 10, "Inference health SERVING again")
    await eventually(lambda: ready_worker(stub, name, auth), SERVE_WITHIN_S, "the slow model is loaded again")
    again = await stub.Predict(predict_request(name, sleep_ms=1, i=1), metadata=auth, timeout=10)
    assert again.prediction.struct_value.fields["slept"].bool_value is True

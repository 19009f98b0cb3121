"""Random bytes as the request of every unary Inference RPC (our contract, the Open Inference
Protocol's gRPC service and its REST form), to the in-process mesh (real TorchServe, Registry,
MLflow, S3 and PostgreSQL behind it): the answer is a status Inference means (never INTERNAL
or UNKNOWN), with Inference's ErrorInfo, every INVALID_ARGUMENT naming its field, nothing
logged as an error, and Inference healthy afterwards.

Deterministic (derandomize, no example database) and bounded."""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from inference import grpc_predict_v2_pb2 as oip
from mnbara.mlserving.inference.v1 import inference_pb2 as pb
from mnbara.mlserving.inference.v1 import open_inference_rest_pb2 as rest

from ..support import error_info

SERVICES = [pb.DESCRIPTOR.services_by_name["InferenceService"],
            oip.DESCRIPTOR.services_by_name["GRPCInferenceService"],
            rest.DESCRIPTOR.services_by_name["OpenInferenceRestService"]]
UNARY = [(s, m) for s in SERVICES for m in s.methods if not m.client_streaming and not m.server_streaming]
MEANT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
         grpc.StatusCode.FAILED_PRECONDITION}
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("service, method", UNARY, ids=lambda v: v.name)
@settings(max_examples=25, **SETTINGS)
@given(body=st.binary(max_size=96))
async def test_random_bytes_get_a_meant_answer(channel, caplog, service, method, body):
    call = channel.unary_unary(f"/{service.full_name}/{method.name}")
    try:
        await call(body, timeout=20)
    except grpc.aio.AioRpcError as error:
        assert error.code() in MEANT, (error.code(), error.details())
        info = error_info(error)
        assert info.domain == "inference.mlserving.mnbara"
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            assert (error.details() or "").startswith(f"{info.metadata['field']}: "), error.details()
        assert len(error.details() or "") < 600
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not noisy, noisy[0].getMessage()


async def test_inference_is_healthy_after_fuzzing(channel):
    service = SERVICES[0].full_name
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service))
    assert health.status == health_pb2.HealthCheckResponse.SERVING

"""Random bytes as the request of every unary Registry RPC, to the in-process mesh (real MLflow,
S3 and PostgreSQL behind it): the answer is a status the registry means (never INTERNAL or
UNKNOWN), with the registry's ErrorInfo, every INVALID_ARGUMENT naming its field, nothing
logged as an error, and the registry healthy afterwards.

Deterministic (derandomize, no example database) and bounded."""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mnbara.mlserving.registry.v1 import registry_pb2 as pb

from ..support import error_info

SERVICE = pb.DESCRIPTOR.services_by_name["RegistryService"]
UNARY = [m for m in SERVICE.methods if not m.client_streaming and not m.server_streaming]
MEANT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
         grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED, grpc.StatusCode.OUT_OF_RANGE}
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("method", UNARY, ids=lambda m: m.name)
@settings(max_examples=25, **SETTINGS)
@given(body=st.binary(max_size=96))
async def test_random_bytes_get_a_meant_answer(channel, caplog, method, body):
    call = channel.unary_unary(f"/{SERVICE.full_name}/{method.name}")
    try:
        await call(body, timeout=20)
    except grpc.aio.AioRpcError as error:
        assert error.code() in MEANT, (error.code(), error.details())
        info = error_info(error)
        assert info.domain == "registry.mlserving.mnbara"
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            assert (error.details() or "").startswith(f"{info.metadata['field']}: ")
        assert len(error.details() or "") < 600
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not noisy, noisy[0].getMessage()


async def test_the_registry_is_healthy_after_fuzzing(channel):
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE.full_name))
    assert health.status == health_pb2.HealthCheckResponse.SERVING

"""Random bytes as the request of every Router RPC, to the in-process mesh (real PostgreSQL,
Redis, Registry and TorchServe behind it): the answer is success or a status the Router means
(never INTERNAL or UNKNOWN), with the Router's ErrorInfo, every INVALID_ARGUMENT naming its
field, nothing logged as an error, and the Router healthy afterwards.

Deterministic (derandomize, no example database) and bounded."""

from __future__ import annotations

import logging

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mnbara.mlserving.router.v1 import router_pb2 as pb

from ..support import error_info

SERVICE = pb.DESCRIPTOR.services_by_name["RouterService"]
MEANT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
         grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ABORTED}
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("method", list(SERVICE.methods), ids=lambda m: m.name)
@settings(max_examples=25, **SETTINGS)
@given(body=st.binary(max_size=96))
async def test_random_bytes_get_a_meant_answer(channel, caplog, method, body):
    call = channel.unary_unary(f"/{SERVICE.full_name}/{method.name}")
    try:
        await call(body, timeout=20)
    except grpc.aio.AioRpcError as error:
        assert error.code() in MEANT, (error.code(), error.details())
        info = error_info(error)
        assert info.domain == "router.mlserving.mnbara"
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            assert (error.details() or "").startswith(f"{info.metadata['field']}: "), error.details()
        assert len(error.details() or "") < 600
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not noisy, noisy[0].getMessage()


async def test_the_router_is_healthy_after_fuzzing(channel):
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE.full_name))
    assert health.status == health_pb2.HealthCheckResponse.SERVING

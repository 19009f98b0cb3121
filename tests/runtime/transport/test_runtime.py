"""The runtime every service shares: health, reflection, other services' UNIMPLEMENTED,
unknown errors, dependency failures, tracing and metrics."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from mnbara.mlserving.bandit.v1 import bandit_pb2 as pb
from mnbara.mlserving.bandit.v1 import bandit_pb2_grpc
from mnbara.mlserving.catalog import BY_NAME, SERVICES
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from ml_serving_server.app import build_server
from ml_serving_server.runtime.health import LIVENESS
from ml_serving_server.runtime.server import ServiceBinding, start_server
from ml_serving_server.runtime.settings import MeshSettings
from ml_serving_server.services.bandit.domain.service import BanditService
from ml_serving_server.services.bandit.redis_store import RedisBanditStore
from ml_serving_server.services.bandit.servicer import BanditServicer

from ...support import error_info, test_runtime


async def test_health(channel):
    health = health_pb2_grpc.HealthStub(channel)
    overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert overall.status == health_pb2.HealthCheckResponse.SERVING
    bandit = await health.Check(health_pb2.HealthCheckRequest(service="mnbara.mlserving.bandit.v1.BanditService"))
    assert bandit.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_all_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    async for response in call:
        listed = {s.name for s in response.list_services_response.service}
        break
    assert {entry.full_name for entry in SERVICES} <= listed
    assert "grpc.health.v1.Health" in listed


async def test_a_service_without_a_package_answers_unimplemented(key_prefix):
    """Every service is built; one named in MESH_SERVICES but left out of the packages (as a new
    contract is, until its code lands) is served by its generated base: UNIMPLEMENTED."""
    from mnbara.mlserving.pipeline.v1 import pipeline_pb2, pipeline_pb2_grpc

    from ml_serving_server.app import SERVICE_PACKAGES

    packages = [package for package in SERVICE_PACKAGES if package.entry.name != "pipeline"]
    mesh = await build_server(test_runtime(key_prefix=key_prefix, services=("bandit", "pipeline")), packages)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await pipeline_pb2_grpc.PipelineServiceStub(channel).TriggerRetraining(
                    pipeline_pb2.TriggerRetrainingRequest(model_name="m"))
    finally:
        await mesh.stop(1.0)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error_info(caught.value).domain == "pipeline.mlserving.mnbara"


class _BrokenStore:
    """Raises an exception no layer expects, to see it become a generic INTERNAL."""

    async def load_counts(self, name):
        raise RuntimeError("secret internal detail")


async def _server_with(servicer, **settings):
    binding = ServiceBinding(BY_NAME["bandit"], servicer, built=True)
    defaults = dict(grpc_addr="127.0.0.1:0", metrics_addr="", access_log=True)
    return await start_server(MeshSettings(**{**defaults, **settings}), [binding], tracer_provider=None,
                              verifier=None)


async def test_unknown_exception_is_internal_without_details(caplog):
    mesh = await _server_with(BanditServicer(BanditService(_BrokenStore())))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as chan:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await bandit_pb2_grpc.BanditServiceStub(chan).Select(pb.SelectRequest(bandit="x"),
                                                                    metadata=[("x-request-id", "req-42")])
    finally:
        await mesh.stop(0)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in caught.value.details() and "req-42" in caught.value.details()
    assert error_info(caught.value).reason == "INTERNAL"
    assert "secret internal detail" in caplog.text  # the traceback is logged, not sent


async def test_redis_down_is_unavailable(key_prefix):
    mesh = await build_server(test_runtime("redis://127.0.0.1:1/0", key_prefix, 0.5, services=("bandit",)))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as chan:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await bandit_pb2_grpc.BanditServiceStub(chan).Select(pb.SelectRequest(bandit="x"))
    finally:
        await mesh.stop(0)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_info(caught.value).reason == "STATE_STORE_UNAVAILABLE"


async def test_incoming_traceparent_continues_the_trace(redis_url, key_prefix):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    store = RedisBanditStore.from_url(redis_url, key_prefix, 2.0)
    binding = ServiceBinding(BY_NAME["bandit"], BanditServicer(BanditService(store)), built=True)
    mesh = await start_server(MeshSettings(grpc_addr="127.0.0.1:0", metrics_addr="", access_log=False), [binding],
                              tracer_provider=provider, verifier=None)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as chan:
            with pytest.raises(grpc.aio.AioRpcError):
                await bandit_pb2_grpc.BanditServiceStub(chan).GetStats(
                    pb.GetStatsRequest(bandit="no-such"),
                    metadata=[("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01")])
    finally:
        await mesh.stop(0)
        await store.close()
    spans = exporter.get_finished_spans()
    assert spans and format(spans[0].context.trace_id, "032x") == trace_id
    assert spans[0].parent.span_id == 0x00F067AA0BA902B7


async def test_metrics_count_rpcs_by_code(channel):
    def count(code: str) -> float:
        return REGISTRY.get_sample_value("grpc_server_handled_total", {
            "grpc_service": "mnbara.mlserving.bandit.v1.BanditService", "grpc_method": "GetStats",
            "grpc_code": code}) or 0.0

    before = count("NOT_FOUND")
    with pytest.raises(grpc.aio.AioRpcError):
        await bandit_pb2_grpc.BanditServiceStub(channel).GetStats(pb.GetStatsRequest(bandit="missing-one"))
    assert count("NOT_FOUND") == before + 1


class _SlowStore:
    """A store that takes its time, to have a call in flight while the server stops."""

    async def load_counts(self, name):
        import asyncio

        await asyncio.sleep(0.5)
        return None


async def test_shutdown_drains_in_flight_calls():
    import asyncio

    mesh = await _server_with(BanditServicer(BanditService(_SlowStore())), access_log=False)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as chan:
        stub = bandit_pb2_grpc.BanditServiceStub(chan)
        in_flight = asyncio.ensure_future(stub.GetStats(pb.GetStatsRequest(bandit="slow")))
        await asyncio.sleep(0.1)
        await mesh.stop(grace=5.0)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await in_flight
    # The call ran to its own answer (the store said the bandit does not exist) instead of
    # being cut off with CANCELLED or UNAVAILABLE.
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_slow_redis_is_deadline_exceeded(key_prefix):
    """A Redis that accepts connections but never answers (a black-holed socket)."""
    import asyncio

    async def never_answer(reader, writer):
        await reader.read(1 << 16)
        await asyncio.sleep(10)
        writer.close()

    black_hole = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = black_hole.sockets[0].getsockname()[1]
    mesh = await build_server(test_runtime(f"redis://127.0.0.1:{port}/0", key_prefix, 0.3, services=("bandit",)))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as chan:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await bandit_pb2_grpc.BanditServiceStub(chan).Select(pb.SelectRequest(bandit="x"), timeout=5)
    finally:
        await mesh.stop(0)
        black_hole.close()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert error_info(caught.value).reason == "STATE_STORE_TIMEOUT"


async def test_health_follows_the_state_store(key_prefix):
    """With Redis unreachable the Bandit service, and so the server as a whole, report NOT_SERVING
    (the server itself stays up and answers health checks)."""
    mesh = await build_server(test_runtime("redis://127.0.0.1:1/0", key_prefix, 0.2, services=("bandit",),
                                           health_probe_seconds=0.1))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as chan:
            health = health_pb2_grpc.HealthStub(chan)
            bandit = health_pb2.HealthCheckRequest(service="mnbara.mlserving.bandit.v1.BanditService")
            for _ in range(50):
                if (await health.Check(bandit)).status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                await asyncio.sleep(0.05)
            assert (await health.Check(bandit)).status == health_pb2.HealthCheckResponse.NOT_SERVING
            overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert overall.status == health_pb2.HealthCheckResponse.NOT_SERVING  # the whole follows its services
            # liveness does not: restarting the replica would not bring Redis back
            alive = await health.Check(health_pb2.HealthCheckRequest(service=LIVENESS))
            assert alive.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await mesh.stop(0)


async def test_health_of_the_whole_recovers_with_its_services():
    healthy = [False]

    async def probe():
        return healthy[0]

    binding = ServiceBinding(BY_NAME["bandit"], BanditServicer(BanditService(_SlowStore())), built=True, probe=probe)
    mesh = await start_server(MeshSettings(grpc_addr="127.0.0.1:0", metrics_addr="", access_log=False,
                                           health_probe_seconds=0.05), [binding], tracer_provider=None,
                              verifier=None)

    async def overall_becomes(status) -> bool:
        for _ in range(100):
            if (await health.Check(health_pb2.HealthCheckRequest(service=""))).status == status:
                return True
            await asyncio.sleep(0.02)
        return False

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as chan:
            health = health_pb2_grpc.HealthStub(chan)
            assert await overall_becomes(health_pb2.HealthCheckResponse.NOT_SERVING)
            healthy[0] = True
            assert await overall_becomes(health_pb2.HealthCheckResponse.SERVING)
    finally:
        await mesh.stop(0)

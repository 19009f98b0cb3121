"""Server interceptors: request context and logs, metrics, error mapping.

Each interceptor is an async context manager around the handler (`scope`), so the
same code serves unary and server-streaming RPCs. Order, outermost first, is set by
`server_interceptors`: tracing (OpenTelemetry's), request context, metrics, errors.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
import uuid
from typing import AsyncIterator, Callable

import grpc
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from . import status as status_mapping
from .observability import RPC_HANDLED, RPC_LATENCY, request_id_var

log = logging.getLogger("ml_serving_server.rpc")


class _ScopeInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary-unary and unary-stream handler in `self.scope`."""

    def scope(self, method: str, context: grpc.aio.ServicerContext) -> contextlib.AbstractAsyncContextManager:
        raise NotImplementedError

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # client-streaming RPCs: none in our contracts

    def _wrap_unary(self, behavior: Callable, method: str):
        async def unary(request, context):
            async with self.scope(method, context):
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    result = await result
                return result

        return unary

    def _wrap_stream(self, behavior: Callable, method: str):
        async def stream(request, context) -> AsyncIterator:
            async with self.scope(method, context):
                result = behavior(request, context)
                if inspect.isasyncgen(result):
                    async for item in result:
                        yield item
                elif inspect.isawaitable(result):
                    await result

        return stream


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return service, name


def _status_of(context: grpc.aio.ServicerContext, exc: BaseException | None) -> grpc.StatusCode:
    if exc is None:
        return context.code() or grpc.StatusCode.OK
    if isinstance(exc, grpc.aio.AbortError):
        return context.code() or grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.UNKNOWN


class RequestContextInterceptor(_ScopeInterceptor):
    """Gives every RPC a request id (the caller's x-request-id, else a new one) and logs it."""

    def __init__(self, access_log: bool):
        self.access_log = access_log

    @contextlib.asynccontextmanager
    async def scope(self, method, context):
        request_id = _metadata_value(context, "x-request-id")[:128] or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if self.access_log:
                code = _status_of(context, failure)
                log.info("rpc", extra={"fields": {
                    "method": method, "code": code.name,
                    "ms": round((time.perf_counter() - started) * 1000, 3),
                }})
            request_id_var.reset(token)


class MetricsInterceptor(_ScopeInterceptor):
    """Counts RPCs by status code and records their latency."""

    @contextlib.asynccontextmanager
    async def scope(self, method, context):
        service, name = _split(method)
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            failure = exc
            raise
        finally:
            RPC_LATENCY.labels(service, name).observe(time.perf_counter() - started)
            RPC_HANDLED.labels(service, name, _status_of(context, failure).name).inc()


class ErrorInterceptor(_ScopeInterceptor):
    """Turns domain errors into statuses with ErrorInfo; anything unknown into INTERNAL.

    `domains` maps each hosted service's full name to its ErrorInfo domain."""

    def __init__(self, domains: dict[str, str]):
        self.domains = domains

    @contextlib.asynccontextmanager
    async def scope(self, method, context):
        try:
            yield
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - this is the one place that maps them all
            domain = self.domains.get(_split(method)[0], status_mapping.MESH_DOMAIN)
            status = status_mapping.describe(exc, method, domain, request_id_var.get())
            if status.code is grpc.StatusCode.INTERNAL:
                log.exception("unhandled error in %s", method)
            await context.abort_with_status(status)


def _metadata_value(context: grpc.aio.ServicerContext, key: str) -> str:
    for item in context.invocation_metadata() or ():
        if item.key == key:
            return item.value if isinstance(item.value, str) else item.value.decode()
    return ""


def server_interceptors(tracer_provider, access_log: bool, domains: dict[str, str]) -> list[grpc.aio.ServerInterceptor]:
    return [
        aio_server_interceptor(tracer_provider=tracer_provider),
        RequestContextInterceptor(access_log),
        MetricsInterceptor(),
        ErrorInterceptor(domains),
    ]

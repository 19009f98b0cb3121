"""Server interceptors: request context and logs, metrics, error mapping, undecodable requests.

Each interceptor is an async context manager around the handler (`scope`), so the
same code serves unary and server-streaming RPCs. Order, outermost first, is set by
`server_interceptors`: tracing (OpenTelemetry's, when spans are recorded), request context
and metrics, errors, auth (runtime/auth.py, when on), request decoding.

Each interceptor wraps a method's handler once and reuses the wrapper: the chain is on
every call's path, and the empty-RPC floor is what the hot RPCs are measured against.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import logging
import time
import uuid
from typing import AsyncIterator, Callable

import grpc
from google.protobuf.message import DecodeError
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from .. import errors
from ..errors import CommonReason
from . import status as status_mapping
from .observability import RPC_HANDLED, RPC_LATENCY, request_id_var

log = logging.getLogger("ml_serving_server.rpc")


class _ScopeInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary-unary, unary-stream and stream-unary handler in `self.scope`."""

    def scope(self, method: str, context: grpc.aio.ServicerContext) -> contextlib.AbstractAsyncContextManager:
        raise NotImplementedError

    def admit(self, request) -> None:
        """Called in the scope before the handler; may refuse the request by raising."""

    def deserializer(self, deserializer: Callable | None) -> Callable | None:
        """The request deserializer to use instead of the handler's."""
        return deserializer

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        # Keyed by registered method names only (unknown ones have no handler): bounded.
        wrappers = self.__dict__.setdefault("_wrappers", {})
        cached = wrappers.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap_handler(handler, method)
        wrappers[method] = (handler, wrapped)
        return wrapped

    def _wrap_handler(self, handler, method: str):
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(handler.unary_unary, method),
                request_deserializer=self.deserializer(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(handler.unary_stream, method),
                request_deserializer=self.deserializer(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_client_stream(handler.stream_unary, method),
                request_deserializer=self.deserializer(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler  # bidirectional streams: RequestDecodingInterceptor's to refuse

    def _wrap_unary(self, behavior: Callable, method: str):
        async def unary(request, context):
            async with self.scope(method, context):
                self.admit(request)
                result = behavior(request, context)
                if inspect.isawaitable(result):
                    result = await result
                return result

        return unary

    def _wrap_client_stream(self, behavior: Callable, method: str):
        async def admitted(requests: AsyncIterator) -> AsyncIterator:
            async for request in requests:
                self.admit(request)
                yield request

        async def unary(requests, context):
            async with self.scope(method, context):
                result = behavior(admitted(requests), context)
                if inspect.isawaitable(result):
                    result = await result
                return result

        return unary

    def _wrap_stream(self, behavior: Callable, method: str):
        async def stream(request, context) -> AsyncIterator:
            async with self.scope(method, context):
                self.admit(request)
                async for item in _responses(behavior(request, context)):
                    yield item

        return stream


async def _responses(result) -> AsyncIterator:
    """What a streaming handler sends: it yields its responses, or writes them and returns."""
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
    elif inspect.isawaitable(result):
        await result


def _reset(var: contextvars.ContextVar, token: contextvars.Token) -> None:
    """Undo `var.set`. A response stream the client cancelled is closed by grpc from another
    context, where the token is not valid; that context ends with the call, so nothing is left
    to undo."""
    try:
        var.reset(token)
    except ValueError:
        pass


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
    """Gives every RPC a request id (the caller's x-request-id, else a new one), counts it by
    status code, records its latency and logs it.

    With `continue_traces`, an incoming W3C traceparent becomes the RPC's context, so that
    outgoing calls carry the caller's trace when no span of ours is recorded."""

    def __init__(self, access_log: bool, continue_traces: bool = False):
        self.access_log = access_log
        self.continue_traces = continue_traces

    @contextlib.asynccontextmanager
    async def scope(self, method, context):
        metadata = context.invocation_metadata() or ()
        request_id = _value_in(metadata, "x-request-id")[:128] or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        trace_token = self._continue_trace(metadata)
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            failure = exc
            raise
        finally:
            elapsed = time.perf_counter() - started
            code = _status_of(context, failure)
            service, name = _split(method)
            RPC_LATENCY.labels(service, name).observe(elapsed)
            RPC_HANDLED.labels(service, name, code.name).inc()
            if self.access_log:
                log.info("rpc", extra={"fields": {"method": method, "code": code.name, "ms": round(elapsed * 1000, 3)}})
            if trace_token is not None:
                otel_context.detach(trace_token)
            _reset(request_id_var, token)

    def _continue_trace(self, metadata) -> object | None:
        if not self.continue_traces:
            return None
        carrier = {item.key: item.value for item in metadata if item.key in ("traceparent", "tracestate")}
        if "traceparent" not in carrier:
            return None
        return otel_context.attach(propagate.extract(carrier))


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
                if isinstance(exc, errors.DomainError):  # meant (a model's handler failed): no traceback
                    log.warning("%s failed: %s", method, exc.message)
                else:
                    log.exception("unhandled error in %s", method)
            await context.abort_with_status(status)


class _UndecodableRequest:
    """Stands in for a request body that does not parse, so that the call is answered by
    the interceptors rather than by grpc (UNKNOWN, the parser's text, a logged traceback)."""

    def __init__(self, problem: str):
        self.problem = problem


def _tolerant(deserializer: Callable) -> Callable:
    def deserialize(raw: bytes):
        try:
            return deserializer(raw)
        except DecodeError as exc:
            return _UndecodableRequest(_decode_problem(deserializer, exc))

    return deserialize


def _decode_problem(deserializer: Callable, exc: DecodeError) -> str:
    message_type = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = message_type.full_name if message_type else "request message"
    # The parser's own words follow its "Error parsing message with type '...': " preamble.
    detail = str(exc).rpartition(": ")[2][:80] or "cannot be parsed"
    return f"is not a valid {name} (malformed protobuf, or a string field that is not UTF-8): {detail}"


class _UndecodableMetadataFilter(logging.Filter):
    """Drops grpc's log of a header value that is not UTF-8 (a traceback each time the value
    is decoded, several times per call); the call is served with the value read as Latin-1,
    so a malformed traceparent only starts a new trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "Invalid encoding on %s"


_UNDECODABLE_METADATA_FILTER = _UndecodableMetadataFilter()


class RequestDecodingInterceptor(_ScopeInterceptor):
    """Malformed input at the transport, the same for every service: a request body that
    does not parse is INVALID_ARGUMENT (INVALID_FIELD, field "request") before any handler
    runs, and header values that are not UTF-8 log nothing.

    It sits inside the error interceptor, which maps its refusal like any domain error."""

    def __init__(self):
        logging.getLogger("grpc._cython.cygrpc").addFilter(_UNDECODABLE_METADATA_FILTER)  # idempotent

    def scope(self, method, context):
        return contextlib.nullcontext()

    def deserializer(self, deserializer):
        return _tolerant(deserializer) if deserializer is not None else None

    def admit(self, request) -> None:
        if isinstance(request, _UndecodableRequest):
            raise errors.InvalidArgument("request", request.problem)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await super().intercept_service(continuation, handler_call_details)
        if handler is None or not (handler.request_streaming and handler.response_streaming):
            return handler
        # Bidirectional streams (reflection) pass the other interceptors untouched: refused here.
        return grpc.stream_stream_rpc_method_handler(
            _checking_each_request(handler.stream_stream),
            request_deserializer=self.deserializer(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


def _checking_each_request(behavior: Callable) -> Callable:
    async def checked(requests: AsyncIterator, context: grpc.aio.ServicerContext) -> AsyncIterator:
        async for request in requests:
            if isinstance(request, _UndecodableRequest):
                await context.abort_with_status(status_mapping.rich_status(
                    grpc.StatusCode.INVALID_ARGUMENT, f"request: {request.problem}", CommonReason.INVALID_FIELD.name,
                    status_mapping.MESH_DOMAIN, {"field": "request"}))
            yield request

    async def stream(requests, context) -> AsyncIterator:
        async for response in _responses(behavior(checked(requests, context), context)):
            yield response

    return stream


def _value_in(metadata, key: str) -> str:
    for item in metadata:
        if item.key == key:
            return item.value if isinstance(item.value, str) else item.value.decode()
    return ""


def _records_spans(tracer_provider) -> bool:
    return not isinstance(tracer_provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def server_interceptors(tracer_provider, access_log: bool, domains: dict[str, str],
                        auth: grpc.aio.ServerInterceptor | None = None) -> list[grpc.aio.ServerInterceptor]:
    """Outermost first. `auth` runs before the request is looked at: a caller without a valid
    token learns nothing about what it sent."""
    tracing = _records_spans(tracer_provider)
    return [
        # OpenTelemetry's interceptor only where spans are recorded: without it the request
        # context continues an incoming trace at a fraction of the cost.
        *([aio_server_interceptor(tracer_provider=tracer_provider)] if tracing else []),
        RequestContextInterceptor(access_log, continue_traces=not tracing),
        ErrorInterceptor(domains),
        *([auth] if auth is not None else []),
        RequestDecodingInterceptor(),
    ]

"""Without a span exporter no spans are recorded, yet an incoming traceparent is the RPC's
trace context: outgoing calls made while serving it carry the caller's trace."""

from __future__ import annotations

import grpc
from opentelemetry import trace

from ml_serving_server.runtime.interceptors import server_interceptors

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


def _current_trace(request: bytes, context) -> bytes:
    span_context = trace.get_current_span().get_span_context()
    return f"{span_context.trace_id:032x}/{span_context.span_id:016x}".encode()


async def _serve():
    server = grpc.aio.server(interceptors=server_interceptors(trace.NoOpTracerProvider(), False, {}))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Trace", {"Current": grpc.unary_unary_rpc_method_handler(_current_trace)})])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def test_incoming_traceparent_is_the_context_without_an_exporter():
    server, port = await _serve()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            current = channel.unary_unary("/test.Trace/Current")
            traced = await current(b"", metadata=[("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN}-01")])
            untraced = await current(b"")
    finally:
        await server.stop(0)
    assert traced.decode() == f"{TRACE_ID}/{PARENT_SPAN}"
    assert untraced.decode() == f"{0:032x}/{0:016x}"  # no trace invented, none leaked from the call before

"""The request scope of streaming RPCs: grpc closes the response stream of a call the client
cancelled from another context than the one that opened it; closing it there must not fail."""

from __future__ import annotations

import asyncio
import contextvars
from typing import NamedTuple

import grpc

from ml_serving_server.runtime.interceptors import RequestContextInterceptor
from ml_serving_server.runtime.observability import request_id_var


class _Item(NamedTuple):
    """One metadatum as the aio server hands it over."""

    key: str
    value: str


class _Context:
    def invocation_metadata(self):
        return (_Item("x-request-id", "req-1"),)

    def code(self):
        return grpc.StatusCode.CANCELLED


async def test_a_stream_closed_from_another_context_ends_quietly():
    async def responses(request, context):
        yield request
        yield request

    handler = grpc.unary_stream_rpc_method_handler(responses)
    wrapped = RequestContextInterceptor(access_log=False)._wrap_stream(handler.unary_stream, "/pkg.Svc/Stream")

    stream = wrapped("hello", _Context())
    assert await stream.__anext__() == "hello"
    assert request_id_var.get() == "req-1"  # set by the scope, in this context

    # The client goes away: the stream is closed in a copy of the context, as a finaliser would.
    closing = asyncio.get_running_loop().create_task(stream.aclose(), context=contextvars.copy_context())
    await closing  # raised ValueError ("created in a different Context") before
    assert closing.exception() is None

"""What every client shares: the channel, deadlines, typed errors and trace propagation.

Each service client subclasses `AsyncClient`. Its common RPCs are hand-written methods
with explicit keyword parameters; the others are declared in one line with `unary` or
`server_stream`, which take the request message or the request's fields as keywords
(protobuf's constructors accept plain dicts for message and Struct fields, datetimes for
Timestamps and timedeltas for Durations).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, Self, TypeVar, overload

import grpc
from google.protobuf import struct_pb2
from google.protobuf.message import Message

from . import config
from .errors import from_rpc_error

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)
Metadata = Sequence[tuple[str, str]]


def aio_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """OpenTelemetry client interceptors: the active span's W3C traceparent goes out with each call."""
    try:
        from opentelemetry.instrumentation.grpc import aio_client_interceptors
    except ImportError:  # tracing is optional
        return []
    return list(aio_client_interceptors())


def open_channel(address: str | None = None, *, credentials: grpc.ChannelCredentials | None = None,
                 options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
    """A grpc.aio channel to the mesh (ML_SERVING_ADDR by default) with trace propagation."""
    address = address or config.default_address()
    if credentials is not None:
        return grpc.aio.secure_channel(address, credentials, options=options, interceptors=aio_interceptors())
    return grpc.aio.insecure_channel(address, options=options, interceptors=aio_interceptors())


def struct(value: Mapping[str, Any] | struct_pb2.Struct | None) -> struct_pb2.Struct | None:
    """A google.protobuf.Struct from a plain dict (a Struct passes through, None stays None)."""
    if value is None or isinstance(value, struct_pb2.Struct):
        return value
    result = struct_pb2.Struct()
    result.update(value)
    return result


def model_input(inputs: Mapping[str, Any] | struct_pb2.Struct | bytes | None) -> dict[str, Any]:
    """The request's `input` oneof as keywords: bytes go to raw_input, a dict to the inputs Struct."""
    if inputs is None:
        return {}
    if isinstance(inputs, (bytes, bytearray)):
        return {"raw_input": bytes(inputs)}
    return {"inputs": struct(inputs)}


def deadline(default: float | None, timeout: float | None) -> float | None:
    """A call's deadline in seconds: `timeout` when given (0 or less: none), else the client's default."""
    if timeout is None:
        return default
    return timeout if timeout > 0 else None


def messages(kind: type[Req], items: Sequence[Req | Mapping[str, Any]] | None) -> list[Req]:
    """Messages of one type from messages or dicts of their fields."""
    return [item if isinstance(item, kind) else kind(**item) for item in items or ()]  # type: ignore[arg-type]


class AsyncClient:
    """Base of the async clients: one grpc.aio channel, a default deadline, typed errors.

    Either give `address` (default: ML_SERVING_ADDR, else 127.0.0.1:8000, the Envoy front
    door; 127.0.0.1:50051 reaches the mesh directly) and the client opens and owns a channel
    on first use, or give an open `channel`, which the client uses and never closes.
    `timeout` is the default deadline of unary calls in seconds (default ML_SERVING_TIMEOUT,
    else 10; 0 means none); every method also takes `timeout=`. `metadata` is sent with
    every call (e.g. an authorization header).
    """

    stub_type: ClassVar[Callable[[grpc.aio.Channel], Any]]

    def __init__(self, address: str | None = None, *, channel: grpc.aio.Channel | None = None,
                 timeout: float | None = None, credentials: grpc.ChannelCredentials | None = None,
                 metadata: Metadata = (), options: Sequence[tuple[str, Any]] = ()) -> None:
        self.address = address or config.default_address()
        self.timeout = config.default_timeout() if timeout is None else deadline(None, timeout)
        self._channel = channel
        self._owns_channel = channel is None
        self._credentials = credentials
        self._options = tuple(options)
        self._metadata = tuple(metadata)
        self._stub: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def stub(self) -> Any:
        """The generated stub. An owned channel is opened on first use, and again if the event loop
        changed (a client built at import time, then used under one or more `asyncio.run` calls)."""
        if self._owns_channel:
            loop = asyncio.get_running_loop()
            if self._channel is None or self._loop is not loop:
                self._channel = open_channel(self.address, credentials=self._credentials, options=self._options)
                self._loop, self._stub = loop, None
        if self._stub is None:
            self._stub = self.stub_type(self._channel)
        return self._stub

    async def _call(self, rpc: str, request: Message, timeout: float | None = None) -> Any:
        """Call a unary RPC by name; RpcErrors become MLServingError subclasses."""
        try:
            return await getattr(self.stub, rpc)(request, timeout=deadline(self.timeout, timeout),
                                                 metadata=self._metadata or None)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def _stream(self, rpc: str, request: Message, timeout: float | None = None) -> AsyncIterator[Any]:
        """Iterate a server-streaming RPC. No deadline unless `timeout` is given: streams may be endless."""
        call = getattr(self.stub, rpc)(request, timeout=deadline(None, timeout),
                                       metadata=self._metadata or None)
        try:
            async for response in call:
                yield response
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            call.cancel()  # no-op when the stream already ended

    async def close(self) -> None:
        """Close the channel if this client opened it."""
        if self._owns_channel and self._channel is not None:
            await self._channel.close()
            self._channel, self._stub = None, None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()



def _rpc_name(request_type: type[Message]) -> str:
    """VerbNounRequest -> VerbNoun (the project's proto convention)."""
    return re.sub(r"Request$", "", request_type.DESCRIPTOR.name)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class _Declared(Generic[Req, Resp]):
    """A client method declared from its request and response types; the RPC name comes
    from the request type (ListDecisionsRequest -> ListDecisions)."""

    def __init__(self, request_type: type[Req], response_type: type[Resp]) -> None:
        self.request_type, self.response_type, self.rpc = request_type, response_type, _rpc_name(request_type)

    def _request(self, request: Req | None, fields: dict[str, Any]) -> Req:
        if request is None:
            return self.request_type(**fields)
        if fields:
            raise TypeError("pass either a request message or its fields as keywords, not both")
        return request

    def _named(self, call: Any, doc: str) -> Any:
        call.__name__, call.__qualname__, call.__doc__ = _snake(self.rpc), _snake(self.rpc), doc
        return call


class unary(_Declared[Req, Resp]):
    """A method for a unary RPC without hand-written keywords: `await client.list_decisions(
    bandit="b", page_size=10)`, or `await client.list_decisions(request)`; both take `timeout=`."""

    @overload
    def __get__(self, client: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, client: AsyncClient, owner: type | None = None) -> Callable[..., Awaitable[Resp]]: ...

    def __get__(self, client: AsyncClient | None, owner: type | None = None) -> Any:
        if client is None:
            return self

        async def call(request: Req | None = None, /, *, timeout: float | None = None, **fields: Any) -> Resp:
            return await client._call(self.rpc, self._request(request, fields), timeout)

        return self._named(call, f"Calls {self.rpc}: takes a {self.request_type.__name__} or its fields as "
                                 f"keywords, returns a {self.response_type.__name__}.")


class server_stream(_Declared[Req, Resp]):
    """Like `unary`, for a server-streaming RPC: the method returns an async iterator of responses."""

    @overload
    def __get__(self, client: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, client: AsyncClient, owner: type | None = None) -> Callable[..., AsyncIterator[Resp]]: ...

    def __get__(self, client: AsyncClient | None, owner: type | None = None) -> Any:
        if client is None:
            return self

        def call(request: Req | None = None, /, *, timeout: float | None = None, **fields: Any) -> AsyncIterator[Resp]:
            return client._stream(self.rpc, self._request(request, fields), timeout)

        return self._named(call, f"Streams {self.rpc}: takes a {self.request_type.__name__} or its fields as "
                                 f"keywords, yields {self.response_type.__name__} messages.")

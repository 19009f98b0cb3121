"""What every client shares: settings, the channel, deadlines, typed errors and trace propagation.

`ClientBase` holds what the async and the blocking clients have in common (address,
default deadline, metadata, channel ownership, the generated stub class); `AsyncClient`
adds a grpc.aio channel, `SyncClient` (in `_sync.py`) a blocking one. Each service
client names its RPCs as attributes of its generated stub (`self.stub.CreateBandit`),
never as strings.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Generic, Self, TypeVar

import grpc
from google.protobuf import struct_pb2
from google.protobuf.message import Message

from . import config
from .errors import from_rpc_error

StubT = TypeVar("StubT")
Req = TypeVar("Req", bound=Message)
Metadata = Sequence[tuple[str, str]]
ChannelOptions = Sequence[tuple[str, Any]]


def aio_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """OpenTelemetry client interceptors: the active span's W3C traceparent goes out with each call."""
    try:
        from opentelemetry.instrumentation.grpc import aio_client_interceptors
    except ImportError:  # tracing is optional
        return []
    return list(aio_client_interceptors())


def open_channel(address: str | None = None, *, credentials: grpc.ChannelCredentials | None = None,
                 options: ChannelOptions = ()) -> grpc.aio.Channel:
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


class ClientBase(Generic[StubT]):
    """Settings every client shares, async or blocking.

    Either give `address` (default: ML_SERVING_ADDR, else config.DEFAULT_ADDRESS, the Envoy
    front door; config.DIRECT_ADDRESS reaches the mesh directly) and the client opens and owns
    a channel on first use, or give an open `channel` (grpc.aio for the async clients, blocking
    for the others), which the client uses and never closes. `timeout` is the default deadline
    of unary calls in seconds (default ML_SERVING_TIMEOUT, else 10; 0 means none); every
    method also takes `timeout=`. `token` is the bearer token sent with every call: a string,
    or a callable returning one (called per call, so it can refresh); default ML_SERVING_TOKEN.
    `metadata` is sent with every call too; `options` are gRPC channel arguments.
    """

    stub_type: type[StubT]
    """The generated stub class of the client's service."""

    def __init__(self, address: str | None = None, *, channel: grpc.aio.Channel | grpc.Channel | None = None,
                 timeout: float | None = None, credentials: grpc.ChannelCredentials | None = None,
                 metadata: Metadata = (), options: ChannelOptions = (),
                 token: str | Callable[[], str] | None = None) -> None:
        self.address = address or config.default_address()
        self._token = config.default_token() if token is None else token
        self.timeout = config.default_timeout() if timeout is None else deadline(None, timeout)
        self._channel: Any = channel
        self._owns_channel = channel is None
        self._credentials = credentials
        self._options = tuple(options)
        self._metadata = tuple(metadata)
        self._stub: StubT | None = None

    def _call_metadata(self) -> Metadata | None:
        """The client's metadata, with the bearer token when there is one."""
        token = self._token() if callable(self._token) else self._token
        if token:
            return (*self._metadata, ("authorization", f"Bearer {token}"))
        return self._metadata or None

    def _call_options(self, timeout: float | None) -> dict[str, Any]:
        """The keywords of a unary call: its deadline and the client's metadata."""
        return {"timeout": deadline(self.timeout, timeout), "metadata": self._call_metadata()}


class AsyncClient(ClientBase[StubT]):
    """Base of the async clients: one grpc.aio channel, a default deadline, typed errors."""

    _loop: asyncio.AbstractEventLoop | None = None
    """The event loop the owned channel was opened on."""

    @property
    def stub(self) -> StubT:
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

    async def _call(self, rpc: Callable[..., Awaitable[Any]], request: Message, timeout: float | None = None) -> Any:
        """Call a unary RPC of the stub (`self.stub.GetBandit`); RpcErrors become MLServingError subclasses."""
        try:
            return await rpc(request, **self._call_options(timeout))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    async def _stream(self, rpc: Callable[..., Any], request: Message,
                      timeout: float | None = None) -> AsyncIterator[Any]:
        """Iterate a server-streaming RPC. No deadline unless `timeout` is given: streams may be endless."""
        call = rpc(request, timeout=deadline(None, timeout), metadata=self._call_metadata())
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

"""The base of the blocking clients, for code that is not async.

A blocking grpc.Channel rather than a private event loop around an async client: gRPC's
sync stack is thread-safe and needs no loop, so a blocking client works from any thread,
including one whose own event loop is running.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

import grpc
from google.protobuf.message import Message

from ._base import ChannelOptions, ClientBase, StubT
from .errors import from_rpc_error


def _with_tracing(channel: grpc.Channel) -> grpc.Channel:
    """The channel with OpenTelemetry's client interceptor (W3C traceparent on each call), if installed."""
    try:
        from opentelemetry.instrumentation.grpc import client_interceptor, grpcext
    except ImportError:  # tracing is optional
        return channel
    return grpcext.intercept_channel(channel, client_interceptor())


def open_blocking_channel(address: str, *, credentials: grpc.ChannelCredentials | None = None,
                          options: ChannelOptions = ()) -> grpc.Channel:
    """A blocking channel to the mesh with trace propagation."""
    if credentials is not None:
        return _with_tracing(grpc.secure_channel(address, credentials, options=options))
    return _with_tracing(grpc.insecure_channel(address, options=options))


class SyncClient(ClientBase[StubT]):
    """Base of the blocking clients: the async clients' address, timeout and metadata rules,
    over a blocking channel (opened on first use unless `channel` is given)."""

    @property
    def stub(self) -> StubT:
        """The generated stub, over a blocking channel."""
        if self._stub is None:
            if self._channel is None:
                self._channel = open_blocking_channel(self.address, credentials=self._credentials,
                                                      options=self._options)
            self._stub = self.stub_type(self._channel)
        return self._stub

    def _call(self, rpc: Callable[..., Any], request: Message, timeout: float | None = None) -> Any:
        """Call a unary RPC of the stub (`self.stub.AssignVariant`); RpcErrors become MLServingError subclasses."""
        try:
            return rpc(request, **self._call_options(timeout))
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def close(self) -> None:
        """Close the channel if this client opened it."""
        if self._owns_channel and self._channel is not None:
            self._channel.close()
            self._channel, self._stub = None, None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

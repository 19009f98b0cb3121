"""ml_serving's blocking clients (SyncClient, e.g. ABTestingRouter), without a server."""

from __future__ import annotations

import grpc
import pytest
from mnbara.mlserving.router.v1 import router_pb2

import ml_serving
from ml_serving import _sync


class BlockingChannel:
    """Stands in for a grpc.Channel: records (rpc, timeout, metadata) and answers or raises."""

    def __init__(self, error=None):
        self.calls, self.error, self.closed = [], error, False

    def unary_unary(self, path, *args, **kwargs):
        def call(request, timeout=None, metadata=None):
            self.calls.append((path.rsplit("/", 1)[1], timeout, metadata))
            if self.error is not None:
                raise self.error
            return router_pb2.AssignVariantResponse()
        return call

    unary_stream = stream_unary = stream_stream = unary_unary

    def close(self):
        self.closed = True


class NotFound(grpc.RpcError, grpc.Call):
    """What a blocking stub raises: an RpcError that is also a Call."""

    def code(self): return grpc.StatusCode.NOT_FOUND
    def details(self): return "no experiment e"
    def trailing_metadata(self): return ()
    def initial_metadata(self): return ()
    def is_active(self): return False
    def time_remaining(self): return None
    def cancel(self): return False
    def add_callback(self, callback): return False


def test_calls_carry_deadline_and_metadata():
    channel = BlockingChannel()
    router = ml_serving.ABTestingRouter(channel=channel, timeout=3, metadata=[("authorization", "Bearer t")])
    router.assign_variant("u")
    router.assign_variant("u", timeout=0)
    bearer = (("authorization", "Bearer t"),)
    assert channel.calls == [("AssignVariant", 3, bearer), ("AssignVariant", None, bearer)]


def test_rpc_error_becomes_typed_error():
    router = ml_serving.ABTestingRouter(channel=BlockingChannel(error=NotFound()))
    with pytest.raises(ml_serving.NotFoundError, match="no experiment e"):
        router.get_model_for_user("u")


def test_a_given_channel_is_not_closed():
    channel = BlockingChannel()
    with ml_serving.ABTestingRouter(channel=channel) as router:
        router.assign_variant("u")
    assert not channel.closed


def test_an_owned_channel_opens_on_first_call_and_closes(monkeypatch):
    opened = []

    def open_blocking_channel(address, *, credentials=None, options=()):
        opened.append((address, options))
        return BlockingChannel()

    monkeypatch.setattr(_sync, "open_blocking_channel", open_blocking_channel)
    router = ml_serving.ABTestingRouter(address="mesh:1", options=[("grpc.max_receive_message_length", 1)])
    assert opened == []
    router.assign_variant("u")
    router.assign_variant("u")
    channel = router._channel
    router.close()
    assert opened == [("mesh:1", (("grpc.max_receive_message_length", 1),))] and channel.closed

"""A draining registry replica ends its WatchEvents streams at once (UNAVAILABLE: resume on
another replica) instead of holding the shutdown for its whole grace period."""

from __future__ import annotations

import asyncio
import time

import grpc
from mnbara.mlserving.registry.v1 import registry_pb2 as pb
from mnbara.mlserving.registry.v1 import registry_pb2_grpc

from ..conftest import start_registry


async def test_watch_streams_end_when_the_server_drains(database_url, registry_settings, dev_keys, token):
    server = await start_registry(database_url, registry_settings, dev_keys)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stream = registry_pb2_grpc.RegistryServiceStub(channel).WatchEvents(
            pb.WatchEventsRequest(), metadata=[("authorization", f"Bearer {token}")])
        first = asyncio.ensure_future(stream.read())
        await asyncio.sleep(0.3)  # the stream is open and waiting for events
        started = time.monotonic()
        await server.stop(10.0)
        stopped_in = time.monotonic() - started
        try:
            await first
            ended = await stream.read()
            assert ended is grpc.aio.EOF
            code = await stream.code()
        except grpc.aio.AioRpcError as error:
            code = error.code()
    assert code == grpc.StatusCode.UNAVAILABLE
    assert stopped_in < 5.0, f"the drain waited {stopped_in:.1f} s for a stream that never ends"

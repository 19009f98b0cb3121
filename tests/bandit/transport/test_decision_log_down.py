"""PostgreSQL down: the Bandit service starts and serves; the log answers UNAVAILABLE and catches up."""

from __future__ import annotations

import asyncio
import uuid

import grpc
from mnbara.mlserving.bandit.v1 import bandit_pb2 as pb
from mnbara.mlserving.bandit.v1 import bandit_pb2_grpc

from ml_serving_server.app import build_server
from ml_serving_server.services.bandit.settings import BanditSettings
from ml_serving_tools.net import free_port

from ...support import test_runtime
from .test_rpc import expect_error


class Gate:
    """A TCP proxy to PostgreSQL that can be closed (connections refused) and opened again."""

    def __init__(self, target_port: int):
        self.target_port, self.server, self.port = target_port, None, None

    async def open(self) -> None:
        self.server = await asyncio.start_server(self._pipe, "127.0.0.1", self.port or 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _pipe(self, reader, writer) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def copy(source, sink):
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                sink.close()

        await asyncio.gather(copy(reader, upstream_writer), copy(upstream_reader, writer))


async def test_selections_go_on_without_postgres_and_are_logged_once_it_is_back(redis_url, key_prefix,
                                                                                 database_url):
    gate = Gate(5432)
    gate.port = free_port()  # nothing listens yet: PostgreSQL is down from the start
    url = database_url.replace("127.0.0.1:5432", f"127.0.0.1:{gate.port}")
    assert url != database_url
    runtime = test_runtime(redis_url, key_prefix, database_url=url, services=("bandit",))
    settings = BanditSettings(decision_log_flush_ms=100, decision_log_timeout_seconds=1)
    mesh = await build_server(runtime, service_settings={"bandit": settings})
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as channel:
            stub = bandit_pb2_grpc.BanditServiceStub(channel)
            name = f"down-{uuid.uuid4().hex[:8]}"
            await stub.CreateBandit(pb.CreateBanditRequest(bandit=pb.Bandit(name=name, arms=[pb.Arm(id="a")])))
            made = [(await stub.Select(pb.SelectRequest(bandit=name))).decision_id for _ in range(5)]
            await stub.Reward(pb.RewardRequest(decision_id=made[0], reward=1.0))
            await expect_error(stub.ListDecisions(pb.ListDecisionsRequest(bandit=name)),
                               grpc.StatusCode.UNAVAILABLE, "DECISION_LOG_UNAVAILABLE")
            await gate.open()  # PostgreSQL is back on the same address
            listed = await stub.ListDecisions(pb.ListDecisionsRequest(bandit=name), timeout=30)
            assert [d.decision_id for d in listed.decisions] == made[::-1]
            assert listed.decisions[-1].reward_sum == 1.0
    finally:
        await mesh.stop(1.0)
        if gate.server is not None:
            await gate.close()

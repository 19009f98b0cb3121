"""A real grpc.aio server on port 0 with the production interceptors, backed by real Redis."""

from __future__ import annotations

import grpc
import pytest

from ml_serving_server.app import build_server
from ml_serving_server.config import ALL_SERVICES, Settings


@pytest.fixture(scope="session")
async def mesh(redis_url, key_prefix):
    settings = Settings(grpc_addr="127.0.0.1:0", services=ALL_SERVICES, metrics_addr="", redis_url=redis_url,
                        key_prefix=key_prefix, access_log=False, shutdown_grace_s=1.0)
    server = await build_server(settings)
    yield server
    await server.stop(1.0)


@pytest.fixture(scope="session")
async def channel(mesh):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as chan:
        yield chan

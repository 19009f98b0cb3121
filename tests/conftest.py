"""Shared fixtures: where Redis is, a key prefix no other test run uses, and an
in-process mesh server (every service, production interceptors) on a free port."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import grpc
import pytest

from ml_serving_server.app import build_server

from .support import test_runtime

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_url() -> str:
    """REDIS_URL when set (the test command finds or starts one and sets it), else the local default."""
    return os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def key_prefix(redis_url):
    """A Redis key prefix for this test session; its keys are deleted afterwards."""
    prefix = f"mlserving-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture(scope="session")
async def mesh(redis_url, key_prefix):
    """A real grpc.aio server hosting every service, backed by real Redis."""
    server = await build_server(test_runtime(redis_url, key_prefix))
    yield server
    await server.stop(1.0)


@pytest.fixture(scope="session")
async def channel(mesh):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as chan:
        yield chan

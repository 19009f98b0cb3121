"""One place that turns the Redis settings into a client: one Redis, or a Redis Cluster.

The stores work on either. Every key of a bandit, an experiment or a feature entity carries a
hash tag, so each Lua script and each transaction touches one slot; what spans slots (a
listing's index, a page of definitions) is done with plain commands that a cluster client
routes node by node.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from .settings import RedisSettings

RedisClient = aioredis.Redis | aioredis.RedisCluster


def connect(settings: RedisSettings) -> RedisClient:
    timeout = settings.timeout_seconds
    if settings.cluster:
        # The cluster client keeps a pool per node and follows MOVED/ASK redirections itself.
        return _WaitingCluster.from_url(
            settings.url, max_connections=settings.max_connections, socket_timeout=timeout,
            socket_connect_timeout=timeout, health_check_interval=30,
        )
    # A blocking pool: under a burst, calls wait (up to the timeout) for a connection instead
    # of failing at once or opening connections without bound.
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.url, max_connections=settings.max_connections, timeout=timeout,
        socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30,
    )
    return aioredis.Redis(connection_pool=pool)


class _WaitingCluster(aioredis.RedisCluster):
    """A cluster client whose calls wait (up to the timeout) for a connection, as the blocking
    pool's do, rather than fail at once when a node's pool is in full use."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._wait_s = kwargs.get("socket_timeout") or 2.0
        self._in_use = asyncio.Semaphore(kwargs.get("max_connections") or 64)

    async def execute_command(self, *args, **kwargs):
        try:
            async with asyncio.timeout(self._wait_s):
                await self._in_use.acquire()
        except TimeoutError as exc:
            raise redis_errors.TimeoutError("no Redis Cluster connection free within the timeout") from exc
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._in_use.release()


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, aioredis.RedisCluster)

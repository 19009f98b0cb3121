"""One place that turns the Redis settings into a client: one Redis, or a Redis Cluster.

The stores work on either. Every key of a bandit, an experiment or a feature entity carries a
hash tag, so each Lua script and each transaction touches one slot; what spans slots (a
listing's index, a page of definitions) is done with plain commands that a cluster client
routes node by node.
"""

from __future__ import annotations

import asyncio
import contextvars

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import ClusterPipeline

from .settings import RedisSettings

RedisClient = aioredis.Redis | aioredis.RedisCluster
# Set while a pipeline runs: the commands it re-sends itself must not wait for a second permit.
_holding_permit: contextvars.ContextVar[bool] = contextvars.ContextVar("holding_redis_permit", default=False)


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
        if _holding_permit.get():  # a pipeline's own retry (after a redirection): it holds one
            return await super().execute_command(*args, **kwargs)
        await self.wait_for_connection()
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._in_use.release()

    def pipeline(self, transaction=None, shard_hint=None) -> "_WaitingPipeline":
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused there, as it should be
        return _WaitingPipeline(self, transaction)

    async def wait_for_connection(self) -> None:
        try:
            async with asyncio.timeout(self._wait_s):
                await self._in_use.acquire()
        except TimeoutError as exc:
            raise redis_errors.TimeoutError("no Redis Cluster connection free within the timeout") from exc


class _WaitingPipeline(ClusterPipeline):
    """A cluster pipeline (mget_nonatomic and mset_nonatomic use one too) that waits for a free
    connection like single commands do. It holds one of the client's permits while it runs,
    though it may use one connection per node: each node's pool has as many connections as
    the client has permits, so no node's pool can run out."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True):
        client = self.cluster_client
        await client.wait_for_connection()
        holding = _holding_permit.set(True)
        try:
            return await super().execute(raise_on_error, allow_redirections)
        finally:
            _holding_permit.reset(holding)
            client._in_use.release()


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, aioredis.RedisCluster)

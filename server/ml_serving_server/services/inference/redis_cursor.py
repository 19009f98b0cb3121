"""The deployer's CursorStore in Redis: the last Registry event sequence it applied, one key per
TorchServe it manages (two mesh replicas sharing a TorchServe share the cursor too). One key:
any slot does, so it runs on one Redis or a Redis Cluster (REDIS_CLUSTER) alike."""

from __future__ import annotations

from ...runtime.redis_client import RedisClient, connect, is_cluster
from ...runtime.settings import RedisSettings


class RedisCursor:
    def __init__(self, client: RedisClient, key: str):
        self._redis = client
        self._key = key

    @classmethod
    def from_settings(cls, settings: RedisSettings, key: str) -> "RedisCursor":
        return cls(connect(settings), key)

    async def load(self) -> int | None:
        value = await self._redis.get(self._key)
        return int(value) if value is not None else None

    async def save(self, sequence: int) -> None:
        await self._redis.set(self._key, sequence)

    async def close(self) -> None:
        if is_cluster(self._redis):
            await self._redis.aclose()
        else:  # the pool was handed in, so the client would not close it by default
            await self._redis.aclose(close_connection_pool=True)

"""The deployer's CursorStore in Redis: the last Registry event sequence it applied, one key per
TorchServe it manages (two mesh replicas sharing a TorchServe share the cursor too)."""

from __future__ import annotations

import redis.asyncio as redis


class RedisCursor:
    def __init__(self, url: str, key: str, timeout_s: float):
        self._redis = redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self._key = key

    async def load(self) -> int | None:
        value = await self._redis.get(self._key)
        return int(value) if value is not None else None

    async def save(self, sequence: int) -> None:
        await self._redis.set(self._key, sequence)

    async def close(self) -> None:
        await self._redis.aclose()

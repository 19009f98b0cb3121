"""The online store over Redis: one hash per (view, entity).

Keys: P:fv:{VIEW}:ID, P the configured prefix + ":pipeline", ID the entity's key as text (the
view's name in a hash tag keeps a view's keys together, in one cluster slot).
Fields: `v` every feature's value, as one JSON array in the view's declared order (null for
null); `t` the event time and `c` the time it was written, both in microseconds since the epoch
(`t` null when the row had none); `h` the view's definition hash (its first 16 hex digits): a
hash written under another definition reads as missing, so the order of `v` is always the one
it was written with.

A batch of writes is one pipeline (one round trip; HSET of every field, so rewriting an entity
is idempotent). A read of any number of entities is one Lua script, one round trip: HMGET of
each, answered as ONE JSON text built from the stored JSON (`[[h, c, t, [values]], null, ...]`),
so the client parses one reply with the C JSON parser instead of keys x fields RESP elements in
Python (redis-py's parser: most of a 100-entity read's time before). Nothing expires:
freshness is the view's TTL against `c`, checked by the domain. No redis exception leaves this
module: every failure is OnlineStoreUnavailable.
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
from datetime import datetime, timezone
from typing import Sequence

import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from .domain.feature_views import FeatureView
from .domain.ports import EntityRow, OnlineStoreUnavailable, StoredEntity
from .domain.values import EntityKey, key_text

HASH_CHARS = 16
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


_MICROSECOND = datetime.resolution


def _micros(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def _time(value: int | None) -> datetime | None:
    if value is None:
        return None
    return _EPOCH + value * _MICROSECOND


def _encode(value: object) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return json.dumps(value)  # NaN / Infinity: Python's JSON reads them back
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# KEYS: the entities' hashes. Returns one JSON text: per key [h, c, t, v], or null when missing.
_READ = """
local parts = {}
for i, key in ipairs(KEYS) do
  local r = redis.call('HMGET', key, 'h', 'c', 't', 'v')
  if r[1] and r[2] and r[4] then
    parts[i] = '["' .. r[1] .. '",' .. r[2] .. ',' .. (r[3] or 'null') .. ',' .. r[4] .. ']'
  else
    parts[i] = 'null'
  end
end
return '[' .. table.concat(parts, ',') .. ']'
"""


def _translate_errors(method):
    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except (redis_errors.RedisError, OSError, asyncio.TimeoutError) as exc:
            raise OnlineStoreUnavailable() from exc

    return wrapper


class RedisOnlineStore:
    def __init__(self, client: aioredis.Redis, prefix: str = "mlserving"):
        self._redis = client
        self._prefix = f"{prefix}:pipeline"
        self._read = client.register_script(_READ)
        self._closed = False

    @classmethod
    def from_url(cls, url: str, prefix: str, timeout_s: float, max_connections: int = 64) -> "RedisOnlineStore":
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout_s,
            socket_timeout=timeout_s, socket_connect_timeout=timeout_s, health_check_interval=30)
        return cls(aioredis.Redis(connection_pool=pool), prefix)

    def key(self, view: FeatureView, key: EntityKey) -> str:
        return f"{self._prefix}:fv:{{{view.name}}}:{key_text(key)}"

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._redis.aclose(close_connection_pool=True)

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:  # noqa: BLE001
            return False

    @_translate_errors
    async def write(self, view: FeatureView, rows: Sequence[EntityRow], computed_at: datetime) -> None:
        if not rows:
            return
        names = [feature.name for feature in view.features]
        definition, computed = view.definition_hash[:HASH_CHARS], str(_micros(computed_at))
        pipe = self._redis.pipeline(transaction=False)
        for row in rows:
            values = row.values
            pipe.hset(self.key(view, row.key), mapping={
                "h": definition, "c": computed, "t": "null" if row.event_time is None else str(_micros(row.event_time)),
                "v": _encode([values.get(name) for name in names])})
        await pipe.execute()

    @_translate_errors
    async def read(self, view: FeatureView, keys: Sequence[EntityKey], features: Sequence[str]
                   ) -> dict[EntityKey, StoredEntity]:
        if not keys:
            return {}
        replies = json.loads(await self._read(keys=[self.key(view, key) for key in keys]))
        positions = self._positions(view, tuple(features))
        own = view.definition_hash[:HASH_CHARS]
        found: dict[EntityKey, StoredEntity] = {}
        for key, reply in zip(keys, replies):
            if reply is None:
                continue  # no such hash
            definition, computed, event, values = reply
            if definition != own or not isinstance(values, list) or len(values) != len(view.features):
                # Written under another definition: the domain reads it as missing.
                found[key] = StoredEntity({}, _time(event), _time(computed), definition)
                continue
            found[key] = StoredEntity({name: values[index] for name, index in positions}, _time(event),
                                      _time(computed), view.definition_hash)
        return found

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def _positions(view: FeatureView, features: tuple[str, ...] | list[str]) -> tuple[tuple[str, int], ...]:
        index = {feature.name: i for i, feature in enumerate(view.features)}
        return tuple((name, index[name]) for name in features)

    # ----- for tests and tools -----

    @_translate_errors
    async def dump(self, view: FeatureView) -> dict[str, dict[str, str]]:
        """Every hash of the view (by entity id), whole: to compare two online stores."""
        prefix = f"{self._prefix}:fv:{{{view.name}}}:"
        found = {}
        async for key in self._redis.scan_iter(match=prefix.replace("{", "\\{").replace("}", "\\}") + "*",
                                               count=1000):
            found[key.decode()[len(prefix):]] = {k.decode(): v.decode()
                                                 for k, v in (await self._redis.hgetall(key)).items()}
        return found

    @_translate_errors
    async def clear(self, view: FeatureView) -> int:
        """Delete every hash of the view; how many there were."""
        prefix = f"{self._prefix}:fv:{{{view.name}}}:"
        keys = [key async for key in self._redis.scan_iter(
            match=prefix.replace("{", "\\{").replace("}", "\\}") + "*", count=1000)]
        for start in range(0, len(keys), 1000):
            await self._redis.delete(*keys[start:start + 1000])
        return len(keys)

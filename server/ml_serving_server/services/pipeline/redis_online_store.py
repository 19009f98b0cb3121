"""The online store over Redis: one string key per (view, entity), on one Redis or a Redis Cluster.

Keys: P:fv:VIEW:{ID}, P the configured prefix + ":pipeline", ID the entity's key as text. The
entity's key is the hash tag: a big view spreads over the whole cluster, and all views of one
entity share a slot, so on a cluster too a read of one entity over several views is one MGET.
Value: one JSON array `[h, c, t, [values]]`: `h` the view's definition hash (its first 16 hex
digits; a record written under another definition reads as missing, so the order of the values
is always the one it was written with), `c` the time it was written and `t` the event time, both
in microseconds since the epoch (`t` null when the row had none), then every feature's value in
the view's declared order (null for null).

On one Redis a batch of writes is one MSET (one command, one round trip; rewriting an entity
replaces its record whole) and a read of any number of entities, of any number of views, is one
MGET. On a cluster the keys are grouped by slot: one MSET or MGET per slot, pipelined, each node's
share sent in parallel (a batch is then atomic per entity, not as a whole: each record is still
written whole). The records read are joined into one JSON text and parsed once with orjson (a
record per key rather than a hash with fields: no Lua, and no keys x fields reply elements to
parse in Python). Nothing expires: freshness is the view's TTL against `c`, checked by the domain.
No redis exception leaves this module: every failure is OnlineStoreUnavailable.

Upgrading from the earlier layout (P:fv:{VIEW}:ID, a hash tag per view; that release ran on one
Redis only): `adopt_earlier_layout`, which the server runs in the background at start, renames
each earlier record to its new key (unless a newer record is already there), then marks the
deployment's keys as moved (P:layout = 2) so later starts skip the scan. Until a record is
moved it reads as missing (a compute_on_miss view computes it from the source). A record that a
replica of the earlier release writes after the move is not seen: the next FULL
materialisation of its view rewrites it.
"""

from __future__ import annotations

import asyncio
import functools
import json
from datetime import datetime, timedelta, timezone
from typing import Sequence

import orjson
from redis import exceptions as redis_errors

from ...runtime.redis_client import RedisClient, connect, is_cluster
from ...runtime.settings import RedisSettings
from .domain.feature_views import FeatureView
from .domain.ports import EncodedRow, EntityRow, OnlineStoreUnavailable, StoredEntity
from .domain.values import EntityKey, key_from_text, key_text

HASH_CHARS = 16
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


_MICROSECOND = datetime.resolution


def _micros(value: datetime) -> int:
    return (value - _EPOCH) // _MICROSECOND


def _time(value: int | None) -> datetime | None:
    if value is None:
        return None
    return _EPOCH + timedelta(microseconds=value)


_WRITE_TIMES: dict[int, datetime] = {}  # a batch's records share their write time: made once


def _write_time(value: int) -> datetime:
    found = _WRITE_TIMES.get(value)
    if found is None:
        if len(_WRITE_TIMES) > 4096:
            _WRITE_TIMES.clear()
        found = _WRITE_TIMES[value] = _EPOCH + timedelta(microseconds=value)
    return found


# One encoder, made once: json.dumps with options builds a new one per call. NaN and Infinity
# are written as Python's JSON writes them, and read back.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
_encode = _ENCODER.encode


def _parsed(record: bytes | None) -> object:
    """One record alone, None when it is no JSON. orjson first; the standard library's parser
    reads what orjson refuses (NaN and Infinity, as written, or integers past 64 bits)."""
    if record is None:
        return None
    try:
        return orjson.loads(record)
    except ValueError:
        pass
    try:
        return json.loads(record)
    except ValueError:
        return None


def _pattern(prefix: str) -> str:
    """A SCAN pattern for every key under `prefix` (its glob characters and braces escaped)."""
    return "".join("\\" + c if c in "\\*?[]{}" else c for c in prefix) + "*"


LAYOUT = "2"  # P:layout once the earlier layout's records are moved (see the module's docstring)

# KEYS: the earlier record, its new key (two slots: one Redis only, where the earlier layout
# ran). A newer record already at the new key wins; the earlier one is dropped.
_ADOPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('UNLINK', KEYS[1]) return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
return 1
"""


def _entity_text(key: bytes, view_prefix: str) -> str:
    """The entity's key as text, from a record's key: between the view's prefix and the tag's
    closing brace."""
    return key.decode()[len(view_prefix):-1]


def _translate_errors(method):
    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except (redis_errors.RedisError, OSError, asyncio.TimeoutError) as exc:
            raise OnlineStoreUnavailable() from exc

    return wrapper


class RedisOnlineStore:
    def __init__(self, client: RedisClient, prefix: str = "mlserving"):
        self._redis = client
        self._prefix = f"{prefix}:pipeline"
        self._cluster = is_cluster(client)
        self._closed = False

    @classmethod
    def from_url(cls, url: str, prefix: str, timeout_s: float, max_connections: int = 64,
                 cluster: bool = False) -> "RedisOnlineStore":
        settings = RedisSettings(url=url, timeout_seconds=timeout_s, max_connections=max_connections, cluster=cluster)
        return cls(connect(settings), prefix)

    def key(self, view: FeatureView, key: EntityKey) -> str:
        return f"{self._view_prefix(view)}{key_text(key)}}}"

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            if self._cluster:
                await self._redis.aclose()
            else:  # the pool was handed in, so the client would not close it by default
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
        head = f'["{view.definition_hash[:HASH_CHARS]}",{_micros(computed_at)},'
        records = {}
        for row in rows:
            values = row.values
            event = "null" if row.event_time is None else _micros(row.event_time)
            records[self.key(view, row.key)] = f"{head}{event},{_encode([values.get(name) for name in names])}]"
        await self._set_many(records)

    @_translate_errors
    async def write_encoded(self, view: FeatureView, rows: Sequence[EncodedRow], computed_at: datetime) -> None:
        if not rows:
            return
        head = f'["{view.definition_hash[:HASH_CHARS]}",{_micros(computed_at)},'
        await self._set_many({
            self.key(view, row.key): f"{head}{'null' if row.event_time is None else _micros(row.event_time)},"
                                     f"{row.values_json}]"
            for row in rows})

    async def _set_many(self, records: dict[str, str]) -> None:
        """MSET, or on a cluster one MSET per slot."""
        await (self._redis.mset_nonatomic(records) if self._cluster else self._redis.mset(records))

    async def _get_many(self, names: list[str]) -> list[bytes | None]:
        """MGET, or on a cluster one MGET per slot (in the order asked)."""
        if not names:
            return []
        return await (self._redis.mget_nonatomic(names) if self._cluster else self._redis.mget(names))

    async def read(self, view: FeatureView, keys: Sequence[EntityKey], features: Sequence[str]
                   ) -> dict[EntityKey, StoredEntity]:
        """One view's stored entities among `keys`."""
        return (await self.read_views([(view, keys, features)]))[0]

    @_translate_errors
    async def read_views(self, reads: Sequence[tuple[FeatureView, Sequence[EntityKey], Sequence[str]]]
                         ) -> list[dict[EntityKey, StoredEntity]]:
        names = [self.key(view, key) for view, keys, _ in reads for key in keys]
        records = await self._get_many(names)
        try:
            replies = orjson.loads(b"[" + b",".join([b"null" if r is None else r for r in records]) + b"]")
        except ValueError:  # NaN, a huge integer, or a record that is not JSON (not ours): one by one
            replies = [_parsed(record) for record in records]
        answers, start = [], 0
        for view, keys, features in reads:
            answers.append(self._stored(view, keys, features, replies[start:start + len(keys)]))
            start += len(keys)
        return answers

    def _stored(self, view: FeatureView, keys: Sequence[EntityKey], features: Sequence[str], replies: list
                ) -> dict[EntityKey, StoredEntity]:
        indexes = self._indexes(view, tuple(features))
        own, own_hash = view.definition_hash[:HASH_CHARS], view.definition_hash
        found: dict[EntityKey, StoredEntity] = {}
        for key, reply in zip(keys, replies):
            if reply is None:
                continue  # no such record
            try:
                definition, computed, event, values = reply
                if definition != own or not isinstance(values, list) or len(values) != len(view.features):
                    continue  # written under another definition (or not ours): read as missing
                if indexes is not None:
                    values = [values[index] for index in indexes]
                found[key] = StoredEntity(dict(zip(features, values)), _time(event), _write_time(computed),
                                          own_hash)
            except (TypeError, ValueError, OverflowError):
                continue  # not a record of this module's shape: read as missing, recomputed over
        return found

    @staticmethod
    @functools.lru_cache(maxsize=1024)
    def _indexes(view: FeatureView, features: tuple[str, ...]) -> tuple[int, ...] | None:
        """Where each feature is in a record's values; None when they are all of them, in order."""
        index = {feature.name: i for i, feature in enumerate(view.features)}
        found = tuple(index[name] for name in features)
        return None if found == tuple(range(len(view.features))) else found

    @_translate_errors
    async def keys(self, view: FeatureView) -> list[EntityKey]:
        prefix = self._view_prefix(view)
        found = []
        async for key in self._redis.scan_iter(match=_pattern(prefix), count=1000):
            try:
                found.append(key_from_text(view, _entity_text(key, prefix)))
            except ValueError:
                continue  # not an entity key of the view's type: not this store's record
        return found

    @_translate_errors
    async def delete(self, view: FeatureView, keys: Sequence[EntityKey]) -> None:
        if keys:
            await self._redis.unlink(*[self.key(view, key) for key in keys])

    def _view_prefix(self, view: FeatureView) -> str:
        """What every key of the view starts with: up to the opening brace of the entity's tag."""
        return f"{self._prefix}:fv:{view.name}:{{"

    # ----- the earlier layout -----

    @_translate_errors
    async def adopt_earlier_layout(self) -> int:
        """Move the records of the earlier layout (P:fv:{VIEW}:ID) to their keys in this one, once
        per deployment (one SCAN of the keyspace); how many were moved. Nothing to do on a
        cluster: that release ran on one Redis only."""
        layout_key = f"{self._prefix}:layout"
        if self._cluster or await self._redis.get(layout_key) == LAYOUT.encode():
            return 0
        adopt = self._redis.register_script(_ADOPT)
        earlier = f"{self._prefix}:fv:{{"
        moved, batch = 0, []
        async for key in self._redis.scan_iter(match=_pattern(earlier), count=1000):
            view, separator, entity = key.decode()[len(earlier):].partition("}:")
            if separator:  # view names have no brace
                batch.append((key, f"{self._prefix}:fv:{view}:{{{entity}}}"))
            if len(batch) >= 1000:
                moved += await self._adopt(adopt, batch)
                batch = []
        moved += await self._adopt(adopt, batch)
        await self._redis.set(layout_key, LAYOUT)
        return moved

    async def _adopt(self, adopt, moves: list[tuple[bytes, str]]) -> int:
        if not moves:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            for earlier_key, new_key in moves:
                await adopt(keys=[earlier_key, new_key], client=pipe)
            return sum(await pipe.execute())

    # ----- for tests and tools -----

    @_translate_errors
    async def dump(self, view: FeatureView) -> dict[str, dict[str, str]]:
        """Every record of the view (by entity id), as fields h, c, t and v (text): to compare two
        online stores."""
        prefix = self._view_prefix(view)
        found = {}
        async for key in self._redis.scan_iter(match=_pattern(prefix), count=1000):
            definition, computed, event, values = json.loads(await self._redis.get(key))
            found[_entity_text(key, prefix)] = {"h": definition, "c": str(computed), "t": json.dumps(event),
                                                 "v": _encode(values)}
        return found

    @_translate_errors
    async def clear(self, view: FeatureView) -> int:
        """Delete every hash of the view; how many there were."""
        keys = [key async for key in self._redis.scan_iter(match=_pattern(self._view_prefix(view)), count=1000)]
        for start in range(0, len(keys), 1000):
            await self._redis.delete(*keys[start:start + 1000])
        return len(keys)

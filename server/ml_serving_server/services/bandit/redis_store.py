"""BanditStore over Redis.

Keys (P is the configured prefix; {name} is a hash tag that keeps one bandit's keys in one
slot, so every script touches one slot and the store runs on one Redis, a primary with
replicas, or a Redis Cluster alike; the listing's index P:bandits lives in a slot of its own
and is written beside the scripts, not in them):
  P:bandits                    sorted set of bandit names (listing, lexical order)
  P:bandit:{name}:def          JSON definition
  P:bandit:{name}:counts       hash: _i (incarnation: creation time in microseconds, so a
                               re-created bandit never matches its predecessor), _v
                               (definition version, starts at _i), p:ARM pulls, n:ARM
                               reward events, s:ARM reward sum, f:ARM failure sum (1 - r); with
                               a discount also _w and w:ARM (the weights of the last reward, of
                               the bandit and of the arm) and ds:ARM, df:ARM (the sums of
                               weighted rewards and failures: over _w * w:ARM, the evidence
                               after forgetting)
  P:bandit:{name}:lin          hash: A:ARM sum of x x^T and b:ARM sum of r x, packed
                               little-endian float64 (each term times its weight, with a discount)
  P:bandit:{name}:ev:I:EVENT   marks an event id (of a reward without decision) as counted in
                               incarnation I; holds the event's fingerprint (or 1, written before
                               fingerprints were kept); expires with decisions
  P:bandit:{name}:evd:I:D:EVENT  the same for a reward of a decision, D a digest of its id (so each
                               decision has its own event ids); until they expire, markers of the
                               earlier release (ev:I:EVENT holding 1, for any reward) still count
  P:decision:ID                JSON contextual decision of an earlier release (ids now carry
                               them), expires after the bandit's decision TTL
  P:decision-key               random key signing self-contained decision ids (shared by replicas)

Every reward is one Lua script: the checks, the idempotency marker and all increments
commit together, so concurrent rewards from any number of replicas are never lost or
double-counted. Scripts check everything before their first write (Redis does not undo
a script's writes when it fails halfway).
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
from datetime import datetime
from typing import Sequence

import numpy as np
from redis import exceptions as redis_errors

from ...errors import DeadlineExceeded, FailedPrecondition, Unavailable, quoted
from ...runtime.redis_client import RedisClient, connect, is_cluster
from ...runtime.settings import RedisSettings
from .domain.forgetting import fade
from .domain.errors import ErrorReason
from .domain.model import (
    ArmCounts,
    ArmDefinition,
    BanditDefinition,
    ContextualAlgorithm,
    Decision,
    RewardEvent,
    RewardOutcome,
)

# KEYS: def, counts, lin (one slot). ARGV: definition JSON, incarnation.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[2], '_i', ARGV[2], '_v', ARGV[2])
return 1
"""

# KEYS: def, counts. ARGV: definition JSON, the version it was computed from.
# Returns 1 replaced, 0 bandit gone, -1 changed meanwhile (nothing written).
_REPLACE = """
local version = redis.call('HGET', KEYS[2], '_v')
if not version or redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if version ~= ARGV[2] then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[2], '_v', 1)
return 1
"""

# KEYS: def, counts, lin (one slot).
_DELETE = """
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2], KEYS[3])
return existed
"""

# KEYS: lin, counts (one slot): the linear sums and their weights as of one moment.
_LOAD_LINEAR = """
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])}
"""

# KEYS: counts. ARGV: incarnation, arm, count, arm, count, ... Ignored if the bandit is gone.
_ADD_PULLS = """
if redis.call('HGET', KEYS[1], '_i') ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], 'p:' .. ARGV[i], ARGV[i + 1]) end
return 1
"""

# KEYS: counts, lin, event marker[, the marker an earlier release would have used]. ARGV:
# incarnation, arm, reward, ttl, event fingerprint ('' for a reward without event id: never
# deduplicated), discount, fade, d, x1..xd.
# Returns 1 applied, 0 duplicate event, -1 bandit gone, -2 stored linear state of the
# wrong size, -3 event id already counted with other content (nothing written in every case but 1).
#
# Forgetting (domain/forgetting.py: a reward multiplies its arm's evidence by 1 - discount and
# every arm's by 1 - fade) is lazy: rather than multiply evidence on each reward (O(arms d^2)),
# the bandit keeps a weight _w that grows by 1 / (1 - fade) per reward and each arm a weight
# w:ARM that grows by 1 / (1 - discount) per reward of its own; a reward is added times the
# product of the two (to ds:/df: and to the linear sums) and readers divide by it. When _w
# passes 1e100 every arm's sums are divided by it once and it starts again from 1; the same
# for one arm's sums and w:ARM.
_REWARD = """
if redis.call('HGET', KEYS[1], '_i') ~= ARGV[1] then return -1 end
local arm, r, discount, fade, d = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
if d > 0 then
  local gram_blob = redis.call('HGET', KEYS[2], 'A:' .. arm)
  local target_blob = redis.call('HGET', KEYS[2], 'b:' .. arm)
  if (gram_blob and #gram_blob ~= 8 * d * d) or (target_blob and #target_blob ~= 8 * d) then return -2 end
end
if ARGV[5] ~= '' then
  local seen = redis.call('GET', KEYS[3])
  if not seen and KEYS[4] and redis.call('GET', KEYS[4]) == '1' then seen = '1' end
  if seen == ARGV[5] or seen == '1' then return 0 end
  if seen then return -3 end
  redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[4])
end
local function unpack_doubles(blob, n)
  local out = {}
  for i = 1, n do
    out[i] = blob and struct.unpack('<d', blob, 8 * (i - 1) + 1) or 0
  end
  return out
end
local function pack_doubles(values)
  local parts = {}
  for i = 1, #values do parts[i] = struct.pack('<d', values[i]) end
  return table.concat(parts)
end
local function exact(value) return string.format('%.17g', value) end
local function divide(field_key, field, divisor)
  local value = redis.call('HGET', field_key, field)
  if value then redis.call('HSET', field_key, field, exact(tonumber(value) / divisor)) end
end
local function divide_blob(field, divisor)
  local blob = redis.call('HGET', KEYS[2], field)
  if blob then
    local values = unpack_doubles(blob, #blob / 8)
    for j = 1, #values do values[j] = values[j] / divisor end
    redis.call('HSET', KEYS[2], field, pack_doubles(values))
  end
end
local function rescale_arm(name, divisor)
  divide(KEYS[1], 'ds:' .. name, divisor)
  divide(KEYS[1], 'df:' .. name, divisor)
  divide_blob('A:' .. name, divisor)
  divide_blob('b:' .. name, divisor)
end
local function rescale_all(divisor)
  local fields = redis.call('HKEYS', KEYS[1])
  for i = 1, #fields do
    local kind = string.sub(fields[i], 1, 3)
    if kind == 'ds:' or kind == 'df:' then divide(KEYS[1], fields[i], divisor) end
  end
  local blobs = redis.call('HKEYS', KEYS[2])
  for i = 1, #blobs do divide_blob(blobs[i], divisor) end
end
local function grown(field, rate, on_overflow)
  local previous = tonumber(redis.call('HGET', KEYS[1], field) or '1')
  local weight = previous / (1 - rate)
  if weight > 1e100 then
    on_overflow(previous)
    weight = 1 / (1 - rate)
  end
  redis.call('HSET', KEYS[1], field, exact(weight))
  return weight
end
redis.call('HINCRBY', KEYS[1], 'n:' .. arm, 1)
redis.call('HINCRBYFLOAT', KEYS[1], 's:' .. arm, ARGV[3])
redis.call('HINCRBYFLOAT', KEYS[1], 'f:' .. arm, 1 - r)
local w = 1
if discount > 0 then
  w = grown('_w', fade, rescale_all) * grown('w:' .. arm, discount, function(p) rescale_arm(arm, p) end)
  redis.call('HINCRBYFLOAT', KEYS[1], 'ds:' .. arm, exact(r * w))
  redis.call('HINCRBYFLOAT', KEYS[1], 'df:' .. arm, exact((1 - r) * w))
end
if d == 0 then return 1 end
local x = {}
for i = 1, d do x[i] = tonumber(ARGV[8 + i]) end
local gram = unpack_doubles(redis.call('HGET', KEYS[2], 'A:' .. arm), d * d)
local target = unpack_doubles(redis.call('HGET', KEYS[2], 'b:' .. arm), d)
for i = 1, d do
  target[i] = target[i] + w * r * x[i]
  for j = 1, d do
    gram[(i - 1) * d + j] = gram[(i - 1) * d + j] + w * x[i] * x[j]
  end
end
redis.call('HSET', KEYS[2], 'A:' .. arm, pack_doubles(gram), 'b:' .. arm, pack_doubles(target))
return 1
"""


# Error replies of a Redis that is up but cannot serve (replica, full, failing over, ...).
_UNAVAILABLE_REPLIES = {"BUSY", "LOADING", "READONLY", "OOM", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS"}


def _translate_errors(method):
    """Redis failures become domain errors the transport maps to UNAVAILABLE / DEADLINE_EXCEEDED."""

    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except redis_errors.TimeoutError as exc:
            raise DeadlineExceeded(f"bandit state store (Redis) timed out: {exc}",
                                   reason=ErrorReason.STATE_STORE_TIMEOUT) from exc
        except (redis_errors.ConnectionError, OSError) as exc:
            raise Unavailable(f"bandit state store (Redis) unavailable: {exc}",
                              reason=ErrorReason.STATE_STORE_UNAVAILABLE) from exc
        except redis_errors.ResponseError as exc:
            if str(exc).split(" ", 1)[0] in _UNAVAILABLE_REPLIES:
                raise Unavailable(f"bandit state store (Redis) cannot serve now: {exc}",
                                  reason=ErrorReason.STATE_STORE_UNAVAILABLE) from exc
            raise

    return wrapper


class RedisBanditStore:
    def __init__(self, client: RedisClient, prefix: str = "mlserving"):
        self._redis = client
        self._prefix = prefix
        self._cluster = is_cluster(client)
        self._create = client.register_script(_CREATE)
        self._replace = client.register_script(_REPLACE)
        self._delete = client.register_script(_DELETE)
        self._reward = client.register_script(_REWARD)
        self._add_pulls = client.register_script(_ADD_PULLS)
        self._load_linear = client.register_script(_LOAD_LINEAR)

    @classmethod
    def from_url(cls, url: str, prefix: str, timeout_s: float, max_connections: int = 64,
                 cluster: bool = False) -> "RedisBanditStore":
        settings = RedisSettings(url=url, timeout_seconds=timeout_s, max_connections=max_connections, cluster=cluster)
        return cls(connect(settings), prefix)

    async def close(self) -> None:
        await self._redis.aclose()

    async def ping(self) -> bool:
        """Whether Redis answers (for health checking)."""
        try:
            return bool(await self._redis.ping())
        except (redis_errors.RedisError, OSError):
            return False

    # ----- keys -----

    def _key(self, name: str, part: str) -> str:
        return f"{self._prefix}:bandit:{{{name}}}:{part}"

    def _names_key(self) -> str:
        return f"{self._prefix}:bandits"

    def _decision_key(self, decision_id: str) -> str:
        return f"{self._prefix}:decision:{decision_id}"

    # ----- definitions -----

    def _bandit_keys(self, name: str) -> list[str]:
        return [self._key(name, "def"), self._key(name, "counts"), self._key(name, "lin")]

    @_translate_errors
    async def create(self, definition: BanditDefinition) -> bool:
        # The listing's index lives in another slot: named first, so that a failure in between
        # leaves at worst a name without definition, which listings skip (never the reverse).
        await self._redis.zadd(self._names_key(), {definition.name: 0})
        args = [_dump_definition(definition), definition.incarnation]
        return bool(await self._create(keys=self._bandit_keys(definition.name), args=args))

    @_translate_errors
    async def get_definition(self, name: str) -> BanditDefinition | None:
        raw = await self._redis.get(self._key(name, "def"))
        return _load_definition(raw) if raw else None

    @_translate_errors
    async def list_definitions(self, after: str, limit: int) -> list[BanditDefinition]:
        found: list[BanditDefinition] = []
        while len(found) < limit:  # a name without definition (see create and delete) is skipped
            start = f"({after}" if after else "-"
            names = await self._redis.zrangebylex(self._names_key(), start, "+", start=0, num=limit - len(found))
            if not names:
                break
            raws = await self._get_many([self._key(n.decode(), "def") for n in names])
            found += [_load_definition(raw) for raw in raws if raw]
            after = names[-1].decode()
        return found

    async def _get_many(self, keys: list[str]) -> list[bytes | None]:
        """MGET, or on a cluster the same keys fetched slot by slot."""
        return await (self._redis.mget_nonatomic(keys) if self._cluster else self._redis.mget(keys))

    @_translate_errors
    async def replace_definition(self, definition: BanditDefinition, expected_version: int) -> bool | None:
        keys = [self._key(definition.name, "def"), self._key(definition.name, "counts")]
        outcome = await self._replace(keys=keys, args=[_dump_definition(definition), expected_version])
        return {1: True, -1: False}.get(outcome)

    @_translate_errors
    async def delete(self, name: str) -> bool:
        existed = bool(await self._delete(keys=self._bandit_keys(name)))
        await self._redis.zrem(self._names_key(), name)
        return existed

    # ----- learnt state -----

    @_translate_errors
    async def load_counts(self, name: str) -> tuple[int, dict[str, ArmCounts]] | None:
        raw = await self._redis.hgetall(self._key(name, "counts"))
        version = raw.pop(b"_v", None)
        if version is None:
            return None
        fields: dict[str, dict[str, float]] = {}
        for key, value in raw.items():
            kind, _, arm = key.decode().partition(":")
            if arm:  # skips _i and _v, the bandit's own fields
                fields.setdefault(arm, {})[kind] = float(value)
        faded = float(raw.get(b"_w", 1.0))
        counts = {
            arm: ArmCounts(pulls=int(f.get("p", 0)), reward_count=int(f.get("n", 0)),
                           reward_sum=f.get("s", 0.0), failure_sum=f.get("f", 0.0),
                           discounted=_discounted(f, faded * f.get("w", 1.0)))
            for arm, f in fields.items()
        }
        return int(version), counts

    @_translate_errors
    async def load_linear(self, name: str, dimension: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        raw, counts = (_pairs(reply) for reply in
                       await self._load_linear(keys=[self._key(name, "lin"), self._key(name, "counts")]))
        # A bandit without discount writes no weights: its sums are plain.
        faded = float(counts.get(b"_w", 1.0))
        sums: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for key, blob in raw.items():
            kind, _, arm = key.decode().partition(":")
            if kind != "A":
                continue
            weight = faded * float(counts.get(f"w:{arm}".encode(), 1.0))
            gram = np.frombuffer(blob, dtype="<f8").reshape(dimension, dimension)
            target = np.frombuffer(raw.get(f"b:{arm}".encode(), b"\0" * 8 * dimension), dtype="<f8")
            sums[arm] = (gram / weight, target / weight) if weight != 1.0 else (gram, target)
        return sums

    @_translate_errors
    async def get_decisions(self, ids: Sequence[str]) -> list[Decision | None]:
        raws = await self._get_many([self._decision_key(i) for i in ids])
        return [_load_decision(raw) if raw else None for raw in raws]

    @_translate_errors
    async def add_pulls(self, name: str, incarnation: int, pulls: dict[str, int]) -> None:
        args = [incarnation, *(item for arm, count in pulls.items() for item in (arm, count))]
        await self._add_pulls(keys=[self._key(name, "counts")], args=args)

    @_translate_errors
    async def decision_key(self) -> bytes:
        key = f"{self._prefix}:decision-key"
        for _ in range(3):  # SET NX then GET: retried in case the key vanishes in between
            await self._redis.set(key, secrets.token_bytes(32), nx=True)
            value = await self._redis.get(key)
            if value:
                return value
        raise Unavailable("could not read the decision-signing key from Redis",
                          reason=ErrorReason.STATE_STORE_UNAVAILABLE)

    @_translate_errors
    async def apply_rewards(self, events: Sequence[RewardEvent]) -> list[RewardOutcome]:
        if len(events) == 1:  # one round trip, without the pipeline's SCRIPT EXISTS check
            results = [await self._reward(*self._reward_call(events[0]))]
        elif self._cluster:  # no scripts in a cluster pipeline; in order, as forgetting needs
            results = [await self._reward(*self._reward_call(event)) for event in events]
        else:
            async with self._redis.pipeline(transaction=False) as pipe:
                for event in events:
                    await self._reward(*self._reward_call(event), client=pipe)
                results = await pipe.execute()
        for event, result in zip(events, results):
            if result == -2:
                raise FailedPrecondition(f"stored linear state of arm {quoted(event.arm_id)} of bandit "
                                         f"{quoted(event.bandit)} has the wrong size", reason=ErrorReason.STATE_CORRUPT)
        return [_REWARD_OUTCOMES[result] for result in results]

    def _reward_call(self, event: RewardEvent) -> tuple[list[str], list]:
        keys = [self._key(event.bandit, "counts"), self._key(event.bandit, "lin"), *self._event_keys(event)]
        args = [event.incarnation, event.arm_id, repr(event.reward), event.ttl_seconds,
                event.fingerprint if event.event_id else "", repr(event.discount), repr(fade(event.discount)),
                len(event.context),
                *(repr(float(v)) for v in event.context)]
        return keys, args

    def _event_keys(self, event: RewardEvent) -> list[str]:
        """The event's marker, and for a reward of a decision the marker an earlier release
        used for it (bandit-wide): a retry across the upgrade is still a duplicate."""
        bandit_wide = self._key(event.bandit, f"ev:{event.incarnation}:{event.event_id}")
        if not event.decision_id:
            return [bandit_wide]
        # A digest keeps the key short: decision ids run to 512 characters.
        decision = hashlib.sha256(event.decision_id.encode()).hexdigest()[:32]
        return [self._key(event.bandit, f"evd:{event.incarnation}:{decision}:{event.event_id}"), bandit_wide]


def _pairs(flat: list) -> dict[bytes, bytes]:
    """A Lua HGETALL reply, [field, value, ...], as a dict."""
    return dict(zip(flat[::2], flat[1::2]))


def _discounted(fields: dict[str, float], weight: float) -> tuple[float, float] | None:
    """An arm's evidence after forgetting: its weighted sums over its current weight."""
    if "ds" not in fields and "df" not in fields:
        return None
    return fields.get("ds", 0.0) / weight, fields.get("df", 0.0) / weight


_REWARD_OUTCOMES = {1: RewardOutcome.APPLIED, 0: RewardOutcome.DUPLICATE, -1: RewardOutcome.BANDIT_GONE,
                    -3: RewardOutcome.CONFLICT}


# ----- serialisation (the store's own format, not a public contract) -----

def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _dump_definition(d: BanditDefinition) -> str:
    return json.dumps({
        "name": d.name, "description": d.description,
        "arms": [{"id": a.id, "description": a.description, "disabled": a.disabled,
                  "model_version": a.model_version} for a in d.arms],
        "prior_alpha": d.prior_alpha, "prior_beta": d.prior_beta, "context_dimension": d.context_dimension,
        "contextual_algorithm": d.contextual_algorithm.value, "exploration": d.exploration,
        "ridge_lambda": d.ridge_lambda, "decision_ttl_seconds": d.decision_ttl_seconds, "discount": d.discount,
        "create_time": _time(d.create_time), "update_time": _time(d.update_time),
        "created_by": d.created_by, "updated_by": d.updated_by,
    })


def _load_definition(raw: bytes) -> BanditDefinition:
    data = json.loads(raw)
    data["arms"] = tuple(ArmDefinition(**arm) for arm in data["arms"])
    data["contextual_algorithm"] = ContextualAlgorithm(data["contextual_algorithm"])
    for field in ("create_time", "update_time"):
        data[field] = datetime.fromisoformat(data[field]) if data[field] else None
    return BanditDefinition(**data)


def _dump_decision(d: Decision) -> str:  # the format an earlier release stored decisions in
    return json.dumps({"id": d.id, "bandit": d.bandit, "arms": d.arm_ids, "context": d.context,
                       "user_id": d.user_id, "time": _time(d.time)})


def _load_decision(raw: bytes) -> Decision:
    data = json.loads(raw)
    return Decision(id=data["id"], bandit=data["bandit"], arm_ids=tuple(data["arms"]),
                    context=tuple(data["context"]), user_id=data["user_id"],
                    time=datetime.fromisoformat(data["time"]) if data["time"] else None)

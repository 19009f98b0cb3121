"""Experiment definitions and deterministic, sticky variant assignment.

Plain Python, no I/O: no gRPC, protobuf, Redis or HTTP (an import-linter contract checks).
The server and the client library (ABTestingRouter) must compute the same answer for
every user from the same definition, so everything an assignment depends on is here and
written down below as a specification another implementation can follow.

Hashing (stable across processes, machines, Python versions and languages)
    message = b"mlserving.router.v1\\x00" + UTF-8(salt) + b"\\x00" + UTF-8(user_id)
    digest  = BLAKE2b(message, digest_size=16)           # unkeyed, no personalisation
    bucket  = int(digest[0:8], big-endian)  mod 10000    # the variant bucket
    draw    = int(digest[8:16], big-endian) mod 10000    # the holdout draw
A salt is 1 to 128 characters of [A-Za-z0-9._:-] (no NUL, so the message is unambiguous).
BLAKE2b is in every Python's hashlib and in every language's standard crypto library;
the two 64-bit halves of its output are independent pseudo-random values, so the holdout
draw is a separate salted hash of the user that tells nothing about the variant bucket,
at the cost of one hash call. (zlib.crc32 would be 6x faster but is linear: two CRCs of
the same user under two salts differ by a constant, so holdout and bucket would be
correlated.) The modulo bias of 2**64 mod 10000 is below 1e-15.

Buckets and the layout
    Each of the 10000 buckets (one per basis point) belongs to exactly one variant; a
    variant owns exactly weight_bps buckets. Which ones is the experiment's
    `BucketLayout`: explicit, half-open bucket ranges per variant. A new experiment's
    layout is the variants' contiguous ranges in declaration order
    (`BucketLayout.initial`). A change of weights never recomputes it from scratch:
    `reweighted(layout, new_weights)` moves only buckets of variants whose weight went
    down to variants whose weight went up, exactly as many as the weights changed.

Why the layout is data, and why that gives monotone ramps
    No function of the *current* weights alone can do it: with three variants A, B, C,
    "a variant whose weight does not change keeps its buckets" forces each variant's
    bucket set to depend on its own weight only, and then the sets of (2, 2, 1), (2, 1, 2)
    and (1, 2, 2) out of 5 buckets cannot all be disjoint. (Range allocation from weights
    reshuffles the middle variants; per-bucket rank schemes only approximate the counts.)
    So the layout is kept with the experiment, and `reweighted` is a pure function of the
    old layout and the new weights, with these guarantees, checked by property tests:
      * a variant whose weight went up keeps all of its buckets and gains exactly the
        difference; one whose weight went down keeps all but exactly the difference; one
        whose weight is unchanged keeps exactly the same buckets;
      * buckets move only from lowered variants to raised ones: the users who change
        variant are exactly those hashed into the moved buckets, sum(raises) of them.
    Raising one variant from 10% to 20% (taking from control) therefore moves exactly the
    1000 buckets' users from control into that variant, and no one else. Users' buckets
    never change (the salt is immutable), so the same layout gives the same answer on
    every replica and in the client, with no shared state on the request path.
    `reweighted` grows a variant from the edges of its own ranges into the released
    buckets of its neighbours first, so ramps of a two-variant experiment stay contiguous
    and a ramp down and back up restores the ranges; fragments stay few otherwise.

Order of decisions in `assign` (as the proto says)
    1. experiment paused or stopped (`active=False`): control, EXPERIMENT_INACTIVE, bucket -1
    2. per-user override: that variant, USER_OVERRIDE, bucket -1 (no hashing)
    3. targeting rule fails: control, NOT_TARGETED, bucket -1
    4. draw < holdout_bps: control, HOLDOUT, with the user's variant bucket
    5. otherwise the owner of the bucket, EXPERIMENT_BUCKET
"""

from __future__ import annotations

import enum
import re
import secrets
from dataclasses import dataclass
from functools import cached_property
from hashlib import blake2b
from typing import Any, Collection, Iterable, Mapping, NamedTuple, Sequence

from ....errors import InvalidArgument, listed, quoted
from .errors import ErrorReason
from .targeting import EMPTY_TARGETING, TargetingRule, parse_targeting

__all__ = [
    "BUCKETS",
    "Assigner",
    "Assignment",
    "AssignmentReason",
    "BucketLayout",
    "ExperimentDefinition",
    "Variant",
    "assign",
    "check_user_id",
    "define_experiment",
    "generate_salt",
    "hash_user",
    "reweighted",
    "updated",
]

BUCKETS = 10_000
"""Buckets per experiment: one per basis point of weight."""
HASH_DOMAIN = b"mlserving.router.v1\x00"
"""Prefix of every hashed message: a new scheme would change it (and reshuffle everyone)."""
_LOW64 = (1 << 64) - 1

# ----- limits -----
MAX_NAME_LENGTH = 128  # experiment names: [A-Za-z0-9._-]
MAX_VARIANT_NAME_LENGTH = 64  # variant names: [A-Za-z0-9._-]
MIN_VARIANTS = 2
MAX_VARIANTS = 100
MAX_MODEL_NAME_LENGTH = 256
MAX_MODEL_VERSION_LENGTH = 256  # a registry version or alias
MAX_DESCRIPTION_LENGTH = 1024
MAX_OVERRIDES = 10_000
MAX_USER_ID_LENGTH = 256
MAX_SALT_LENGTH = 128

EXPERIMENT_NAME = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_NAME_LENGTH}}}")
VARIANT_NAME = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_VARIANT_NAME_LENGTH}}}")
SALT = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_SALT_LENGTH}}}")


class AssignmentReason(enum.Enum):
    """Why a user got what they got; values are the proto's AssignmentReason numbers."""

    EXPERIMENT_BUCKET = 1
    USER_OVERRIDE = 2
    HOLDOUT = 3
    NOT_TARGETED = 4
    EXPERIMENT_INACTIVE = 5


@dataclass(frozen=True)
class Variant:
    """One arm: a model version (or alias, resolved by the servicer) and its weight."""

    name: str
    model_name: str
    model_version: str
    weight_bps: int
    control: bool = False
    description: str = ""


class Assignment(NamedTuple):
    """The variant chosen for one user, why, and the user's bucket (-1: no hashing)."""

    variant: Variant
    reason: AssignmentReason
    bucket: int

    @property
    def variant_name(self) -> str:
        return self.variant.name

    @property
    def model_name(self) -> str:
        return self.variant.model_name

    @property
    def model_version(self) -> str:
        return self.variant.model_version

    @property
    def is_exposure(self) -> bool:
        """Whether it counts as an exposure of the variant (holdout is counted apart)."""
        return self.reason is AssignmentReason.EXPERIMENT_BUCKET or self.reason is AssignmentReason.USER_OVERRIDE


# ----- hashing -----

def _prefix(salt: str) -> bytes:
    return HASH_DOMAIN + salt.encode() + b"\x00"


def hash_user(salt: str, user_id: str) -> tuple[int, int]:
    """(bucket, holdout draw) of a user under a salt, both in [0, 10000): see the module doc."""
    digest = int.from_bytes(blake2b(_prefix(salt) + user_id.encode(), digest_size=16).digest(), "big")
    return (digest >> 64) % BUCKETS, (digest & _LOW64) % BUCKETS


def generate_salt() -> str:
    """A fresh salt for a new experiment (128 random bits, hex)."""
    return secrets.token_hex(16)


# ----- weights and the bucket layout -----

def _weight_items(weights: Mapping[str, int] | Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    return list(weights.items()) if isinstance(weights, Mapping) else [tuple(item) for item in weights]


def _check_weights(items: Sequence[tuple[str, int]], field_name: str) -> None:
    seen: set[str] = set()
    for index, (name, weight) in enumerate(items):
        if name in seen:
            raise InvalidArgument(f"{field_name}[{index}]", f"repeats variant {quoted(name)}",
                                  reason=ErrorReason.INVALID_VARIANTS)
        seen.add(name)
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= BUCKETS:
            raise InvalidArgument(f"{field_name}[{index}].weight_bps",
                                  f"must be a whole number of basis points from 0 to {BUCKETS}, got {quoted(weight)}",
                                  reason=ErrorReason.INVALID_WEIGHTS)
    total = sum(weight for _, weight in items)
    if total != BUCKETS:
        raise InvalidArgument(field_name, f"weights must add up to {BUCKETS} basis points, got {total}",
                              reason=ErrorReason.INVALID_WEIGHTS)


Ranges = tuple[tuple[int, int], ...]


def _runs(owner: Sequence[int], count: int) -> list[list[tuple[int, int]]]:
    """Half-open ranges of each owner index in an owner table, ascending."""
    ranges: list[list[tuple[int, int]]] = [[] for _ in range(count)]
    start = 0
    for bucket in range(1, BUCKETS + 1):
        if bucket == BUCKETS or owner[bucket] != owner[start]:
            ranges[owner[start]].append((start, bucket))
            start = bucket
    return ranges


@dataclass(frozen=True)
class BucketLayout:
    """Which buckets each variant owns: half-open [start, end) ranges per variant name,
    ascending and coalesced, together covering [0, 10000) exactly once.

    This is state: the store keeps it with the experiment (it changes only through
    `reweighted`) and the client caches it with the definition. `as_data` / `from_data`
    give and take plain JSON-able data.
    """

    ranges: tuple[tuple[str, Ranges], ...]

    @classmethod
    def initial(cls, weights: Mapping[str, int] | Iterable[tuple[str, int]]) -> BucketLayout:
        """Contiguous ranges in the given order: the layout of a new experiment."""
        items = _weight_items(weights)
        _check_weights(items, "weights")
        start, ranges = 0, []
        for name, weight in items:
            ranges.append((name, ((start, start + weight),) if weight else ()))
            start += weight
        return cls(tuple(ranges))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.ranges)

    def weights(self) -> dict[str, int]:
        """Buckets per variant, in layout order."""
        return {name: sum(end - start for start, end in ranges) for name, ranges in self.ranges}

    def buckets_of(self, name: str) -> frozenset[int]:
        ranges = dict(self.ranges)[name]
        return frozenset(b for start, end in ranges for b in range(start, end))

    def owner_table(self, order: Sequence[str] | None = None) -> list[int]:
        """For each bucket, the index of its owner in `order` (default: layout order)."""
        index = {name: i for i, name in enumerate(order if order is not None else self.names)}
        table = [-1] * BUCKETS
        for name, ranges in self.ranges:
            i = index[name]
            for start, end in ranges:
                table[start:end] = [i] * (end - start)
        return table

    def as_data(self) -> dict[str, list[list[int]]]:
        """{"variant": [[start, end], ...], ...}, in layout order."""
        return {name: [[start, end] for start, end in ranges] for name, ranges in self.ranges}

    @classmethod
    def from_data(cls, data: Mapping[str, Any], field_name: str = "layout") -> BucketLayout:
        """The inverse of `as_data`, checked: ranges in bounds, ascending, disjoint, covering
        every bucket once. Raises InvalidArgument naming `field_name`."""
        if not isinstance(data, Mapping) or len(data) > MAX_VARIANTS:
            raise InvalidArgument(field_name, f"must map at most {MAX_VARIANTS} variant names to bucket ranges")
        covered = bytearray(BUCKETS)
        ranges = []
        for name, raw in data.items():
            path = f"{field_name}.{name}"
            if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name):
                raise InvalidArgument(field_name, f"{quoted(name)} is not a variant name")
            if not isinstance(raw, (list, tuple)) or len(raw) > BUCKETS:
                raise InvalidArgument(path, "must be a list of [start, end] bucket ranges")
            pairs, last = [], 0
            for i, pair in enumerate(raw):
                ok = (isinstance(pair, (list, tuple)) and len(pair) == 2
                      and all(isinstance(v, int) and not isinstance(v, bool) for v in pair))
                if not ok or not (last <= pair[0] < pair[1] <= BUCKETS):
                    raise InvalidArgument(f"{path}[{i}]", f"must be an ascending [start, end) range within "
                                                          f"[0, {BUCKETS}], after the previous one")
                start, end = pair
                if any(covered[start:end]):
                    raise InvalidArgument(f"{path}[{i}]", "overlaps another range")
                covered[start:end] = b"\x01" * (end - start)
                if pairs and pairs[-1][1] == start:
                    pairs[-1] = (pairs[-1][0], end)  # coalesce
                else:
                    pairs.append((start, end))
                last = end
            ranges.append((name, tuple(pairs)))
        if not all(covered):
            raise InvalidArgument(field_name, f"leaves {covered.count(0)} buckets without a variant")
        return cls(tuple(ranges))


def reweighted(layout: BucketLayout, new_weights: Mapping[str, int] | Iterable[tuple[str, int]]) -> BucketLayout:
    """The layout for new weights that moves the fewest buckets: exactly sum(raises).

    `new_weights` lists the variants after the change, in their order (new names start
    with no buckets; names of `layout` left out are removed and release all theirs).
    Only variants whose weight went down give buckets (each exactly its decrease) and only
    those whose weight went up take them (each exactly its increase); every other bucket
    keeps its owner. A raised variant first grows from the edges of its own ranges into
    released neighbouring buckets, then takes the highest released bucket of the first
    lowered variant (in order) and grows from there. Deterministic: the same old layout
    and new weights give the same layout everywhere.
    """
    items = _weight_items(new_weights)
    _check_weights(items, "weights")
    old = layout.weights()
    new_names = [name for name, _ in items]
    removed = [name for name in old if name not in dict(items)]
    names = new_names + removed
    target = dict(items) | {name: 0 for name in removed}
    owner = layout.owner_table(names)
    quota = [max(0, old.get(name, 0) - target[name]) for name in names]  # buckets each must release
    need = [max(0, target[name] - old.get(name, 0)) for name in names]

    for grower, wanted in enumerate(need):
        while wanted:
            took = _grow_from_edges(owner, grower, quota, wanted)
            wanted -= took
            if wanted and not took:
                giver = next(i for i, q in enumerate(quota) if q)
                bucket = next(b for b in range(BUCKETS - 1, -1, -1) if owner[b] == giver)
                owner[bucket] = grower
                quota[giver] -= 1
                wanted -= 1

    runs = _runs(owner, len(names))
    result = BucketLayout(tuple((name, tuple(runs[i])) for i, name in enumerate(new_names)))
    if any(runs[len(new_names):]) or result.weights() != dict(items):  # pragma: no cover - a bug here
        raise AssertionError("reweighted produced a layout that does not match the weights")
    return result


def _grow_from_edges(owner: list[int], grower: int, quota: list[int], wanted: int) -> int:
    """Extend each of the grower's ranges over neighbouring buckets whose owner still has
    buckets to release (rightwards, then leftwards); returns how many it took."""
    took = 0
    bucket = 0
    while bucket < BUCKETS and took < wanted:
        if owner[bucket] != grower:
            bucket += 1
            continue
        start = bucket
        while bucket < BUCKETS and owner[bucket] == grower:
            bucket += 1
        end = bucket  # [start, end) is one run of the grower
        while end < BUCKETS and took < wanted and owner[end] != grower and quota[owner[end]]:
            quota[owner[end]] -= 1
            owner[end] = grower
            end += 1
            took += 1
        left = start - 1
        while left >= 0 and took < wanted and owner[left] != grower and quota[owner[left]]:
            quota[owner[left]] -= 1
            owner[left] = grower
            left -= 1
            took += 1
        bucket = end
    return took


# ----- the experiment definition -----

@dataclass(frozen=True)
class ExperimentDefinition:
    """What assignment needs to know of an experiment. Build it with `define_experiment`
    (or `updated`), which check every field; `assigner` is compiled once per definition."""

    name: str
    variants: tuple[Variant, ...]
    salt: str
    layout: BucketLayout
    targeting: TargetingRule = EMPTY_TARGETING
    overrides: tuple[tuple[str, str], ...] = ()  # (user_id, variant name)
    holdout_bps: int = 0

    @property
    def control(self) -> Variant:
        return next(v for v in self.variants if v.control)

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)

    def weights(self) -> dict[str, int]:
        return {v.name: v.weight_bps for v in self.variants}

    @cached_property
    def assigner(self) -> Assigner:
        return Assigner(self)


def _check_text(value: Any, field_name: str, limit: int, *, required: bool = True) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(field_name, "must be a string")
    if required and not value:
        raise InvalidArgument(field_name, "is required")
    if len(value) > limit:
        raise InvalidArgument(field_name, f"must be at most {limit} characters, got {len(value)}")
    return value


def check_user_id(user_id: Any, field_name: str = "user_id") -> str:
    """A user id as assignment takes it: 1 to 256 characters."""
    user_id = _check_text(user_id, field_name, MAX_USER_ID_LENGTH)
    try:
        user_id.encode()
    except UnicodeEncodeError:
        raise InvalidArgument(field_name, "must be valid Unicode text") from None
    return user_id


def _check_variants(variants: Sequence[Variant], field_name: str) -> tuple[Variant, ...]:
    variants = tuple(variants)
    if not MIN_VARIANTS <= len(variants) <= MAX_VARIANTS:
        raise InvalidArgument(field_name, f"must hold {MIN_VARIANTS} to {MAX_VARIANTS} variants, got {len(variants)}",
                              reason=ErrorReason.INVALID_VARIANTS)
    for index, variant in enumerate(variants):
        path = f"{field_name}[{index}]"
        if not isinstance(variant, Variant):
            raise InvalidArgument(path, "must be a Variant", reason=ErrorReason.INVALID_VARIANTS)
        if not isinstance(variant.name, str) or not VARIANT_NAME.fullmatch(variant.name):
            raise InvalidArgument(f"{path}.name", f"must be 1 to {MAX_VARIANT_NAME_LENGTH} characters of letters, "
                                                  f"digits and . _ -, got {quoted(variant.name)}")
        _check_text(variant.model_name, f"{path}.model_name", MAX_MODEL_NAME_LENGTH)
        _check_text(variant.model_version, f"{path}.model_version", MAX_MODEL_VERSION_LENGTH)
        _check_text(variant.description, f"{path}.description", MAX_DESCRIPTION_LENGTH, required=False)
        if not isinstance(variant.control, bool):
            raise InvalidArgument(f"{path}.control", "must be a boolean")
    _check_weights([(v.name, v.weight_bps) for v in variants], field_name)
    controls = [v.name for v in variants if v.control]
    if len(controls) != 1:
        found = f"got {len(controls)}" + (f": {listed(controls)}" if controls else "")
        raise InvalidArgument(field_name, f"exactly one variant must be the control, {found}",
                              reason=ErrorReason.INVALID_VARIANTS)
    return variants


def _check_overrides(overrides: Mapping[str, str] | Iterable[tuple[str, str]], names: Collection[str],
                     field_name: str) -> tuple[tuple[str, str], ...]:
    items = list(overrides.items()) if isinstance(overrides, Mapping) else [tuple(o) for o in overrides]
    if len(items) > MAX_OVERRIDES:
        raise InvalidArgument(field_name, f"must hold at most {MAX_OVERRIDES} overrides, got {len(items)}")
    seen: set[str] = set()
    for index, (user_id, variant) in enumerate(items):
        check_user_id(user_id, f"{field_name}[{index}].user_id")
        if user_id in seen:
            raise InvalidArgument(f"{field_name}[{index}].user_id", f"user {quoted(user_id)} is overridden twice")
        seen.add(user_id)
        if variant not in names:
            raise InvalidArgument(f"{field_name}[{index}].variant", f"unknown variant {quoted(variant)}",
                                  reason=ErrorReason.UNKNOWN_VARIANT)
    return tuple(items)


def _check_holdout(holdout_bps: Any, field_name: str) -> int:
    if isinstance(holdout_bps, bool) or not isinstance(holdout_bps, int) or not 0 <= holdout_bps <= BUCKETS:
        raise InvalidArgument(field_name, f"must be 0 to {BUCKETS} basis points, got {quoted(holdout_bps)}")
    return holdout_bps


def _check_layout(layout: BucketLayout, variants: Sequence[Variant], field_name: str) -> BucketLayout:
    if not isinstance(layout, BucketLayout):
        raise InvalidArgument(field_name, "must be a BucketLayout")
    layout = BucketLayout.from_data(layout.as_data(), field_name)  # structure: a partition of the buckets
    if layout.weights() != {v.name: v.weight_bps for v in variants}:
        raise InvalidArgument(field_name, "does not give each variant exactly its weight in buckets",
                              reason=ErrorReason.INVALID_WEIGHTS)
    return layout


def define_experiment(name: str, variants: Sequence[Variant], *, salt: str = "",
                      targeting: Mapping[str, Any] | TargetingRule | None = None,
                      overrides: Mapping[str, str] | Iterable[tuple[str, str]] = (), holdout_bps: int = 0,
                      layout: BucketLayout | None = None, field_name: str = "experiment") -> ExperimentDefinition:
    """A checked definition. An empty salt gets a fresh one; no layout means a new
    experiment's (contiguous ranges in variant order); a given layout (the stored one) must
    give each variant exactly its weight. Raises InvalidArgument naming the field, e.g.
    "experiment.variants[1].weight_bps" (INVALID_WEIGHTS), "experiment.variants"
    (INVALID_VARIANTS: count, duplicates, control), "experiment.targeting..."
    (INVALID_TARGETING), "experiment.overrides[3].variant" (UNKNOWN_VARIANT)."""
    if not isinstance(name, str) or not EXPERIMENT_NAME.fullmatch(name):
        raise InvalidArgument(f"{field_name}.name",
                              f"must be 1 to {MAX_NAME_LENGTH} characters of letters, digits and . _ -")
    variants = _check_variants(variants, f"{field_name}.variants")
    if salt == "":
        salt = generate_salt()
    elif not isinstance(salt, str) or not SALT.fullmatch(salt):
        raise InvalidArgument(f"{field_name}.salt",
                              f"must be 1 to {MAX_SALT_LENGTH} characters of letters, digits and . _ : -")
    rule = parse_targeting(targeting, f"{field_name}.targeting")
    pinned = _check_overrides(overrides, {v.name for v in variants}, f"{field_name}.overrides")
    holdout_bps = _check_holdout(holdout_bps, f"{field_name}.holdout_bps")
    if layout is None:
        layout = BucketLayout.initial((v.name, v.weight_bps) for v in variants)
    else:
        layout = _check_layout(layout, variants, f"{field_name}.layout")
    return ExperimentDefinition(name, variants, salt, layout, rule, pinned, holdout_bps)


_UNCHANGED: Any = object()


def updated(definition: ExperimentDefinition, *, variants: Sequence[Variant] = _UNCHANGED,
            targeting: Mapping[str, Any] | TargetingRule | None = _UNCHANGED,
            overrides: Mapping[str, str] | Iterable[tuple[str, str]] = _UNCHANGED,
            holdout_bps: int = _UNCHANGED, field_name: str = "experiment") -> ExperimentDefinition:
    """The definition with some fields changed, checked again. New variants reweight the
    layout with `reweighted` (users move only from lowered to raised variants); a variant
    keeps its model: changing an existing variant's model_name or model_version raises
    InvalidArgument (IMMUTABLE_FIELD). Name and salt never change. (Whether a removed
    variant had exposures is for the caller to check: the domain does not count them.)"""
    layout = definition.layout
    if variants is not _UNCHANGED:
        variants = _check_variants(variants, f"{field_name}.variants")
        for index, variant in enumerate(variants):
            before = definition.variant(variant.name)
            if before is None:
                continue
            for attribute in ("model_name", "model_version"):
                if getattr(variant, attribute) != getattr(before, attribute):
                    was = quoted(getattr(before, attribute))
                    raise InvalidArgument(f"{field_name}.variants[{index}].{attribute}",
                                          f"cannot change once the variant exists (was {was})",
                                          reason=ErrorReason.IMMUTABLE_FIELD)
        layout = reweighted(definition.layout, [(v.name, v.weight_bps) for v in variants])
    else:
        variants = definition.variants
    return define_experiment(
        definition.name, variants, salt=definition.salt,
        targeting=definition.targeting if targeting is _UNCHANGED else targeting,
        overrides=definition.overrides if overrides is _UNCHANGED else overrides,
        holdout_bps=definition.holdout_bps if holdout_bps is _UNCHANGED else holdout_bps,
        layout=layout, field_name=field_name)


# ----- assignment -----

class Assigner:
    """An experiment compiled for assignment: every possible answer is built once here, so
    `assign` is one dict lookup, the targeting rule when there is one, one BLAKE2b call
    and one list index."""

    __slots__ = ("_prefix", "_overrides", "_targeting", "_holdout_bps", "_by_bucket", "_held", "_not_targeted",
                 "_inactive")

    def __init__(self, definition: ExperimentDefinition):
        control = definition.control
        variants = {v.name: v for v in definition.variants}
        table = definition.layout.owner_table([v.name for v in definition.variants])
        self._prefix = _prefix(definition.salt)
        self._overrides = {user: Assignment(variants[name], AssignmentReason.USER_OVERRIDE, -1)
                           for user, name in definition.overrides}
        self._targeting = None if definition.targeting.is_empty else definition.targeting
        self._holdout_bps = definition.holdout_bps
        self._by_bucket = [Assignment(definition.variants[table[b]], AssignmentReason.EXPERIMENT_BUCKET, b)
                           for b in range(BUCKETS)]
        self._held = ([Assignment(control, AssignmentReason.HOLDOUT, b) for b in range(BUCKETS)]
                      if self._holdout_bps else [])
        self._not_targeted = Assignment(control, AssignmentReason.NOT_TARGETED, -1)
        self._inactive = Assignment(control, AssignmentReason.EXPERIMENT_INACTIVE, -1)

    def assign(self, user_id: str, attributes: Mapping[str, Any] | None = None, segments: Collection[str] = (),
               active: bool = True) -> Assignment:
        if not active:
            return self._inactive
        if self._overrides:
            pinned = self._overrides.get(user_id)
            if pinned is not None:
                return pinned
        if self._targeting is not None and not self._targeting.matches(attributes, segments):
            return self._not_targeted
        digest = int.from_bytes(blake2b(self._prefix + user_id.encode(), digest_size=16).digest(), "big")
        bucket = (digest >> 64) % BUCKETS
        if self._holdout_bps and (digest & _LOW64) % BUCKETS < self._holdout_bps:
            return self._held[bucket]
        return self._by_bucket[bucket]

    def attributed(self, user_id: str) -> Variant | None:
        """The variant an outcome of this user belongs to when the caller does not name one:
        the user's override, else the owner of their bucket; None for a held-out user.
        Targeting is not re-checked (outcomes carry no attributes): an outcome of a user who
        was never exposed is simply not counted."""
        pinned = self._overrides.get(user_id)
        if pinned is not None:
            return pinned.variant
        digest = int.from_bytes(blake2b(self._prefix + user_id.encode(), digest_size=16).digest(), "big")
        if self._holdout_bps and (digest & _LOW64) % BUCKETS < self._holdout_bps:
            return None
        return self._by_bucket[(digest >> 64) % BUCKETS].variant


def assign(definition: ExperimentDefinition, user_id: str, attributes: Mapping[str, Any] | None = None,
           segments: Collection[str] = (), *, active: bool = True) -> Assignment:
    """The variant of `user_id` in the experiment: deterministic, sticky, pure (see the
    module doc for the order of decisions). `active` is False while the experiment is
    paused or stopped. The user id is taken as given (check it with `check_user_id`)."""
    return definition.assigner.assign(user_id, attributes, segments, active)

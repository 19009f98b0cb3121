"""Online reads: one view's features of 1 to 1000 entities, from the online store in one round
trip, with read-through to the source.

Each value says where it came from: the online store, or the source now (read through: a miss,
or a value computed longer ago than the view's TTL, of a view that computes on miss, written
back). A value older than the TTL that is not recomputed is served flagged stale. An entity
found nowhere is answered with found = False and every feature NOT_FOUND.

Failures: Redis down, every value is computed from the source (nothing written back) and the
answer says so; PostgreSQL down with Redis up, cached values are served while a read that needs
the source fails UNAVAILABLE (SOURCE_UNAVAILABLE); only stale values to recompute are served
stale instead.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, NamedTuple, Sequence

from ....errors import InvalidArgument, quoted
from .errors import ErrorReason
from .feature_views import FeatureView
from .ports import EntityRow, FeatureSource, OnlineStore, OnlineStoreUnavailable, SourceUnavailable, StoredEntity
from .schema import FeatureSchema
from .values import BadKey, EntityKey, parse_key

log = logging.getLogger(__name__)

MAX_ENTITIES = 1000
MAX_ENTITY_ID_CHARS = 256


class ValueSource(enum.Enum):
    ONLINE_STORE = "ONLINE_STORE"
    READ_THROUGH = "READ_THROUGH"
    NOT_FOUND = "NOT_FOUND"


class FeatureResult(NamedTuple):
    value: object  # typed; None: null
    source: ValueSource
    event_time: datetime | None = None
    computed_at: datetime | None = None
    stale: bool = False


@dataclass(slots=True)
class EntityResult:
    """One entity's answer. Its features come from one place (one hash, or one source row), so they
    share their origin and times: kept once here, not per feature."""

    entity_id: str
    found: bool
    values: dict[str, object]  # the requested features, typed (None: null)
    source: ValueSource
    event_time: datetime | None = None
    computed_at: datetime | None = None
    stale: bool = False

    @property
    def read_through(self) -> bool:
        return self.source is ValueSource.READ_THROUGH

    @property
    def features(self) -> dict[str, FeatureResult]:
        return {name: FeatureResult(value, self.source, self.event_time, self.computed_at, self.stale)
                for name, value in self.values.items()}


@dataclass
class FeaturesResult:
    feature_view: str
    entities: list[EntityResult]
    read_through_count: int = 0
    online_store_unavailable: bool = False


def _now() -> datetime:
    return datetime.now(timezone.utc)


class FeatureReader:
    def __init__(self, schema: FeatureSchema, source: FeatureSource, online: OnlineStore, *,
                 source_timeout_s: float | None = None, clock: Callable[[], datetime] = _now):
        self._schema = schema
        self._source, self._online = source, online
        self._source_timeout_s = source_timeout_s
        self._clock = clock

    async def get_features(self, feature_view: str, entity_ids: Sequence[tuple[str, str]],
                           feature_names: Sequence[str] = (), *, read_through: bool = True) -> FeaturesResult:
        """`entity_ids`: (request field, id) pairs in answer order, e.g. ("entity_ids[3]", "42")."""
        view = self._schema.view(feature_view, field="feature_view")
        if not entity_ids:
            raise InvalidArgument("entity_ids", "at least one entity id is required")
        if len(entity_ids) > MAX_ENTITIES:
            raise InvalidArgument("entity_ids", f"at most {MAX_ENTITIES} entities per request, got {len(entity_ids)}",
                                  reason=ErrorReason.TOO_MANY_ENTITIES)
        keys = [self._key(view, field_name, text) for field_name, text in entity_ids]
        features = self._features(view, feature_names)
        unique = list(dict.fromkeys(keys))

        try:
            stored = await self._online.read(view, unique, features)
        except OnlineStoreUnavailable:
            rows = await self._computed(view, unique, "neither the online store (Redis) nor the feature source")
            results = {key: self._from_row(row, features, None) for key, row in rows.items()}
            return self._answer(view, entity_ids, keys, features, results, online_store_unavailable=True)

        now = self._clock()
        fresh: dict[EntityKey, StoredEntity] = {}
        stale: dict[EntityKey, StoredEntity] = {}
        missing: list[EntityKey] = []
        for key in unique:
            entity = stored.get(key)
            if entity is None or entity.definition_hash != view.definition_hash:
                missing.append(key)
            elif view.ttl is not None and now - entity.computed_at > view.ttl:
                stale[key] = entity
            else:
                fresh[key] = entity
        results: dict[EntityKey, tuple] = {
            key: self._from_store(entity, features, stale=False) for key, entity in fresh.items()}
        compute = read_through and view.compute_on_miss
        to_compute = (missing + list(stale)) if compute else []
        rows: dict[EntityKey, EntityRow] = {}
        if to_compute:
            try:
                rows = await self._computed(view, to_compute, "the feature source")
            except SourceUnavailable:
                if missing:
                    raise
                to_compute = []  # only stale values: served as they are, flagged
        computed_at = self._clock()
        for key in to_compute:
            row = rows.get(key)
            if row is not None:
                results[key] = self._from_row(row, features, computed_at)
        for key, entity in stale.items():
            results.setdefault(key, self._from_store(entity, features, stale=True))
        if rows:
            try:
                await self._online.write(view, list(rows.values()), computed_at)
            except OnlineStoreUnavailable:
                log.info("read-through of %s: could not write back %d entities", view.name, len(rows))
        return self._answer(view, entity_ids, keys, features, results)

    # ----- parts -----

    @staticmethod
    def _key(view: FeatureView, field_name: str, text: str) -> EntityKey:
        if len(text) > MAX_ENTITY_ID_CHARS:
            raise InvalidArgument(field_name, f"must be at most {MAX_ENTITY_ID_CHARS} characters, got {len(text)}")
        try:
            return parse_key(view, text)
        except BadKey as error:
            raise InvalidArgument(field_name, f"{error}, got {quoted(text)}") from None

    @staticmethod
    def _features(view: FeatureView, names: Sequence[str]) -> list[str]:
        if not names:
            return [feature.name for feature in view.features]
        declared = {feature.name for feature in view.features}
        if len(names) > len(declared):
            names = list(dict.fromkeys(names))
        for index, name in enumerate(names):
            if name not in declared:
                raise InvalidArgument(f"feature_names[{index}]", f"feature view {view.name} has no feature "
                                      f"{quoted(name)}", reason=ErrorReason.UNKNOWN_FEATURE)
        return list(dict.fromkeys(names))

    async def _computed(self, view: FeatureView, keys: Sequence[EntityKey], what: str) -> dict[EntityKey, EntityRow]:
        try:
            rows = await self._source.rows(view, keys, timeout_s=self._source_timeout_s)
        except SourceUnavailable:
            raise SourceUnavailable(what) from None
        return {row.key: row for row in rows}

    @staticmethod
    def _from_store(entity: StoredEntity, features: Sequence[str], *, stale: bool) -> tuple:
        values = entity.values
        return values if len(values) == len(features) else {name: values.get(name) for name in features}, \
            ValueSource.ONLINE_STORE, entity.event_time, entity.computed_at, stale

    def _from_row(self, row: EntityRow, features: Sequence[str], computed_at: datetime | None) -> tuple:
        values = row.values
        return {name: values.get(name) for name in features}, ValueSource.READ_THROUGH, row.event_time, \
            computed_at or self._clock(), False

    @staticmethod
    def _answer(view: FeatureView, entity_ids, keys, features, results, *,
                online_store_unavailable: bool = False) -> FeaturesResult:
        not_found = dict.fromkeys(features)
        answer = FeaturesResult(view.name, [], online_store_unavailable=online_store_unavailable)
        for (_, text), key in zip(entity_ids, keys):
            found = results.get(key)
            if found is None:
                answer.entities.append(EntityResult(text, False, not_found, ValueSource.NOT_FOUND))
                continue
            entity = EntityResult(text, True, *found)
            answer.entities.append(entity)
            if entity.source is ValueSource.READ_THROUGH:
                answer.read_through_count += len(features)
        return answer

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

import asyncio
import enum
import logging
from dataclasses import dataclass, field
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
MAX_VIEWS = 16
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
    values: dict[str, object]  # the requested features, typed (None: null), in the order asked for
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
    """One view's answer: an entity result per requested id, in request order."""

    feature_view: str
    entities: list[EntityResult]
    read_through_count: int = 0
    online_store_unavailable: bool = False
    feature_names: list[str] = field(default_factory=list)  # the answered features, in order


@dataclass
class ReadResult:
    """Several views' answers, in the selections' order."""

    views: list[FeaturesResult]
    online_store_unavailable: bool = False

    @property
    def read_through_count(self) -> int:
        return sum(view.read_through_count for view in self.views)


@dataclass(frozen=True)
class ViewSelection:
    """A view to read and which of its features (none: all). `field_prefix` names it in errors:
    None for "views[i].", "" for a request's top-level feature_view and feature_names."""

    feature_view: str
    feature_names: tuple[str, ...] = ()
    field_prefix: str | None = ""


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _keyed(view: FeatureView) -> str:
    return f"{view.entity.name} ({view.entity.key_type.value} key)"


async def _all(calls) -> list:
    """Every call's result, run at once; the first failure raised once all have ended (none left
    running with an error nobody reads)."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


class FeatureReader:
    def __init__(self, schema: FeatureSchema, source: FeatureSource, online: OnlineStore, *,
                 source_timeout_s: float | None = None, clock: Callable[[], datetime] = _now):
        self._schema = schema
        self._source, self._online = source, online
        self._source_timeout_s = source_timeout_s
        self._clock = clock

    async def get_features(self, feature_view: str, entity_ids: Sequence[tuple[str, str]],
                           feature_names: Sequence[str] = (), *, read_through: bool = True) -> FeaturesResult:
        """One view. `entity_ids`: (request field, id) pairs in answer order, e.g. ("entity_ids[3]", "42")."""
        answer = await self.read([ViewSelection(feature_view, tuple(feature_names))], entity_ids,
                                 read_through=read_through)
        return answer.views[0]

    async def read(self, selections: Sequence[ViewSelection], entity_ids: Sequence[tuple[str, str]], *,
                   read_through: bool = True) -> ReadResult:
        """Several views of one entity type, in one online-store round trip; one answer per view,
        in the selections' order, its entities in `entity_ids`' order."""
        if not selections:
            raise InvalidArgument("views", "at least one feature view is required")
        if len(selections) > MAX_VIEWS:
            raise InvalidArgument("views", f"at most {MAX_VIEWS} feature views per request, got {len(selections)}")
        chosen = self._chosen(selections)
        if not entity_ids:
            raise InvalidArgument("entity_ids", "at least one entity id is required")
        if len(entity_ids) > MAX_ENTITIES:
            raise InvalidArgument("entity_ids", f"at most {MAX_ENTITIES} entities per request, got {len(entity_ids)}",
                                  reason=ErrorReason.TOO_MANY_ENTITIES)
        first = chosen[0][0]
        keys = [self._key(first, field_name, text) for field_name, text in entity_ids]
        unique = list(dict.fromkeys(keys))

        try:
            stored = await self._online.read_views([(view, unique, features) for view, features in chosen])
        except OnlineStoreUnavailable:
            computed = await _all(self._computed(view, unique, "neither the online store (Redis) nor the feature source")
                                  for view, _ in chosen)
            views = [self._answer(view, entity_ids, keys, features,
                                  {key: self._from_row(row, features, None) for key, row in rows.items()},
                                  online_store_unavailable=True)
                     for (view, features), rows in zip(chosen, computed)]
            return ReadResult(views, online_store_unavailable=True)

        if len(chosen) == 1:  # no tasks for the common case
            results = [await self._complete(*chosen[0], unique, stored[0], read_through)]
        else:
            results = await _all(self._complete(view, features, unique, found, read_through)
                                 for (view, features), found in zip(chosen, stored))
        return ReadResult([self._answer(view, entity_ids, keys, features, found)
                           for (view, features), found in zip(chosen, results)])

    async def _complete(self, view: FeatureView, features: list[str], unique: list[EntityKey],
                        stored: dict[EntityKey, StoredEntity], read_through: bool) -> dict[EntityKey, tuple]:
        """One view's values: fresh ones as stored; missing or expired ones read through (and
        written back) where the view allows it; expired ones not recomputed, flagged stale."""
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
        return results

    def _chosen(self, selections: Sequence[ViewSelection]) -> list[tuple[FeatureView, list[str]]]:
        """Each selection's view and features, checked: known, each once, one entity type."""
        chosen: list[tuple[FeatureView, list[str]]] = []
        for index, selection in enumerate(selections):
            prefix = f"views[{index}]." if selection.field_prefix is None else selection.field_prefix
            view = self._schema.view(selection.feature_view, field=f"{prefix}feature_view")
            first = chosen[0][0] if chosen else view
            if (view.entity.name, view.entity.key_type) != (first.entity.name, first.entity.key_type):
                raise InvalidArgument(f"{prefix}feature_view", f"feature view {view.name} is keyed by "
                                      f"{_keyed(view)}, {first.name} by {_keyed(first)}: "
                                      "the views of one call share their entity")
            if any(view is seen for seen, _ in chosen):
                raise InvalidArgument(f"{prefix}feature_view", f"feature view {view.name} is asked for twice")
            chosen.append((view, self._features(view, selection.feature_names, f"{prefix}feature_names")))
        return chosen

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
    def _features(view: FeatureView, names: Sequence[str], field: str = "feature_names") -> list[str]:
        if not names:
            return [feature.name for feature in view.features]
        declared = {feature.name for feature in view.features}
        if len(names) > len(declared):
            names = list(dict.fromkeys(names))
        for index, name in enumerate(names):
            if name not in declared:
                raise InvalidArgument(f"{field}[{index}]", f"feature view {view.name} has no feature "
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
        answer = FeaturesResult(view.name, [], online_store_unavailable=online_store_unavailable,
                                feature_names=list(features))
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

"""Feature views: a declared group of typed features of one entity, computed by a SQL query.

A view is valid by construction: __post_init__ checks every rule and names the offending
field by its path (InvalidDefinition), so whoever read the declaration can point at the line.
`definition_hash` is a sha256 of a canonical form of the whole view: any change to any field
changes it, while how the declaration was written (key order, spacing) does not.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import timedelta

from croniter import croniter

from .errors import InvalidDefinition, Path

NAME_PATTERN = "[a-z][a-z0-9_]{0,63}"
MAX_NAME_CHARS = 64
MAX_FEATURES = 200
MAX_DESCRIPTION_CHARS = 2000
MAX_DIMENSION = 65_536
MAX_TAGS = 32
MAX_TAG_VALUE_CHARS = 256
MAX_TTL = timedelta(days=36_500)

_NAME = re.compile(NAME_PATTERN)
_TAG_KEY = re.compile(r"[A-Za-z0-9_.-]{1,63}")
_CRON_FIELD = re.compile(r"[0-9A-Za-z*/,?-]+")
# What may hold a `;` that does not end a statement: string literals, quoted identifiers and
# comments. (Dollar-quoted bodies are not recognised: a `;` inside one is refused, safely.)
_SQL_NOT_CODE = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.S)
# What makes a source query's rows depend on when it runs, or fold many events into one row:
# such a view cannot be read as of a past time by filtering its rows on their event time.
_NOT_POINT_IN_TIME = re.compile(
    r"\bgroup\s+by\b|\b(?:now|clock_timestamp|statement_timestamp|transaction_timestamp)\s*\(|"
    r"\b(?:current_timestamp|current_date|current_time|localtimestamp|localtime)\b", re.I)


class ValueType(enum.Enum):
    """The type of a feature's value (and of an entity's key)."""

    INT = "int"
    FLOAT = "float"
    STRING = "string"
    BOOL = "bool"
    INT_LIST = "int_list"
    FLOAT_LIST = "float_list"  # an embedding when its dimension is fixed
    STRING_LIST = "string_list"


KEY_TYPES = (ValueType.INT, ValueType.STRING)


@dataclass(frozen=True)
class Entity:
    """What a view's rows are about: `user`, keyed by the source column `user_id`."""

    name: str
    join_key: str
    key_type: ValueType = ValueType.INT
    description: str = ""


@dataclass(frozen=True)
class Feature:
    name: str
    type: ValueType
    description: str = ""
    dimension: int | None = None  # the fixed length of a FLOAT_LIST (an embedding)


@dataclass(frozen=True)
class Source:
    """A PostgreSQL query returning the join key, the features and the event-time column."""

    query: str
    event_time_column: str

    def __post_init__(self) -> None:
        # A trailing `;` and surrounding blanks are how it was written, not what it means.
        if isinstance(self.query, str):
            object.__setattr__(self, "query", self.query.strip().removesuffix(";").rstrip())


@dataclass(frozen=True)
class FeatureView:
    name: str
    entity: Entity
    features: tuple[Feature, ...]
    source: Source
    description: str = ""
    ttl: timedelta | None = None  # how long an online value stays fresh; None: forever
    compute_on_miss: bool = False  # read-through: a value missing online is computed from the source
    materialization_schedule: str = ""  # five-field cron; empty: only on demand
    tags: tuple[tuple[str, str], ...] = ()  # sorted (key, value) pairs; a dict is accepted
    # Whether the view can be read as of a past time (training sets): its source rows are a history,
    # each valid from its event time on. None: decided from the query (see point_in_time_capable).
    point_in_time: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        tags = self.tags.items() if isinstance(self.tags, dict) else self.tags
        object.__setattr__(self, "tags", tuple(sorted(tags)))
        _check_view(self)

    def __hash__(self) -> int:
        # Views key caches on the read path: hashing every field of the declaration on each
        # lookup cost tens of microseconds a call. Equal views have equal names and definitions.
        return hash((self.name, self.definition_hash))

    @functools.cached_property
    def definition_hash(self) -> str:
        """sha256 (hex) of the canonical form: sorted keys, no spacing, enums by value, TTL in seconds."""
        fields = dataclasses.asdict(self)
        if fields["point_in_time"] is None:
            del fields["point_in_time"]  # absent: the hash of a view declared before the flag existed
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False, default=_json_value)
        return hashlib.sha256(canonical.encode()).hexdigest()


    @property
    def point_in_time_capable(self) -> bool:
        """Whether "the row with the greatest event time at or before t" is the view's value as of t.
        Declared (point_in_time), else false for a query that groups rows (GROUP BY: an aggregate's
        event time is its newest row's, its value folds in rows of every time) or reads the clock
        (now(), current_timestamp, ...: windows relative to when it runs, not to t)."""
        if self.point_in_time is not None:
            return self.point_in_time
        return _NOT_POINT_IN_TIME.search(_SQL_NOT_CODE.sub(" ", self.source.query)) is None


def is_name(value: object) -> bool:
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def _json_value(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"not part of a definition: {value!r}")


# ----- the rules, each naming the field it checks -----

def _check_view(view: FeatureView) -> None:
    _check_name(("name",), view.name)
    _check_description(("description",), view.description)
    _check_entity(view.entity)
    _check_source(view.source)
    if view.source.event_time_column == view.entity.join_key:
        raise InvalidDefinition(("source", "event_time_column"), "must differ from the entity's join key")
    _check_features(view)  # after the two it refers to
    _check_ttl(view.ttl)
    _check_schedule(view.materialization_schedule)
    _check_tags(view.tags)
    if not isinstance(view.compute_on_miss, bool):
        raise InvalidDefinition(("compute_on_miss",), "must be true or false")
    if view.point_in_time is not None and not isinstance(view.point_in_time, bool):
        raise InvalidDefinition(("point_in_time",), "must be true or false (or absent: decided from the query)")


def _check_name(path: Path, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidDefinition(path, "is required")
    if len(value) > MAX_NAME_CHARS:
        raise InvalidDefinition(path, f"must be at most {MAX_NAME_CHARS} characters, got {len(value)}")
    if not is_name(value):
        raise InvalidDefinition(path, f"must match {NAME_PATTERN} (lower case, digits, _), got {value!r}")


def _check_description(path: Path, value: object) -> None:
    if not isinstance(value, str):
        raise InvalidDefinition(path, "must be text")
    if len(value) > MAX_DESCRIPTION_CHARS:
        raise InvalidDefinition(path, f"must be at most {MAX_DESCRIPTION_CHARS} characters, got {len(value)}")


def _check_entity(entity: Entity) -> None:
    if not isinstance(entity, Entity):
        raise InvalidDefinition(("entity",), "is required")
    _check_name(("entity", "name"), entity.name)
    _check_name(("entity", "join_key"), entity.join_key)
    if entity.key_type not in KEY_TYPES:
        raise InvalidDefinition(("entity", "key_type"), "must be one of " + ", ".join(t.value for t in KEY_TYPES))
    _check_description(("entity", "description"), entity.description)


def _check_features(view: FeatureView) -> None:
    if not view.features:
        raise InvalidDefinition(("features",), "declare at least one feature")
    if len(view.features) > MAX_FEATURES:
        raise InvalidDefinition(("features",), f"must be at most {MAX_FEATURES} features, got {len(view.features)}")
    # The query returns the key and the event time beside the features: one name, one column.
    taken = {view.entity.join_key: "the entity's join key", view.source.event_time_column: "the event-time column"}
    for index, feature in enumerate(view.features):
        _check_feature(("features", index), feature)
        if feature.name in taken:
            raise InvalidDefinition(("features", index, "name"), f"{feature.name!r} is already {taken[feature.name]}")
        taken[feature.name] = f"the name of features[{index}]"


def _check_feature(path: Path, feature: Feature) -> None:
    _check_name((*path, "name"), feature.name)
    if not isinstance(feature.type, ValueType):
        raise InvalidDefinition((*path, "type"), "must be one of " + ", ".join(t.value for t in ValueType))
    _check_description((*path, "description"), feature.description)
    if feature.dimension is None:
        return
    if feature.type is not ValueType.FLOAT_LIST:
        raise InvalidDefinition((*path, "dimension"), "only a float list (an embedding) has a dimension")
    if isinstance(feature.dimension, bool) or not isinstance(feature.dimension, int) \
            or not 1 <= feature.dimension <= MAX_DIMENSION:
        raise InvalidDefinition((*path, "dimension"), f"must be an integer from 1 to {MAX_DIMENSION}")


def _check_source(source: Source) -> None:
    if not isinstance(source, Source):
        raise InvalidDefinition(("source",), "is required")
    if not isinstance(source.query, str) or not source.query:
        raise InvalidDefinition(("source", "query"), "is required: a PostgreSQL query")
    if ";" in _SQL_NOT_CODE.sub(" ", source.query):
        raise InvalidDefinition(("source", "query"), "must be a single statement (a `;` may only end it)")
    _check_name(("source", "event_time_column"), source.event_time_column)


def _check_ttl(ttl: object) -> None:
    if ttl is None:
        return
    if not isinstance(ttl, timedelta) or ttl <= timedelta(0):
        raise InvalidDefinition(("ttl",), "must be a positive duration (or absent: values never expire)")
    if ttl > MAX_TTL:
        raise InvalidDefinition(("ttl",), f"must be at most {MAX_TTL.days} days (or absent: values never expire)")


def _check_schedule(schedule: object) -> None:
    # Five fields of the shape below, and an expression croniter (the scheduler's parser) takes.
    if not isinstance(schedule, str):
        raise InvalidDefinition(("materialization_schedule",), "must be text")
    fields = schedule.split()
    if fields and (len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields)
                   or not croniter.is_valid(schedule)):
        raise InvalidDefinition(("materialization_schedule",),
                                f"must be a five-field cron expression such as '*/15 * * * *', got {schedule!r}")


def _check_tags(tags: tuple[tuple[str, str], ...]) -> None:
    if len(tags) > MAX_TAGS:
        raise InvalidDefinition(("tags",), f"must be at most {MAX_TAGS} tags, got {len(tags)}")
    for key, value in tags:
        if not isinstance(key, str) or not _TAG_KEY.fullmatch(key):
            raise InvalidDefinition(("tags", str(key)), "a tag's key must be 1 to 63 of A-Z a-z 0-9 _ . -")
        if not isinstance(value, str) or len(value) > MAX_TAG_VALUE_CHARS:
            raise InvalidDefinition(("tags", key), f"must be text of at most {MAX_TAG_VALUE_CHARS} characters")

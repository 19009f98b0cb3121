"""Typed values: entity keys as a view declares them, feature values as their declared type.

Sources return what their columns hold (a numeric aggregate is a Decimal, a real[] a list of
floats, a timestamp without time zone a naive datetime); `coerce` turns each into the
declared type, so the online store and every answer carry one form per type.
"""

from __future__ import annotations

import itertools
import logging
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal

from .feature_views import Feature, FeatureView, ValueType

log = logging.getLogger(__name__)

EntityKey = int | str
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_STRING_KEY_CHARS = 256
_INT = re.compile(r"-?[0-9]{1,19}")


class BadKey(ValueError):
    """An entity id that is not a key of the view's key type (the message says why, without the id)."""


def parse_key(view: FeatureView, text: str) -> EntityKey:
    """The key an entity id (always text on the wire) stands for."""
    if view.entity.key_type is ValueType.INT:
        if not _INT.fullmatch(text):
            raise BadKey(f"must be an integer ({view.entity.join_key} of view {view.name} is an int key)")
        value = int(text)
        if not INT64_MIN <= value <= INT64_MAX:
            raise BadKey("must fit in 64 bits")
        return value
    if not text:
        raise BadKey("must not be empty")
    if len(text) > MAX_STRING_KEY_CHARS:
        raise BadKey(f"must be at most {MAX_STRING_KEY_CHARS} characters, got {len(text)}")
    return text


def key_text(key: EntityKey) -> str:
    return str(key)


def key_from_text(view: FeatureView, text: str) -> EntityKey:
    return int(text) if view.entity.key_type is ValueType.INT else text


def utc(value: object) -> datetime | None:
    """An event time as an aware UTC datetime (a naive one is read as UTC); None when not a time."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return None


class _Mismatch(Exception):
    pass


def _scalar(kind: ValueType, value: object) -> object:
    if kind is ValueType.INT:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, (float, Decimal)) and math.isfinite(value) and value == int(value):
            return int(value)
        if isinstance(value, str) and _INT.fullmatch(value.strip()):
            return int(value)
        raise _Mismatch
    if kind is ValueType.FLOAT:
        if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if kind is ValueType.BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _Mismatch
    if kind is ValueType.STRING:
        return value if isinstance(value, str) else str(value)
    raise _Mismatch


_ELEMENT = {ValueType.INT_LIST: ValueType.INT, ValueType.FLOAT_LIST: ValueType.FLOAT,
            ValueType.STRING_LIST: ValueType.STRING}


def coerce(feature: Feature, value: object, *, view: str = "") -> object:
    """The value in its declared type's Python form (int, float, str, bool, list); None for null
    and for a value that does not convert (logged: the view's query disagrees with its declaration)."""
    if value is None:
        return None
    try:
        element = _ELEMENT.get(feature.type)
        if element is None:
            return _scalar(feature.type, value)
        if not isinstance(value, (list, tuple)) or any(item is None for item in value):
            raise _Mismatch
        return [_scalar(element, item) for item in value]
    except (_Mismatch, OverflowError, ValueError):
        log.warning("feature %s.%s: a %s value does not convert to %s; served as null", view, feature.name,
                    type(value).__name__, feature.type.value)
        return None


_NATIVE = {ValueType.INT: int, ValueType.FLOAT: float, ValueType.STRING: str, ValueType.BOOL: bool}


def converter(feature: Feature, view: str = "") -> Callable[[object], object]:
    """`coerce` for one feature, with the common case first: a value already of the declared type
    (what a source query of the right column types returns) is kept as it is, at once."""
    native = _NATIVE.get(feature.type)
    if native is not None:
        def convert(value: object) -> object:
            if value is None or type(value) is native:
                return value
            return coerce(feature, value, view=view)
    else:
        element = _NATIVE[_ELEMENT[feature.type]]

        def convert(value: object) -> object:
            if type(value) is list and all(type(item) is element for item in value):
                return value
            return coerce(feature, value, view=view)
    return convert


_NONE = type(None)


def _already_typed(feature: Feature, column: list) -> bool:
    """Whether every value of the column has the feature's declared type (or is null), so that
    it needs no conversion. Checked with map(type) over the whole column: C speed."""
    native = _NATIVE.get(feature.type)
    if native is not None:
        return set(map(type, column)) <= {native, _NONE}
    if not set(map(type, column)) <= {list, _NONE}:
        return False
    element = _NATIVE[_ELEMENT[feature.type]]
    return set(map(type, itertools.chain.from_iterable(filter(None, column)))) <= {element}


def batch_values(view: FeatureView, records: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    """`row_values` of every record, column by column: a column already of its declared type (the
    common case, a source query of the right column types) is taken as it is, the others are
    converted value by value."""
    if not records:
        return []
    present = set(records[0].keys())
    columns = []
    for feature in view.features:
        if feature.name not in present:
            columns.append([None] * len(records))
            continue
        column = list(map(operator.itemgetter(feature.name), records))
        if not _already_typed(feature, column):
            convert = converter(feature, view.name)
            column = [convert(value) for value in column]
        columns.append(column)
    names = [feature.name for feature in view.features]
    return [dict(zip(names, row)) for row in zip(*columns)]


def row_values(view: FeatureView, columns: Mapping[str, object]) -> dict[str, object]:
    """A source row's features, typed; a feature the row lacks is null."""
    return {f.name: coerce(f, columns.get(f.name), view=view.name) for f in view.features}

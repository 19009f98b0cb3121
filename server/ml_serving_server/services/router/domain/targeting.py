"""Who may enter an experiment: targeting rules on user segments and attributes.

A rule (the proto's TargetingRule) is parsed once, when an experiment is created or
changed, into a `TargetingRule` whose `matches(attributes, segments)` runs on every
assignment; parsing checks everything and names the offending field, so a stored rule
always evaluates without errors. Empty rule: everyone matches.

Semantics (the same in the server and the client library):

* include_segments: the user is in at least one of them (empty: no requirement);
  exclude_segments: the user is in none of them; conditions: all hold.
* A condition's attribute is a key of the request's attributes; dots reach into nested
  objects ("device.os" is attributes["device"]["os"]). A top-level key spelled exactly
  like the path ("device.os") wins over the nested walk.
* Values are strings, numbers or booleans (no null, list or object operands). Equality
  is typed: a number equals a number of the same value (1 == 1.0, as protobuf's Struct
  sends every number as a double), a string a string, a boolean a boolean ("1" != 1,
  true != 1).
* EQUALS / IN: the attribute equals the value / one of the values. NOT_EQUALS / NOT_IN:
  the negation, so they also hold when the attribute is absent or null.
* GREATER_THAN, GREATER_OR_EQUAL, LESS_THAN, LESS_OR_EQUAL: the operand is a finite
  number; an attribute that is not a number (absent, null, string, boolean) fails.
* EXISTS: the attribute is present and not null (values are ignored, but still bounded).
* CONTAINS: the attribute is a list holding an element equal to the value.

Plain Python, no I/O: no gRPC, protobuf, Redis or HTTP (an import-linter contract checks).
"""

from __future__ import annotations

import enum
import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Mapping, Sequence

from ....errors import InvalidArgument, quoted
from .errors import ErrorReason

__all__ = [
    "EMPTY_TARGETING",
    "AttributeCondition",
    "AttributeOperator",
    "TargetingRule",
    "parse_targeting",
]

# ----- limits (bounded sizes: a rule's evaluation cost and stored size stay small) -----
MAX_SEGMENTS = 100  # names in include_segments, and in exclude_segments
MAX_SEGMENT_LENGTH = 128
MAX_CONDITIONS = 32
MAX_VALUES = 100  # operands of one condition
MAX_ATTRIBUTE_LENGTH = 256  # the attribute path, dots included
MAX_ATTRIBUTE_DEPTH = 8  # parts of a dotted path
MAX_STRING_VALUE_LENGTH = 256  # one string operand


class AttributeOperator(enum.Enum):
    """How a condition compares an attribute; values are the proto's enum numbers."""

    EQUALS = 1
    NOT_EQUALS = 2
    IN = 3
    NOT_IN = 4
    GREATER_THAN = 5
    GREATER_OR_EQUAL = 6
    LESS_THAN = 7
    LESS_OR_EQUAL = 8
    EXISTS = 9
    CONTAINS = 10


_SINGLE_VALUE = frozenset({
    AttributeOperator.EQUALS, AttributeOperator.NOT_EQUALS, AttributeOperator.CONTAINS,
    AttributeOperator.GREATER_THAN, AttributeOperator.GREATER_OR_EQUAL,
    AttributeOperator.LESS_THAN, AttributeOperator.LESS_OR_EQUAL,
})
_NUMERIC = frozenset({
    AttributeOperator.GREATER_THAN, AttributeOperator.GREATER_OR_EQUAL,
    AttributeOperator.LESS_THAN, AttributeOperator.LESS_OR_EQUAL,
})
_PROTO_PREFIX = "ATTRIBUTE_OPERATOR_"

Scalar = str | float | int | bool
_MISSING = object()


def _key(value: Any) -> tuple[str, Any] | None:
    """A typed equality key: equal keys <=> equal values under the rules above.
    (1 and 1.0 give equal keys with equal hashes; True and 1 do not.)"""
    kind = type(value)
    if kind is str:
        return ("s", value)
    if kind is float or kind is int:
        return ("n", value)
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _lookup_function(attribute: str) -> Callable[[Mapping[str, Any]], Any]:
    """attributes -> the attribute's value, or _MISSING."""
    parts = attribute.split(".")
    if len(parts) == 1:
        return lambda attributes: attributes.get(attribute, _MISSING)

    def lookup(attributes: Mapping[str, Any]) -> Any:
        value = attributes.get(attribute, _MISSING)  # a flat key spelled like the path wins
        if value is not _MISSING:
            return value
        value = attributes
        for part in parts:
            if not isinstance(value, Mapping):
                return _MISSING
            value = value.get(part, _MISSING)
            if value is _MISSING:
                return _MISSING
        return value

    return lookup


def _compile(attribute: str, op: AttributeOperator, values: tuple[Scalar, ...]) -> Callable[[Mapping[str, Any]], bool]:
    """The condition as one function of the attributes (no dispatch on the hot path)."""
    lookup = _lookup_function(attribute)
    keys = frozenset(_key(v) for v in values)
    if op is AttributeOperator.EQUALS or op is AttributeOperator.IN:
        return lambda attributes: _key(lookup(attributes)) in keys
    if op is AttributeOperator.NOT_EQUALS or op is AttributeOperator.NOT_IN:
        return lambda attributes: _key(lookup(attributes)) not in keys
    if op is AttributeOperator.EXISTS:
        def exists(attributes: Mapping[str, Any]) -> bool:
            value = lookup(attributes)
            return value is not _MISSING and value is not None
        return exists
    if op is AttributeOperator.CONTAINS:
        def contains(attributes: Mapping[str, Any]) -> bool:
            value = lookup(attributes)
            return isinstance(value, (list, tuple)) and any(_key(item) in keys for item in value)
        return contains
    compare = {
        AttributeOperator.GREATER_THAN: operator.gt, AttributeOperator.GREATER_OR_EQUAL: operator.ge,
        AttributeOperator.LESS_THAN: operator.lt, AttributeOperator.LESS_OR_EQUAL: operator.le,
    }[op]
    number = values[0]

    def numeric(attributes: Mapping[str, Any]) -> bool:
        value = lookup(attributes)  # Python compares ints and floats exactly, without overflow
        return _is_number(value) and compare(value, number)

    return numeric


def _invalid(field_name: str, message: str) -> InvalidArgument:
    return InvalidArgument(field_name, message, reason=ErrorReason.INVALID_TARGETING)


@dataclass(frozen=True)
class AttributeCondition:
    """One checked condition. Build it with `parse_targeting` (which validates); it is
    compiled once, here, into the function `holds` calls."""

    attribute: str
    operator: AttributeOperator
    values: tuple[Scalar, ...] = ()
    _test: Callable[[Mapping[str, Any]], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_test", _compile(self.attribute, self.operator, self.values))

    def holds(self, attributes: Mapping[str, Any]) -> bool:
        """Whether the condition holds for these attributes (compiled in __post_init__)."""
        return self._test(attributes)

    def as_data(self) -> dict[str, Any]:
        return {"attribute": self.attribute, "operator": self.operator.name, "values": list(self.values)}


@dataclass(frozen=True)
class TargetingRule:
    """A checked targeting rule; `matches` is what assignment calls."""

    include_segments: tuple[str, ...] = ()
    exclude_segments: tuple[str, ...] = ()
    conditions: tuple[AttributeCondition, ...] = ()
    _include: frozenset[str] = field(init=False, repr=False, compare=False)
    _exclude: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_include", frozenset(self.include_segments))
        object.__setattr__(self, "_exclude", frozenset(self.exclude_segments))

    @property
    def is_empty(self) -> bool:
        """True when everyone matches (assignment skips the rule)."""
        return not (self.include_segments or self.exclude_segments or self.conditions)

    def matches(self, attributes: Mapping[str, Any] | None = None, segments: Collection[str] = ()) -> bool:
        """Whether a user with these attributes and segments may enter."""
        if self._include and self._include.isdisjoint(segments):
            return False
        if self._exclude and not self._exclude.isdisjoint(segments):
            return False
        if self.conditions:
            attributes = attributes if attributes is not None else {}
            for condition in self.conditions:
                if not condition.holds(attributes):
                    return False
        return True

    def as_data(self) -> dict[str, Any]:
        """Plain JSON-able data; `parse_targeting(rule.as_data())` gives the rule back."""
        return {"include_segments": list(self.include_segments),
                "exclude_segments": list(self.exclude_segments),
                "conditions": [c.as_data() for c in self.conditions]}


EMPTY_TARGETING = TargetingRule()


# ----- parsing -----

def _sequence(value: Any, field_name: str, limit: int, what: str) -> Sequence[Any]:
    if value is None:
        return ()
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (Sequence, Collection)):
        raise _invalid(field_name, f"must be a list of {what}")
    values = list(value) if not isinstance(value, Sequence) else value
    if len(values) > limit:
        raise _invalid(field_name, f"must hold at most {limit} {what}, got {len(values)}")
    return values


def _segments(value: Any, field_name: str) -> tuple[str, ...]:
    names = _sequence(value, field_name, MAX_SEGMENTS, "segments")
    seen: set[str] = set()
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise _invalid(f"{field_name}[{index}]", "must be a non-empty segment name")
        if len(name) > MAX_SEGMENT_LENGTH:
            raise _invalid(f"{field_name}[{index}]", f"must be at most {MAX_SEGMENT_LENGTH} characters")
        if not name.isprintable():
            raise _invalid(f"{field_name}[{index}]", "must not hold control characters")
        if name in seen:
            raise _invalid(f"{field_name}[{index}]", f"repeats segment {quoted(name)}")
        seen.add(name)
    return tuple(names)


def _operator(value: Any, field_name: str) -> AttributeOperator:
    if isinstance(value, AttributeOperator):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return AttributeOperator(value)
        except ValueError:
            pass
    elif isinstance(value, str):
        name = value[len(_PROTO_PREFIX):] if value.startswith(_PROTO_PREFIX) else value
        if name in AttributeOperator.__members__:
            return AttributeOperator[name]
    raise _invalid(field_name, f"must be one of {', '.join(AttributeOperator.__members__)}, got {quoted(value)}")


def _value(value: Any, field_name: str, numeric: bool) -> Scalar:
    if numeric:
        if not _is_number(value) or not math.isfinite(value):
            raise _invalid(field_name, f"must be a finite number for a numeric comparison, got {quoted(value)}")
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING_VALUE_LENGTH:
            raise _invalid(field_name, f"must be at most {MAX_STRING_VALUE_LENGTH} characters")
        return value
    if isinstance(value, bool):
        return value
    if _is_number(value):
        if not math.isfinite(value):
            raise _invalid(field_name, "must be a finite number")
        return value
    raise _invalid(field_name, f"must be a string, number or boolean, got {type(value).__name__}")


def _attribute(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not value:
        raise _invalid(field_name, "is required: the attribute's key (dots reach into nested objects)")
    if len(value) > MAX_ATTRIBUTE_LENGTH:
        raise _invalid(field_name, f"must be at most {MAX_ATTRIBUTE_LENGTH} characters")
    parts = value.split(".")
    if len(parts) > MAX_ATTRIBUTE_DEPTH:
        raise _invalid(field_name, f"must be at most {MAX_ATTRIBUTE_DEPTH} levels deep")
    if not all(parts) or not value.isprintable():
        raise _invalid(field_name, f"must be keys joined by single dots, got {quoted(value)}")
    return value


_CONDITION_KEYS = frozenset({"attribute", "operator", "values"})
_RULE_KEYS = frozenset({"include_segments", "exclude_segments", "conditions"})


def _condition(data: Any, field_name: str) -> AttributeCondition:
    if isinstance(data, AttributeCondition):
        data = data.as_data()
    if not isinstance(data, Mapping):
        raise _invalid(field_name, "must be an object with attribute, operator and values")
    unknown = set(data) - _CONDITION_KEYS
    if unknown:
        raise _invalid(f"{field_name}.{sorted(map(str, unknown))[0]}", "is not a field of AttributeCondition")
    attribute = _attribute(data.get("attribute"), f"{field_name}.attribute")
    operator = _operator(data.get("operator"), f"{field_name}.operator")
    raw = _sequence(data.get("values"), f"{field_name}.values", MAX_VALUES, "values")
    if operator in _SINGLE_VALUE and len(raw) != 1:
        raise _invalid(f"{field_name}.values", f"{operator.name} takes exactly one value, got {len(raw)}")
    if operator in (AttributeOperator.IN, AttributeOperator.NOT_IN) and not raw:
        raise _invalid(f"{field_name}.values", f"{operator.name} takes one or more values")
    numeric = operator in _NUMERIC
    values = tuple(_value(v, f"{field_name}.values[{i}]", numeric) for i, v in enumerate(raw))
    if operator is AttributeOperator.EXISTS:
        values = ()  # ignored, as the contract says (but bounded and checked above)
    return AttributeCondition(attribute, operator, values)


def parse_targeting(data: Mapping[str, Any] | TargetingRule | None,
                    field_name: str = "experiment.targeting") -> TargetingRule:
    """Check a targeting rule given as plain data, shaped as the proto's TargetingRule in
    JSON with proto field names: {"include_segments": [...], "exclude_segments": [...],
    "conditions": [{"attribute": "country", "operator": "IN", "values": ["DE", "FR"]}]}.
    Operators may be spelled "IN" or "ATTRIBUTE_OPERATOR_IN", or be the enum's number.

    Raises InvalidArgument (INVALID_TARGETING) naming the offending field, e.g.
    "experiment.targeting.conditions[2].values[0]".
    """
    if data is None:
        return EMPTY_TARGETING
    if isinstance(data, TargetingRule):
        data = data.as_data()
    if not isinstance(data, Mapping):
        raise _invalid(field_name, "must be an object with include_segments, exclude_segments and conditions")
    unknown = set(data) - _RULE_KEYS
    if unknown:
        raise _invalid(f"{field_name}.{sorted(map(str, unknown))[0]}", "is not a field of TargetingRule")
    include = _segments(data.get("include_segments"), f"{field_name}.include_segments")
    exclude = _segments(data.get("exclude_segments"), f"{field_name}.exclude_segments")
    both = set(include) & set(exclude)
    if both:
        raise _invalid(f"{field_name}.exclude_segments",
                       f"segment {quoted(sorted(both)[0])} is both included and excluded: nobody could match")
    raw_conditions = _sequence(data.get("conditions"), f"{field_name}.conditions", MAX_CONDITIONS, "conditions")
    conditions = tuple(_condition(c, f"{field_name}.conditions[{i}]") for i, c in enumerate(raw_conditions))
    rule = TargetingRule(include, exclude, conditions)
    return EMPTY_TARGETING if rule.is_empty else rule

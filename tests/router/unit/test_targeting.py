"""Targeting rules: parsing with errors that name the field, and evaluation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_serving_server.errors import InvalidArgument
from ml_serving_server.services.router.domain.targeting import (
    EMPTY_TARGETING,
    MAX_ATTRIBUTE_DEPTH,
    MAX_CONDITIONS,
    MAX_SEGMENTS,
    MAX_VALUES,
    AttributeOperator,
    ErrorReason,
    TargetingRule,
    parse_targeting,
)


def condition(attribute: str, operator: str, *values) -> TargetingRule:
    return parse_targeting({"conditions": [{"attribute": attribute, "operator": operator, "values": list(values)}]})


def test_an_empty_rule_lets_everyone_in():
    for data in (None, {}, {"include_segments": [], "exclude_segments": [], "conditions": []}):
        rule = parse_targeting(data)
        assert rule is EMPTY_TARGETING and rule.is_empty
        assert rule.matches(None, ()) and rule.matches({"x": 1}, ["premium"])


def test_segments():
    rule = parse_targeting({"include_segments": ["premium", "beta"], "exclude_segments": ["bots"]})
    assert rule.matches({}, ["premium"]) and rule.matches({}, ("beta", "other"))
    assert not rule.matches({}, []) and not rule.matches({}, ["free"])
    assert not rule.matches({}, ["premium", "bots"])
    excluding = parse_targeting({"exclude_segments": ["bots"]})
    assert excluding.matches(None, []) and not excluding.matches(None, {"bots"})


CASES = [
    # (operator, values, attributes, expected)
    ("EQUALS", ["DE"], {"country": "DE"}, True),
    ("EQUALS", ["DE"], {"country": "de"}, False),
    ("EQUALS", ["DE"], {}, False),
    ("EQUALS", [1], {"country": 1.0}, True),  # Struct numbers are doubles
    ("EQUALS", [1.0], {"country": 1}, True),
    ("EQUALS", ["1"], {"country": 1}, False),  # typed
    ("EQUALS", [True], {"country": 1}, False),
    ("EQUALS", [1], {"country": True}, False),
    ("EQUALS", [True], {"country": True}, True),
    ("EQUALS", ["DE"], {"country": ["DE"]}, False),
    ("EQUALS", ["DE"], {"country": None}, False),
    ("NOT_EQUALS", ["DE"], {"country": "FR"}, True),
    ("NOT_EQUALS", ["DE"], {"country": "DE"}, False),
    ("NOT_EQUALS", ["DE"], {}, True),  # absent
    ("NOT_EQUALS", ["DE"], {"country": None}, True),
    ("IN", ["DE", "FR"], {"country": "FR"}, True),
    ("IN", ["DE", "FR"], {"country": "US"}, False),
    ("IN", ["DE", 3], {"country": 3.0}, True),
    ("IN", ["DE"], {}, False),
    ("NOT_IN", ["DE", "FR"], {"country": "US"}, True),
    ("NOT_IN", ["DE", "FR"], {"country": "DE"}, False),
    ("NOT_IN", ["DE", "FR"], {}, True),
    ("GREATER_THAN", [18], {"country": 19}, True),
    ("GREATER_THAN", [18], {"country": 18}, False),
    ("GREATER_THAN", [18], {"country": 18.5}, True),
    ("GREATER_THAN", [18], {"country": "19"}, False),  # not a number
    ("GREATER_THAN", [18], {"country": True}, False),
    ("GREATER_THAN", [18], {}, False),
    ("GREATER_THAN", [1e300], {"country": 10 ** 400}, True),  # exact int/float comparison, no overflow
    ("GREATER_THAN", [0], {"country": float("nan")}, False),
    ("GREATER_OR_EQUAL", [18], {"country": 18}, True),
    ("GREATER_OR_EQUAL", [18], {"country": 17.99}, False),
    ("LESS_THAN", [18], {"country": 17}, True),
    ("LESS_THAN", [18], {"country": 18}, False),
    ("LESS_OR_EQUAL", [18], {"country": 18.0}, True),
    ("LESS_OR_EQUAL", [18], {"country": 18.01}, False),
    ("EXISTS", [], {"country": ""}, True),
    ("EXISTS", [], {"country": False}, True),
    ("EXISTS", [], {"country": None}, False),
    ("EXISTS", [], {}, False),
    ("EXISTS", ["ignored"], {"country": 0}, True),
    ("CONTAINS", ["gpu"], {"country": ["cpu", "gpu"]}, True),
    ("CONTAINS", ["gpu"], {"country": ["cpu"]}, False),
    ("CONTAINS", ["gpu"], {"country": "gpu"}, False),  # a string is not a list
    ("CONTAINS", [2], {"country": [1, 2.0]}, True),
    ("CONTAINS", ["gpu"], {"country": [{"x": 1}, ["gpu"]]}, False),
    ("CONTAINS", ["gpu"], {}, False),
]


@pytest.mark.parametrize("operator, values, attributes, expected", CASES)
def test_operators(operator, values, attributes, expected):
    assert condition("country", operator, *values).matches(attributes) is expected


def test_operators_may_be_spelled_as_in_the_proto():
    for spelling in ("IN", "ATTRIBUTE_OPERATOR_IN", 3, AttributeOperator.IN):
        rule = parse_targeting({"conditions": [{"attribute": "c", "operator": spelling, "values": ["x"]}]})
        assert rule.conditions[0].operator is AttributeOperator.IN


def test_dots_reach_into_nested_objects():
    rule = condition("device.os.name", "EQUALS", "ios")
    assert rule.matches({"device": {"os": {"name": "ios"}}})
    assert not rule.matches({"device": {"os": "ios"}})
    assert not rule.matches({"device": ["os"]})
    assert not rule.matches({"device": {}})
    assert rule.matches({"device.os.name": "ios"})  # a flat key spelled like the path wins
    assert not rule.matches({"device.os.name": "android", "device": {"os": {"name": "ios"}}})


def test_all_conditions_must_hold_and_segments_too():
    rule = parse_targeting({
        "include_segments": ["premium"],
        "conditions": [
            {"attribute": "country", "operator": "IN", "values": ["DE", "FR"]},
            {"attribute": "age", "operator": "GREATER_OR_EQUAL", "values": [18]},
        ],
    })
    assert rule.matches({"country": "DE", "age": 30}, ["premium"])
    assert not rule.matches({"country": "DE", "age": 17}, ["premium"])
    assert not rule.matches({"country": "US", "age": 30}, ["premium"])
    assert not rule.matches({"country": "DE", "age": 30}, [])
    assert not rule.matches(None, ["premium"])  # no attributes: conditions fail


def errs(data) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        parse_targeting(data)
    assert info.value.reason is ErrorReason.INVALID_TARGETING
    return info.value


C = "experiment.targeting.conditions[0]"


@pytest.mark.parametrize("data, field", [
    ("premium", "experiment.targeting"),
    ({"segments": ["x"]}, "experiment.targeting.segments"),
    ({"include_segments": "premium"}, "experiment.targeting.include_segments"),
    ({"include_segments": [""]}, "experiment.targeting.include_segments[0]"),
    ({"include_segments": ["  "]}, "experiment.targeting.include_segments[0]"),
    ({"include_segments": [3]}, "experiment.targeting.include_segments[0]"),
    ({"include_segments": ["a", "a"]}, "experiment.targeting.include_segments[1]"),
    ({"exclude_segments": ["s" * 129]}, "experiment.targeting.exclude_segments[0]"),
    ({"exclude_segments": ["bad\nname"]}, "experiment.targeting.exclude_segments[0]"),
    ({"include_segments": ["a"], "exclude_segments": ["a"]}, "experiment.targeting.exclude_segments"),
    ({"include_segments": [f"s{i}" for i in range(MAX_SEGMENTS + 1)]}, "experiment.targeting.include_segments"),
    ({"conditions": {"attribute": "x"}}, "experiment.targeting.conditions"),
    ({"conditions": [{"attribute": "x", "operator": "EXISTS"}] * (MAX_CONDITIONS + 1)},
     "experiment.targeting.conditions"),
    ({"conditions": ["x"]}, C),
    ({"conditions": [{"attribute": "x", "operator": "EXISTS", "value": 1}]}, f"{C}.value"),
    ({"conditions": [{"operator": "EXISTS"}]}, f"{C}.attribute"),
    ({"conditions": [{"attribute": "", "operator": "EXISTS"}]}, f"{C}.attribute"),
    ({"conditions": [{"attribute": "a..b", "operator": "EXISTS"}]}, f"{C}.attribute"),
    ({"conditions": [{"attribute": ".a", "operator": "EXISTS"}]}, f"{C}.attribute"),
    ({"conditions": [{"attribute": "a" * 257, "operator": "EXISTS"}]}, f"{C}.attribute"),
    ({"conditions": [{"attribute": ".".join("a" * (MAX_ATTRIBUTE_DEPTH + 1)), "operator": "EXISTS"}]},
     f"{C}.attribute"),
    ({"conditions": [{"attribute": "x"}]}, f"{C}.operator"),
    ({"conditions": [{"attribute": "x", "operator": "ATTRIBUTE_OPERATOR_UNSPECIFIED"}]}, f"{C}.operator"),
    ({"conditions": [{"attribute": "x", "operator": 0}]}, f"{C}.operator"),
    ({"conditions": [{"attribute": "x", "operator": 11}]}, f"{C}.operator"),
    ({"conditions": [{"attribute": "x", "operator": True}]}, f"{C}.operator"),
    ({"conditions": [{"attribute": "x", "operator": "LIKE"}]}, f"{C}.operator"),
    ({"conditions": [{"attribute": "x", "operator": "EQUALS", "values": []}]}, f"{C}.values"),
    ({"conditions": [{"attribute": "x", "operator": "EQUALS", "values": ["a", "b"]}]}, f"{C}.values"),
    ({"conditions": [{"attribute": "x", "operator": "CONTAINS"}]}, f"{C}.values"),
    ({"conditions": [{"attribute": "x", "operator": "IN", "values": []}]}, f"{C}.values"),
    ({"conditions": [{"attribute": "x", "operator": "NOT_IN"}]}, f"{C}.values"),
    ({"conditions": [{"attribute": "x", "operator": "IN", "values": "abc"}]}, f"{C}.values"),
    ({"conditions": [{"attribute": "x", "operator": "IN", "values": list(range(MAX_VALUES + 1))}]}, f"{C}.values"),
    ({"conditions": [{"attribute": "x", "operator": "EQUALS", "values": [None]}]}, f"{C}.values[0]"),
    ({"conditions": [{"attribute": "x", "operator": "EQUALS", "values": [[1]]}]}, f"{C}.values[0]"),
    ({"conditions": [{"attribute": "x", "operator": "EQUALS", "values": [{"a": 1}]}]}, f"{C}.values[0]"),
    ({"conditions": [{"attribute": "x", "operator": "EQUALS", "values": [float("nan")]}]}, f"{C}.values[0]"),
    ({"conditions": [{"attribute": "x", "operator": "IN", "values": ["a", "s" * 257]}]}, f"{C}.values[1]"),
    ({"conditions": [{"attribute": "x", "operator": "GREATER_THAN", "values": ["18"]}]}, f"{C}.values[0]"),
    ({"conditions": [{"attribute": "x", "operator": "LESS_THAN", "values": [True]}]}, f"{C}.values[0]"),
    ({"conditions": [{"attribute": "x", "operator": "LESS_THAN", "values": [float("inf")]}]}, f"{C}.values[0]"),
    ({"conditions": [{"attribute": "x", "operator": "EXISTS", "values": [None]}]}, f"{C}.values[0]"),
])
def test_bad_rules_name_the_field(data, field):
    assert errs(data).field == field


def test_the_field_prefix_is_the_callers():
    with pytest.raises(InvalidArgument) as info:
        parse_targeting({"include_segments": [""]}, "targeting")
    assert info.value.field == "targeting.include_segments[0]"


def test_error_messages_stay_short():
    error = errs({"conditions": [{"attribute": "x", "operator": "Z" * 10_000}]})
    assert len(error.message) < 400


# --- properties ------------------------------------------------------------------------------

scalars = st.one_of(st.text(max_size=20), st.booleans(), st.integers(-10**6, 10**6),
                    st.floats(allow_nan=False, allow_infinity=False))
numbers = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False))
keys = st.from_regex(r"[a-z]{1,5}(\.[a-z]{1,5}){0,2}", fullmatch=True)
segment_names = st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), max_size=5, unique=True)


@st.composite
def conditions(draw):
    op = draw(st.sampled_from(list(AttributeOperator)))
    if op.name in ("IN", "NOT_IN"):
        values = draw(st.lists(scalars, min_size=1, max_size=5))
    elif op.name in ("GREATER_THAN", "GREATER_OR_EQUAL", "LESS_THAN", "LESS_OR_EQUAL"):
        values = [draw(numbers)]
    elif op.name == "EXISTS":
        values = []
    else:
        values = [draw(scalars)]
    return {"attribute": draw(keys), "operator": op.name, "values": values}


@st.composite
def rules(draw):
    include = draw(segment_names)
    exclude = [s for s in draw(segment_names) if s not in include]
    return {"include_segments": include, "exclude_segments": exclude,
            "conditions": draw(st.lists(conditions(), max_size=4))}


json_values = st.recursive(st.one_of(st.none(), scalars),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True),
                                                                   inner, max_size=3)),
                           max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(rules(), st.dictionaries(keys, json_values, max_size=5), segment_names)
def test_any_valid_rule_round_trips_and_evaluates_without_errors(data, attributes, segments):
    rule = parse_targeting(data)
    assert parse_targeting(rule.as_data()) == rule
    assert parse_targeting(rule) == rule
    result = rule.matches(attributes, segments)
    assert isinstance(result, bool)
    # Negated operators are exact complements of their positive forms.
    for positive, negative in (("EQUALS", "NOT_EQUALS"), ("IN", "NOT_IN")):
        for c in rule.conditions:
            if c.operator.name == positive:
                flipped = parse_targeting({"conditions": [{**c.as_data(), "operator": negative}]})
                assert flipped.matches(attributes) is (not c.holds(attributes))


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.lists(st.integers()),
                 st.dictionaries(st.text(), st.integers()), st.binary()))
def test_garbage_is_refused_with_invalid_targeting(value):
    for data in ({"include_segments": value}, {"conditions": [value]},
                 {"conditions": [{"attribute": "x", "operator": value, "values": [1]}]},
                 {"conditions": [{"attribute": value, "operator": "EXISTS"}]}):
        try:
            parse_targeting(data)
        except InvalidArgument as error:
            assert error.reason is ErrorReason.INVALID_TARGETING

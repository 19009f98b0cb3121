"""Typed values: a batch of source rows is converted column by column, and gives what converting
each row on its own gives, whatever mix of types the source returns."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from ml_serving_server.services.pipeline.domain.feature_views import Entity, Feature, FeatureView, Source, ValueType
from ml_serving_server.services.pipeline.domain.values import batch_values, row_values

VIEW = FeatureView(name="mixed", entity=Entity("user", "user_id", ValueType.INT), features=(
    Feature("n", ValueType.INT), Feature("x", ValueType.FLOAT), Feature("s", ValueType.STRING),
    Feature("b", ValueType.BOOL), Feature("ns", ValueType.INT_LIST), Feature("xs", ValueType.FLOAT_LIST),
    Feature("ss", ValueType.STRING_LIST), Feature("absent", ValueType.FLOAT)), source=Source("SELECT 1", "t"))

ANY = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                st.decimals(allow_nan=False, allow_infinity=False, places=2), st.text(max_size=3))
LISTS = st.one_of(st.none(), st.lists(ANY, max_size=3), st.lists(st.floats(allow_nan=False), max_size=3),
                  st.lists(st.integers(-5, 5), max_size=3), st.lists(st.text(max_size=2), max_size=3))
ROW = st.fixed_dictionaries({"n": ANY, "x": ANY, "s": ANY, "b": ANY, "ns": LISTS, "xs": LISTS, "ss": LISTS})


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(st.lists(ROW, min_size=1, max_size=8))
def test_a_batch_converts_as_each_row_does(rows):
    # Compared as text: a value that converts to NaN (an infinity in a float list) is NaN on both
    # sides, and NaN is never equal to another NaN object.
    assert repr(batch_values(VIEW, rows)) == repr([row_values(VIEW, row) for row in rows])


def test_typed_columns_are_kept_and_the_others_converted():
    rows = [{"n": 1, "x": 0.5, "s": "a", "b": True, "ns": [1, 2], "xs": [0.25], "ss": ["q"]},
            {"n": None, "x": Decimal("1.5"), "s": None, "b": None, "ns": [3, None], "xs": None, "ss": []}]
    first, second = batch_values(VIEW, rows)
    assert first == {**rows[0], "absent": None}
    assert second["x"] == 1.5 and type(second["x"]) is float
    assert second["ns"] is None  # a list with a null element does not convert
    assert second["ss"] == [] and second["absent"] is None
    assert batch_values(VIEW, []) == []

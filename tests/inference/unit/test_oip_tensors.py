"""The Open Inference Protocol tensor codec: validation, raw bytes, handler JSON. No I/O."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_serving_server.errors import CommonReason, InvalidArgument
from ml_serving_server.services.inference.domain import tensors
from ml_serving_server.services.inference.domain.errors import ErrorReason
from ml_serving_server.services.inference.domain.tensors import (
    DATATYPES,
    Limits,
    ModelOutputError,
    Tensor,

    TensorSpec,
    decode_raw,
    encode_raw,
    from_handler_json,
    to_handler_json,
    with_raw_contents,
)

SETTINGS = dict(deadline=None, derandomize=True, database=None)
HUGE = "x" * 100_000


def invalid(call, field: str, reason=CommonReason.INVALID_FIELD) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        call()
    assert caught.value.field == field, caught.value.message
    assert caught.value.reason == reason
    assert len(caught.value.message) < 300  # never the whole of what was sent
    return caught.value


def model_fault(call, match: str) -> ModelOutputError:
    with pytest.raises(ModelOutputError, match=match) as caught:
        call()
    assert caught.value.reason == ErrorReason.MODEL_HANDLER_ERROR
    assert len(caught.value.message) < 300
    return caught.value


def elements(datatype: str) -> st.SearchStrategy:
    """Any element `datatype` can hold (no NaN: it never equals itself)."""
    if datatype == "BOOL":
        return st.booleans()
    if datatype == "BYTES":
        return st.binary(max_size=40)
    if datatype.startswith("FP"):
        return st.floats(width=int(datatype[2:]), allow_nan=False)
    info = np.iinfo(tensors.DTYPES[datatype])
    return st.integers(int(info.min), int(info.max))


# ---------------------------------------------------------------------------- raw bytes


@pytest.mark.parametrize("datatype", DATATYPES)
@settings(max_examples=60, **SETTINGS)
@given(data=st.data())
def test_raw_round_trip(datatype, data):
    values = data.draw(st.lists(elements(datatype), max_size=30))
    raw = encode_raw(datatype, values)
    assert decode_raw(datatype, len(values), raw, "raw_input_contents[0]") == values


@pytest.mark.parametrize("datatype", DATATYPES)
@settings(max_examples=30, **SETTINGS)
@given(data=st.data())
def test_raw_input_reaches_the_handler_and_comes_back_typed(datatype, data):
    """Raw input -> handler JSON (nested by shape) -> output tensor of the same signature."""
    rows = data.draw(st.integers(0, 4))
    cols = data.draw(st.integers(1, 4))
    strategy = st.text(max_size=10) if datatype == "BYTES" else elements(datatype)
    values = data.draw(st.lists(strategy, min_size=rows * cols, max_size=rows * cols))
    handler_input = to_handler_json([Tensor("x", datatype, (rows, cols), raw=encode_raw(datatype, values))])
    assert handler_input == {"x": [values[r * cols:(r + 1) * cols] for r in range(rows)]}
    (output,) = from_handler_json(handler_input, [TensorSpec("x", datatype, (-1, cols))])
    assert (output.shape, output.values) == ((rows, cols), values)


def test_little_endian_on_the_wire():
    assert encode_raw("INT32", [1, -2]) == struct.pack("<ii", 1, -2)
    assert encode_raw("FP16", [1.5]) == np.float16(1.5).tobytes()  # little-endian on this machine too
    assert encode_raw("BYTES", ["ab", b"\x00"]) == b"\x02\x00\x00\x00ab\x01\x00\x00\x00\x00"
    assert decode_raw("BOOL", 3, b"\x00\x01\x07", "f") == [False, True, True]  # non-zero is true


@pytest.mark.parametrize("datatype, count, raw, says", [
    ("INT32", 2, b"\x00" * 7, "has 7 bytes; 2 INT32 elements need 8"),
    ("FP64", 0, b"\x00", "has 1 bytes"),
    ("BYTES", 1, b"\x01\x00", "exactly 1"),  # a cut length prefix
    ("BYTES", 1, b"\xff\x00\x00\x00ab", "claims 255 bytes, only 2 remain"),
    ("BYTES", 1, b"\x01\x00\x00\x00ab", "exactly 1"),  # a byte left over
    ("BYTES", 2, b"\x01\x00\x00\x00a", "exactly 2"),  # too few elements
])
def test_malformed_raw_bytes_are_refused(datatype, count, raw, says):
    error = invalid(lambda: decode_raw(datatype, count, raw, "raw_input_contents[3]"), "raw_input_contents[3]")
    assert says in error.message


# ---------------------------------------------------------------------------- datatype and shape


@pytest.mark.parametrize("datatype", DATATYPES)
def test_every_datatype_is_accepted(datatype):
    assert tensors.check_datatype(datatype, "inputs[0].datatype") == datatype


@pytest.mark.parametrize("datatype", ["int64", "FP8", "STRING", "", None, HUGE])
def test_unknown_datatypes_are_refused(datatype):
    invalid(lambda: to_handler_json([Tensor("x", datatype, (1,), [1])]), "inputs[0].datatype")


@pytest.mark.parametrize("shape, field", [
    ((2, -1), "inputs[0].shape[1]"),
    ((2.0,), "inputs[0].shape[0]"),
    ((True,), "inputs[0].shape[0]"),
    ((1,) * 33, "inputs[0].shape"),
])
def test_invalid_shapes_are_refused(shape, field):
    invalid(lambda: to_handler_json([Tensor("x", "INT8", shape, [1])]), field)


def test_zero_sized_dimensions_and_scalars():
    assert to_handler_json([Tensor("e", "FP32", (2, 0), []), Tensor("s", "INT64", (), [7])]) == {"e": [[], []], "s": 7}


def test_element_and_byte_limits_count_the_whole_request():
    limits = Limits(max_elements=10, max_bytes=64)
    invalid(lambda: to_handler_json([Tensor("x", "INT8", (1 << 40, 1 << 40), None)], limits), "inputs[0].shape",
            ErrorReason.INPUT_TOO_LARGE)
    two = [Tensor("a", "INT8", (6,), [0] * 6), Tensor("b", "INT8", (6,), [0] * 6)]
    invalid(lambda: to_handler_json(two, limits), "inputs[1].shape", ErrorReason.INPUT_TOO_LARGE)
    wide = [Tensor("a", "FP64", (5,), raw=bytes(40)), Tensor("b", "FP64", (5,), raw=bytes(40))]
    invalid(lambda: to_handler_json(wide, limits), "raw_input_contents[1]", ErrorReason.INPUT_TOO_LARGE)
    words = [Tensor("w", "BYTES", (2,), ["a" * 40, "b" * 40])]
    invalid(lambda: to_handler_json(words, limits, "data"), "inputs[0].data", ErrorReason.INPUT_TOO_LARGE)


# ---------------------------------------------------------------------------- inputs


def test_values_flat_or_nested_reach_the_handler_nested_by_shape():
    flat = Tensor("x", "INT64", (2, 2), [1, 2, 3, 4])
    nested = Tensor("y", "FP32", (2, 2), [[1, 2], [3.5, 4]])
    words = Tensor("w", "BYTES", (2,), [b"caf\xc3\xa9", "tea"])
    assert to_handler_json([flat, nested, words]) == {"x": [[1, 2], [3, 4]], "y": [[1.0, 2.0], [3.5, 4.0]],
                                                      "w": ["café", "tea"]}


def test_json_doubles_count_as_integers_when_integral():
    """REST data arrives through google.protobuf.Value: every number is a double."""
    assert to_handler_json([Tensor("x", "UINT8", (2,), [1.0, 255.0])]) == {"x": [1, 255]}
    invalid(lambda: to_handler_json([Tensor("x", "INT32", (2,), [1.0, 1.5])], values_field="data"),
            "inputs[0].data[1]")


@pytest.mark.parametrize("datatype, values, index", [
    ("INT8", [1, 128], 1),
    ("UINT16", [-1], 0),
    ("UINT64", [2 ** 64], 0),
    ("INT64", [True], 0),
    ("BOOL", [1], 0),
    ("FP16", [70000.0], 0),
    ("FP32", ["1"], 0),
    ("FP64", [None], 0),
    ("BYTES", [1], 0),
])
def test_values_must_fit_their_datatype(datatype, values, index):
    tensor = Tensor("x", datatype, (len(values),), values)
    invalid(lambda: to_handler_json([tensor]), f"inputs[0].contents[{index}]")


@pytest.mark.parametrize("tensor, field, says", [
    (Tensor("x", "INT8", (3,), [1, 2]), "inputs[0].contents", "holds 2 elements; shape [3] needs 3"),
    (Tensor("x", "INT8", (4,), [[1, 2], [3, 4]]), "inputs[0].contents", "nested as [2, 2]"),
    (Tensor("x", "INT8", (2, 2), [[1, 2], [3]]), "inputs[0].contents", "ragged"),
    (Tensor("x", "INT8", (2,), [[1], 2]), "inputs[0].contents", "ragged"),
    (Tensor("x", "INT8", (1,), [1], raw=b"\x01"), "inputs[0].contents", "raw"),
    (Tensor("", "INT8", (1,), [1]), "inputs[0].name", "required"),
    (Tensor("x", "BYTES", (1,), [b"\xff"]), "inputs[0].contents[0]", "UTF-8"),
])
def test_malformed_inputs_name_their_field(tensor, field, says):
    assert says in invalid(lambda: to_handler_json([tensor]), field).message


def test_two_inputs_may_not_share_a_name():
    same = [Tensor(HUGE, "INT8", (1,), [1]), Tensor(HUGE, "INT8", (1,), [1])]
    invalid(lambda: to_handler_json(same), "inputs[1].name")


def test_raw_input_contents_go_with_their_inputs_in_order():
    inputs = [Tensor("a", "INT8", (1,)), Tensor("b", "FP32", (1,))]
    attached = with_raw_contents(inputs, [b"\x05", encode_raw("FP32", [0.5])])
    assert to_handler_json(attached) == {"a": [5], "b": [0.5]}
    assert with_raw_contents(inputs, []) == inputs
    invalid(lambda: with_raw_contents(inputs, [b"\x05"]), "raw_input_contents")
    invalid(lambda: with_raw_contents([Tensor("a", "INT8", (1,), [1])], [b"\x05"]), "inputs[0].contents")


# ---------------------------------------------------------------------------- outputs


def test_outputs_are_inferred_without_a_signature():
    out = from_handler_json({"ints": [[1, 2], [3, 4]], "mixed": [1, 2.5], "flags": [True], "label": "cat",
                             "empty": [], "score": 0.5})
    assert [(t.name, t.datatype, t.shape, t.values) for t in out] == [
        ("ints", "INT64", (2, 2), [1, 2, 3, 4]),
        ("mixed", "FP64", (2,), [1.0, 2.5]),
        ("flags", "BOOL", (1,), [True]),
        ("label", "BYTES", (1,), ["cat"]),
        ("empty", "FP64", (0,), []),
        ("score", "FP64", (1,), [0.5]),
    ]


def test_outputs_follow_the_signature_and_the_requested_names():
    signature = [TensorSpec("probs", "FP32", (-1, 2)), TensorSpec("label", "BYTES", (-1,)),
                 TensorSpec("grid", "INT32", (2, 2))]
    answer = {"probs": [[0.25, 0.75]], "label": ["cat"], "grid": [1, 2, 3, 4], "extra": 1}
    out = from_handler_json(answer, signature)
    assert [(t.name, t.datatype, t.shape) for t in out] == [
        ("probs", "FP32", (1, 2)), ("label", "BYTES", (1,)), ("grid", "INT32", (2, 2))]  # a flat list, fixed shape
    (label,) = from_handler_json(answer, signature, requested=["label"])
    assert label.values == ["cat"]
    invalid(lambda: from_handler_json(answer, signature, requested=["label", HUGE]), "outputs[1].name")
    invalid(lambda: from_handler_json(answer, None, requested=["nope"]), "outputs[0].name")


@pytest.mark.parametrize("answer, signature, says", [
    ([1, 2], None, "JSON object"),
    ({"y": [[1], [2, 3]]}, None, "ragged"),
    ({"y": [1, "a"]}, None, "mixes"),
    ({"y": [None]}, None, "mixes"),
    ({"y": [[1, 2, 3]]}, [TensorSpec("y", "FP32", (-1, 2))], r"shape \[1, 3\], the model declares \[-1, 2\]"),
    ({"y": [1, 2, 3]}, [TensorSpec("y", "FP32", (-1, 2))], "shape"),
    ({"y": [1.5]}, [TensorSpec("y", "INT64", (1,))], "integers"),
    ({"y": [1]}, [TensorSpec("y", "INT3", (1,))], "unknown data type"),
    ({}, [TensorSpec("y", "FP32", (1,))], "missing"),
])
def test_answers_that_do_not_fit_are_the_model_s_fault(answer, signature, says):
    model_fault(lambda: from_handler_json(answer, signature), says)


def test_an_answer_too_large_is_refused():
    model_fault(lambda: from_handler_json({"a": [0] * 6, "b": [0] * 6}, limits=Limits(max_elements=10)),
                "more than 10 elements")
    model_fault(lambda: from_handler_json({"a": ["x" * 60]}, limits=Limits(max_bytes=50)), "50 bytes")


def test_outputs_encode_for_grpc():
    (out,) = from_handler_json({"y": [[1.5, 2.5]]}, [TensorSpec("y", "FP16", (1, 2))])
    assert decode_raw("FP16", 2, encode_raw(out.datatype, out.values), "f") == [1.5, 2.5]
    assert tensors.CONTENTS_FIELD["FP16"] is None and set(tensors.CONTENTS_FIELD) == set(DATATYPES)

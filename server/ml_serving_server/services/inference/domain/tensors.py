"""Open Inference Protocol (KServe v2) tensors, as plain values: validation, the raw
little-endian byte form, and the JSON object a model's handler receives and returns.

Both protocol forms meet here: the servicer maps gRPC `contents` / `raw_input_contents` or
REST `data` into `Tensor`s, and the model's handler only ever sees JSON:
`{tensor_name: nested list shaped like the tensor}`. Its JSON answer becomes output tensors,
typed by the model's output signature, or inferred when the model declares none.

Caller mistakes raise InvalidArgument naming the field (`inputs[0].shape`); a handler answer
that does not fit raises ModelOutputError (INTERNAL: not the caller's fault). Messages quote
user input only through `quoted`, so they stay short whatever a caller sends.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from ....errors import Internal, InvalidArgument, quoted
from .errors import ErrorReason
from .model import TensorSpec


class ModelOutputError(Internal):
    """The handler's answer does not fit the model's outputs (INTERNAL: the model's fault)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"the model's output {field}: {message}" if field else f"the model's output {message}",
                         reason=ErrorReason.MODEL_HANDLER_ERROR, metadata={"field": field})


# Fixed-width types and their little-endian numpy dtype; BYTES is length-prefixed instead.
DTYPES: dict[str, np.dtype] = {name: np.dtype(code) for name, code in {
    "BOOL": "|b1", "UINT8": "|u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "|i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}.items()}
DATATYPES: tuple[str, ...] = (*DTYPES, "BYTES")

# Where gRPC carries each type's elements in InferTensorContents (FP16 travels raw only).
CONTENTS_FIELD: dict[str, str | None] = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents", "FP16": None, "FP32": "fp32_contents", "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

MAX_RANK = 32  # numpy's own limit is 64; no model needs more
_LENGTH = struct.Struct("<I")  # a BYTES element's length prefix


@dataclass(frozen=True)
class Limits:
    """How much one request (all its tensors together) or one answer may hold."""

    max_elements: int = 1 << 22
    max_bytes: int = 64 << 20


@dataclass(frozen=True)
class Tensor:
    """One tensor: its elements either as `values` (flat row-major, or nested by the shape)
    or as `raw` little-endian bytes. BYTES values are str (UTF-8) or bytes."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: list | None = None
    raw: bytes | None = None


class _Bad(ValueError):
    """A value problem; the caller turns it into the right domain error for its field."""

    def __init__(self, where: str, message: str):
        super().__init__(message)
        self.where, self.message = where, message


# ---------------------------------------------------------------------------- validation


def check_datatype(datatype: object, field: str) -> str:
    if datatype not in DATATYPES:
        raise InvalidArgument(field, f"{quoted(datatype)} is not a data type ({', '.join(DATATYPES)})")
    return datatype


def element_count(shape: Sequence[object], field: str, max_elements: int) -> int:
    """The number of elements of a valid shape (non-negative integer dimensions)."""
    if len(shape) > MAX_RANK:
        raise InvalidArgument(field, f"has {len(shape)} dimensions, at most {MAX_RANK} are allowed")
    count = 1
    for i, dim in enumerate(shape):
        if type(dim) is not int or dim < 0:
            raise InvalidArgument(f"{field}[{i}]", f"{quoted(dim)} is not a non-negative integer")
        count *= dim
    # Checked after the loop: a later 0 makes any product empty.
    if count > max_elements:
        raise InvalidArgument(field, f"holds {count} elements, more than the limit of {max_elements}",
                              reason=ErrorReason.INPUT_TOO_LARGE)
    return count


def _normalised(datatype: str, values: list) -> list:
    """`values` as the Python type of `datatype`, or _Bad naming the first wrong element.
    Integral floats count as integers: JSON (and protobuf's Value) has only doubles."""
    if datatype == "BYTES":
        for i, v in enumerate(values):
            if not isinstance(v, (str, bytes)):
                raise _Bad(f"[{i}]", "BYTES elements must be strings")
        return values
    if datatype == "BOOL":
        for i, v in enumerate(values):
            if type(v) is not bool:
                raise _Bad(f"[{i}]", "BOOL elements must be true or false")
        return values
    if datatype.startswith(("INT", "UINT")):
        info, out = np.iinfo(DTYPES[datatype]), []
        for i, v in enumerate(values):
            if type(v) is float and v.is_integer():
                v = int(v)
            if type(v) is not int or not info.min <= v <= info.max:
                raise _Bad(f"[{i}]", f"{datatype} elements must be integers in [{info.min}, {info.max}]")
            out.append(v)
        return out
    biggest, out = float(np.finfo(DTYPES[datatype]).max), []
    for i, v in enumerate(values):
        if type(v) not in (int, float) or (math.isfinite(v) and abs(v) > biggest):
            raise _Bad(f"[{i}]", f"{datatype} elements must be numbers within ±{biggest:g}")
        out.append(float(v))
    return out


def _flatten(value: object) -> tuple[list, tuple[int, ...]]:
    """Flat row-major elements of a (possibly nested) JSON list and the shape its nesting
    says; _Bad if it is ragged or nested deeper than MAX_RANK."""
    if not isinstance(value, list):
        return [value], ()
    level, dims = [value], []
    while level and all(isinstance(v, list) for v in level):
        if len(dims) == MAX_RANK:
            raise _Bad("", f"is nested more than {MAX_RANK} deep")
        sizes = {len(v) for v in level}
        if len(sizes) > 1:
            raise _Bad("", "is ragged: lists at one depth differ in length")
        dims.append(sizes.pop())
        level = [item for v in level for item in v]
    if any(isinstance(v, list) for v in level):
        raise _Bad("", "is ragged: mixes lists and values at one depth")
    return level, tuple(dims)


def _nested(flat: list, shape: tuple[int, ...]) -> object:
    """Flat row-major elements nested by `shape` (a bare element for shape ())."""
    array = np.empty(len(flat), dtype=object)
    array[:] = flat  # element by element: never let numpy reinterpret a value
    return array.reshape(shape).tolist()


# ---------------------------------------------------------------------------- raw bytes


def decode_raw(datatype: str, count: int, raw: bytes, field: str) -> list:
    """`count` elements of `datatype` from little-endian bytes (BYTES: each element after
    its 4-byte little-endian length). Elements come back as Python bool, int, float, bytes."""
    if datatype == "BYTES":
        values, offset = [], 0
        while offset < len(raw) and len(values) < count:
            if offset + _LENGTH.size > len(raw):
                break
            (length,) = _LENGTH.unpack_from(raw, offset)
            offset += _LENGTH.size
            if length > len(raw) - offset:
                raise InvalidArgument(field, f"element {len(values)} claims {length} bytes, "
                                             f"only {len(raw) - offset} remain")
            values.append(bytes(raw[offset:offset + length]))
            offset += length
        if len(values) != count or offset != len(raw):
            raise InvalidArgument(field, f"must hold exactly {count} length-prefixed BYTES elements "
                                         f"({len(raw)} bytes given)")
        return values
    dtype = DTYPES[datatype]
    if len(raw) != count * dtype.itemsize:
        raise InvalidArgument(field, f"has {len(raw)} bytes; {count} {datatype} elements need "
                                     f"{count * dtype.itemsize}")
    if datatype == "BOOL":  # any non-zero byte is true, as in C
        return (np.frombuffer(raw, dtype=np.uint8) != 0).tolist()
    return np.frombuffer(raw, dtype=dtype).tolist()


def encode_raw(datatype: str, values: Sequence) -> bytes:
    """Flat elements (already valid for `datatype`) as little-endian bytes."""
    if datatype == "BYTES":
        parts = []
        for v in values:
            data = v.encode() if isinstance(v, str) else bytes(v)
            parts += [_LENGTH.pack(len(data)), data]
        return b"".join(parts)
    return np.asarray(values, dtype=DTYPES[datatype]).tobytes()


def with_raw_contents(tensors: Sequence[Tensor], raw_contents: Sequence[bytes]) -> list[Tensor]:
    """gRPC's raw_input_contents attached to their inputs: one entry per input, in order,
    and then no input may carry values of its own."""
    if not raw_contents:
        return list(tensors)
    if len(raw_contents) != len(tensors):
        raise InvalidArgument("raw_input_contents", f"has {len(raw_contents)} entries for {len(tensors)} inputs")
    for i, tensor in enumerate(tensors):
        if tensor.values:
            raise InvalidArgument(f"inputs[{i}].contents", "must be empty when raw_input_contents is used")
    return [replace(tensor, values=None, raw=bytes(raw)) for tensor, raw in zip(tensors, raw_contents)]


# ---------------------------------------------------------------------------- inputs


def to_handler_json(tensors: Sequence[Tensor], limits: Limits = Limits(), values_field: str = "contents") -> dict:
    """The model handler's input: `{name: nested list shaped like the tensor}`.

    `values_field` names where values came from in error messages: "contents" (gRPC) or
    "data" (REST); raw bytes are "raw_input_contents[i]". BYTES become str (UTF-8).
    """
    handler_input, elements, size = {}, 0, 0
    for i, tensor in enumerate(tensors):
        field = f"inputs[{i}]"
        if not tensor.name:
            raise InvalidArgument(f"{field}.name", "is required")
        if tensor.name in handler_input:
            raise InvalidArgument(f"{field}.name", f"{quoted(tensor.name)} names two inputs")
        datatype = check_datatype(tensor.datatype, f"{field}.datatype")
        count = element_count(tensor.shape, f"{field}.shape", limits.max_elements)
        elements += count
        if elements > limits.max_elements:
            raise InvalidArgument(f"{field}.shape", f"brings the request to {elements} elements, more than the "
                                                    f"limit of {limits.max_elements}", reason=ErrorReason.INPUT_TOO_LARGE)
        if tensor.raw is not None:
            if tensor.values:
                raise InvalidArgument(f"{field}.{values_field}", "must be empty when raw contents are given")
            size += len(tensor.raw)
            _check_size(size, limits, f"raw_input_contents[{i}]")
            flat = decode_raw(datatype, count, tensor.raw, f"raw_input_contents[{i}]")
        else:
            flat = _input_values(tensor, count, f"{field}.{values_field}")
            size += _byte_size(datatype, flat)
            _check_size(size, limits, f"{field}.{values_field}")
        if datatype == "BYTES":
            flat = [_text(v, f"{field}.{values_field}", j) for j, v in enumerate(flat)]
        handler_input[tensor.name] = _nested(flat, tuple(tensor.shape))
    return handler_input


def _input_values(tensor: Tensor, count: int, field: str) -> list:
    try:
        flat, nesting = _flatten(tensor.values or [])
        if len(nesting) > 1 and nesting != tuple(tensor.shape):
            raise _Bad("", f"is nested as {list(nesting)}, not as the shape")
        if len(flat) != count:
            raise _Bad("", f"holds {len(flat)} elements; shape {list(tensor.shape)} needs {count}")
        return _normalised(tensor.datatype, flat)
    except _Bad as bad:
        raise InvalidArgument(field + bad.where, bad.message) from None


def _text(value: str | bytes, field: str, index: int) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise InvalidArgument(f"{field}[{index}]", "BYTES elements must be UTF-8 text to reach the model "
                                                   "as JSON") from None


def _byte_size(datatype: str, flat: list) -> int:
    if datatype == "BYTES":
        return sum(_LENGTH.size + len(v) for v in flat)  # str length approximates its UTF-8 size
    return len(flat) * DTYPES[datatype].itemsize


def _check_size(size: int, limits: Limits, field: str) -> None:
    if size > limits.max_bytes:
        raise InvalidArgument(field, f"brings the request to {size} bytes, more than the limit of {limits.max_bytes}",
                              reason=ErrorReason.INPUT_TOO_LARGE)


# ---------------------------------------------------------------------------- outputs


def from_handler_json(output: object, signature: Sequence[TensorSpec] | None = None, requested: Sequence[str] = (),
                      limits: Limits = Limits()) -> list[Tensor]:
    """The handler's JSON answer `{name: value}` as output tensors with flat values.

    With a signature, its outputs (those `requested`, else all) are taken in its order and
    must fit its datatype and shape: nested as the shape, or flat when the shape has no -1.
    Without one, every key is an output: its type inferred (all bools: BOOL, all integers:
    INT64, numbers: FP64, strings: BYTES; an empty list: FP64) and its shape from the
    nesting (a lone value: shape [1]).
    """
    if not isinstance(output, Mapping):
        raise ModelOutputError("", "must be a JSON object of named tensors")
    specs = {spec.name: spec for spec in signature} if signature is not None else dict.fromkeys(output)
    for i, name in enumerate(requested):
        if name not in specs:
            raise InvalidArgument(f"outputs[{i}].name", f"{quoted(name)} is not an output of the model")
    tensors, elements, size = [], 0, 0
    for name in requested or specs:
        spec = specs[name]
        if name not in output:
            raise ModelOutputError(quoted(name), "is missing")
        try:
            tensor = _typed(name, output[name], spec) if spec else _inferred(name, output[name])
        except _Bad as bad:
            raise ModelOutputError(quoted(name) + bad.where, bad.message) from None
        elements += len(tensor.values)
        size += _byte_size(tensor.datatype, tensor.values)
        if elements > limits.max_elements or size > limits.max_bytes:
            raise ModelOutputError(quoted(name), f"brings the answer to more than {limits.max_elements} elements "
                                                 f"or {limits.max_bytes} bytes")
        tensors.append(tensor)
    return tensors


def _typed(name: str, value: object, spec: TensorSpec) -> Tensor:
    if spec.datatype not in DATATYPES:
        raise _Bad("", f"is declared with an unknown data type {quoted(spec.datatype)}")
    flat, nesting = _flatten(value)
    empty = tuple(0 if want == -1 else want for want in spec.shape)
    if len(nesting) == len(spec.shape) and all(want in (-1, got) for want, got in zip(spec.shape, nesting)):
        shape = nesting
    elif not flat and nesting == (0,) and math.prod(empty) == 0:
        shape = empty  # `[]` cannot say its inner dimensions: the signature's, wildcards empty
    elif -1 not in spec.shape and len(flat) == math.prod(spec.shape) and len(nesting) <= 1:
        shape = tuple(spec.shape)  # a flat list for a fixed shape
    else:
        raise _Bad("", f"has shape {list(nesting)}, the model declares {list(spec.shape)}")
    return Tensor(name, spec.datatype, shape, _normalised(spec.datatype, flat))


def _inferred(name: str, value: object) -> Tensor:
    flat, shape = _flatten(value)
    shape = shape or (1,)
    kinds = {type(v) for v in flat}
    if not flat or kinds <= {float, int} and float in kinds:
        datatype = "FP64"
    elif kinds == {int}:
        datatype = "INT64"
    elif kinds == {bool}:
        datatype = "BOOL"
    elif kinds == {str}:
        datatype = "BYTES"
    else:
        raise _Bad("", "mixes elements of different types (or holds objects or nulls)")
    return Tensor(name, datatype, shape, _normalised(datatype, flat))

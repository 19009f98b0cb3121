"""Limits on every registry input, and the checks that enforce them.

Each check raises InvalidArgument naming the field, before anything is changed. The limits
keep every value inside what MLflow stores (tag keys 250 characters, tag values 5,000) once
the registry's own prefixes are added.
"""

from __future__ import annotations

import math
import re
from typing import Iterable, Mapping

from ....errors import InvalidArgument, quoted
from .errors import ErrorReason
from .layout import RESERVED_ALIASES, RESERVED_PREFIX, signature_json
from .model import MetricGate, Signature, Stage

MODEL_NAME = re.compile(r"[A-Za-z0-9._-]{1,256}")
VERSION = re.compile(r"[1-9][0-9]{0,9}")
ALIAS = re.compile(r"[a-z0-9_-]{1,64}")
VERSION_LIKE_ALIAS = re.compile(r"v[0-9]+")
METRIC_KEY = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
TAG_KEY = re.compile(r"[A-Za-z0-9_.:/ -]{1,200}")
TENSOR_NAME = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
DATATYPES = frozenset({"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                       "FP16", "FP32", "FP64", "BYTES"})

MAX_DESCRIPTION = 5000
MAX_TAGS = 50
MAX_TAG_VALUE = 5000
MAX_METRICS = 100
MAX_PARAMETERS = 100
MAX_PARAMETER_VALUE = 500
MAX_GATES = 32
MAX_TENSORS = 64
MAX_DIMENSIONS = 16
MAX_SIGNATURE_JSON = 5000
MAX_REQUEST_ID = 128
MAX_ACTOR = 128
MAX_REASON = 1000
MAX_FILE_NAME = 255
MAX_RUN_ID = 64
MAX_FILTER_VALUES = 20
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_WATCH_MODELS = 100


def model_name(value: str, field: str = "name") -> str:
    if not MODEL_NAME.fullmatch(value or ""):
        raise InvalidArgument(field, f"{quoted(value)} is not a model name: 1 to 256 characters of [A-Za-z0-9._-]")
    return value


def version(value: str, field: str = "version") -> str:
    if not VERSION.fullmatch(value or ""):
        raise InvalidArgument(field, f"{quoted(value)} is not a version: a positive decimal number")
    return value


def alias(value: str, field: str = "alias") -> str:
    if not ALIAS.fullmatch(value or ""):
        raise InvalidArgument(field, f"{quoted(value)} is not an alias: 1 to 64 characters of [a-z0-9_-]")
    if value in RESERVED_ALIASES or VERSION_LIKE_ALIAS.fullmatch(value):
        raise InvalidArgument(field, f"{quoted(value)} is reserved (stage names, 'latest' and v<number>)",
                              reason=ErrorReason.RESERVED_ALIAS)
    return value


def text(value: str, field: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidArgument(field, f"at most {limit} characters, got {len(value)}")
    if "\x00" in value:
        raise InvalidArgument(field, "contains a NUL character")
    return value


def tag_keys(keys: Iterable[str], field: str) -> list[str]:
    keys = list(keys)
    if len(keys) > MAX_TAGS:
        raise InvalidArgument(field, f"at most {MAX_TAGS} tags per call, got {len(keys)}")
    for key in keys:
        if not TAG_KEY.fullmatch(key):
            raise InvalidArgument(field, f"tag key {quoted(key)}: 1 to 200 characters of [A-Za-z0-9_.:/ -]")
        if key.startswith(RESERVED_PREFIX):
            raise InvalidArgument(field, f"tag key {quoted(key)}: keys starting with {RESERVED_PREFIX!r} are "
                                         "the registry's own", reason=ErrorReason.RESERVED_TAG)
    return keys


def tags(values: Mapping[str, str], field: str = "tags") -> dict[str, str]:
    tag_keys(values.keys(), field)
    for key, value in values.items():
        text(value, f"{field}[{key}]", MAX_TAG_VALUE)
    return dict(values)


def metrics(values: Mapping[str, float], field: str = "metrics") -> dict[str, float]:
    if len(values) > MAX_METRICS:
        raise InvalidArgument(field, f"at most {MAX_METRICS} metrics, got {len(values)}")
    for key, value in values.items():
        if not METRIC_KEY.fullmatch(key):
            raise InvalidArgument(field, f"metric name {quoted(key)}: 1 to 128 characters of [A-Za-z0-9_.:/-]")
        if not math.isfinite(value):
            raise InvalidArgument(field, f"metric {quoted(key)} must be a finite number")
    return dict(values)


def parameters(values: Mapping[str, str], field: str = "parameters") -> dict[str, str]:
    if len(values) > MAX_PARAMETERS:
        raise InvalidArgument(field, f"at most {MAX_PARAMETERS} parameters, got {len(values)}")
    for key, value in values.items():
        if not METRIC_KEY.fullmatch(key):
            raise InvalidArgument(field, f"parameter name {quoted(key)}: 1 to 128 characters of [A-Za-z0-9_.:/-]")
        text(value, f"{field}[{key}]", MAX_PARAMETER_VALUE)
    return dict(values)


def gates(values: Iterable[MetricGate], field: str) -> tuple[MetricGate, ...]:
    values = tuple(values)
    if len(values) > MAX_GATES:
        raise InvalidArgument(field, f"at most {MAX_GATES} gates, got {len(values)}")
    for gate in values:
        if not METRIC_KEY.fullmatch(gate.metric):
            raise InvalidArgument(f"{field}.metric", f"{quoted(gate.metric)} is not a metric name")
        if not math.isfinite(gate.threshold):
            raise InvalidArgument(f"{field}.threshold", "must be a finite number")
        if gate.target_stage not in (Stage.STAGING, Stage.PRODUCTION):
            raise InvalidArgument(f"{field}.target_stage", "a gate guards STAGE_STAGING or STAGE_PRODUCTION")
    return values


def signature(value: Signature, field: str = "signature") -> Signature:
    for part, specs in (("inputs", value.inputs), ("outputs", value.outputs)):
        if len(specs) > MAX_TENSORS:
            raise InvalidArgument(f"{field}.{part}", f"at most {MAX_TENSORS} tensors, got {len(specs)}")
        for spec in specs:
            if not TENSOR_NAME.fullmatch(spec.name):
                raise InvalidArgument(f"{field}.{part}.name", f"{quoted(spec.name)}: 1 to 128 characters of "
                                                              "[A-Za-z0-9._:/-]")
            if spec.datatype not in DATATYPES:
                raise InvalidArgument(f"{field}.{part}.datatype", f"{quoted(spec.datatype)} is not one of "
                                                                  f"{', '.join(sorted(DATATYPES))}")
            if len(spec.shape) > MAX_DIMENSIONS or any(d < -1 for d in spec.shape):
                raise InvalidArgument(f"{field}.{part}.shape", f"at most {MAX_DIMENSIONS} dimensions, each -1 "
                                                               "(any size) or at least 0")
    if len(signature_json(value)) > MAX_SIGNATURE_JSON:
        raise InvalidArgument(field, f"too large: at most {MAX_SIGNATURE_JSON} characters as JSON")
    return value


def page_size(value: int, field: str = "page_size") -> int:
    if value < 0 or value > MAX_PAGE_SIZE:
        raise InvalidArgument(field, f"must be 0 to {MAX_PAGE_SIZE}, got {value}")
    return value or DEFAULT_PAGE_SIZE


def request_id(value: str, field: str = "request_id") -> str:
    if len(value) > MAX_REQUEST_ID or not value.isprintable():
        raise InvalidArgument(field, f"at most {MAX_REQUEST_ID} printable characters")
    return value


def run_id(value: str, field: str = "source_run_id") -> str:
    if value and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        raise InvalidArgument(field, f"{quoted(value)} is not an MLflow run id")
    return value

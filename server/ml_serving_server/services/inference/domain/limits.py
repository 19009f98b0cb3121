"""Limits on every input, checked before anything is called."""

from __future__ import annotations

import re

from ....errors import InvalidArgument, quoted
from .errors import ErrorReason
from .model import Selector, SelectorKind

MODEL_NAME = re.compile(r"[A-Za-z0-9._-]{1,256}")
VERSION = re.compile(r"[1-9][0-9]{0,9}")
ALIAS = re.compile(r"[a-z0-9_-]{1,64}")
STAGES = frozenset({"DEVELOPMENT", "STAGING", "PRODUCTION", "ARCHIVED"})
MAX_INSTANCES = 1000
MAX_WORKERS = 16
MAX_BATCH_SIZE = 512
MAX_BATCH_DELAY_MS = 60_000
MAX_TIMEOUT_S = 3600


def model_name(value: str, field: str = "model_name") -> str:
    if not MODEL_NAME.fullmatch(value or ""):
        raise InvalidArgument(field, f"{quoted(value)} is not a model name: 1 to 256 characters of [A-Za-z0-9._-]")
    return value


def version(value: str, field: str = "version") -> str:
    if not VERSION.fullmatch(value or ""):
        raise InvalidArgument(field, f"{quoted(value)} is not a version: a positive integer")
    return value


def selector(value: Selector) -> Selector:
    if value.kind is SelectorKind.VERSION:
        version(value.value)
    elif value.kind is SelectorKind.ALIAS and not ALIAS.fullmatch(value.value):
        raise InvalidArgument("alias", f"{quoted(value.value)} is not an alias: 1 to 64 characters of [a-z0-9_-]")
    elif value.kind is SelectorKind.STAGE and value.value not in STAGES:
        raise InvalidArgument("stage", "must be DEVELOPMENT, STAGING, PRODUCTION or ARCHIVED")
    return value


def payload(data: bytes, max_bytes: int, field: str = "inputs") -> bytes:
    if not data:
        raise InvalidArgument(field, "an input is required (inputs or raw_input)")
    if len(data) > max_bytes:
        raise InvalidArgument(field, f"the input is {len(data)} bytes; the limit is {max_bytes}",
                              reason=ErrorReason.INPUT_TOO_LARGE)
    return data


def instance_count(count: int) -> None:
    if count == 0:
        raise InvalidArgument("instances", "at least one instance is required")
    if count > MAX_INSTANCES:
        raise InvalidArgument("instances", f"{count} instances; at most {MAX_INSTANCES} per call",
                              reason=ErrorReason.TOO_MANY_INSTANCES)


def workers(min_workers: int, max_workers: int) -> tuple[int, int]:
    """(min, max) with the defaults applied: 0 min means 1, 0 max means min."""
    if min_workers < 0 or min_workers > MAX_WORKERS:
        raise InvalidArgument("min_workers", f"must be 0 to {MAX_WORKERS}", reason=ErrorReason.INVALID_WORKER_RANGE)
    if max_workers < 0 or max_workers > MAX_WORKERS:
        raise InvalidArgument("max_workers", f"must be 0 to {MAX_WORKERS}", reason=ErrorReason.INVALID_WORKER_RANGE)
    low = min_workers or 1
    high = max_workers or low
    if high < low:
        raise InvalidArgument("max_workers", "must be at least min_workers", reason=ErrorReason.INVALID_WORKER_RANGE)
    return low, high


def bounded_int(value: int, field: str, low: int, high: int) -> int:
    if not low <= value <= high:
        raise InvalidArgument(field, f"must be {low} to {high}")
    return value

"""Why a registry request failed: mirrors `enum ErrorReason` in proto/.../registry/v1/error_reason.proto.

The member's name is the wire's google.rpc.ErrorInfo.reason; a contract test keeps this
enum and the proto's equal.
"""

from __future__ import annotations

import enum


class ErrorReason(enum.Enum):
    INVALID_FIELD = enum.auto()
    INVALID_PAGE_TOKEN = enum.auto()
    NOT_IMPLEMENTED = enum.auto()
    INTERNAL = enum.auto()
    UNAUTHENTICATED = enum.auto()
    SCOPE_REQUIRED = enum.auto()
    MODEL_NOT_FOUND = enum.auto()
    MODEL_ALREADY_EXISTS = enum.auto()
    VERSION_NOT_FOUND = enum.auto()
    VERSION_NOT_READY = enum.auto()
    VERSION_IN_PRODUCTION = enum.auto()
    MODEL_HAS_PRODUCTION_VERSION = enum.auto()
    NO_VERSION_IN_STAGE = enum.auto()
    ALIAS_NOT_FOUND = enum.auto()
    RESERVED_ALIAS = enum.auto()
    RESERVED_TAG = enum.auto()
    INVALID_TRANSITION = enum.auto()
    INVALID_INITIAL_STAGE = enum.auto()
    GATE_FAILED = enum.auto()
    OVERRIDE_REASON_REQUIRED = enum.auto()
    STAGE_CONFLICT = enum.auto()
    ARTIFACT_INVALID = enum.auto()
    ARTIFACT_NOT_FOUND = enum.auto()
    ARTIFACT_TOO_LARGE = enum.auto()
    ARTIFACT_STORE_UNAVAILABLE = enum.auto()
    BACKEND_UNAVAILABLE = enum.auto()
    INVALID_TIME_RANGE = enum.auto()
    CURSOR_EXPIRED = enum.auto()
    SHUTTING_DOWN = enum.auto()
    CHECKSUM_MISMATCH = enum.auto()

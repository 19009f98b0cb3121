"""Why an inference request failed: mirrors `enum ErrorReason` in proto/.../inference/v1/error_reason.proto.

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
    VERSION_NOT_FOUND = enum.auto()
    VERSION_NOT_READY = enum.auto()
    ALIAS_NOT_FOUND = enum.auto()
    NO_VERSION_IN_STAGE = enum.auto()
    MODEL_NOT_LOADED = enum.auto()
    MODEL_ALREADY_LOADED = enum.auto()
    MODEL_LOAD_FAILED = enum.auto()
    ARTIFACT_NOT_SERVABLE = enum.auto()
    LOAD_TIMEOUT = enum.auto()
    SCALE_TIMEOUT = enum.auto()
    INVALID_WORKER_RANGE = enum.auto()
    INPUT_TOO_LARGE = enum.auto()
    TOO_MANY_INSTANCES = enum.auto()
    MODEL_HANDLER_ERROR = enum.auto()
    WORKER_DIED = enum.auto()
    BACKEND_OVERLOADED = enum.auto()
    BACKEND_UNAVAILABLE = enum.auto()
    PREDICTION_TIMEOUT = enum.auto()
    REGISTRY_UNAVAILABLE = enum.auto()

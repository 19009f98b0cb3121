"""Why a router request failed: mirrors `enum ErrorReason` in proto/.../router/v1/error_reason.proto.

The member's name is the wire's google.rpc.ErrorInfo.reason; a contract test keeps this
enum and the proto's equal (once the Router's package declares its SERVICE).
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
    EXPERIMENT_NOT_FOUND = enum.auto()
    EXPERIMENT_ALREADY_EXISTS = enum.auto()
    EXPERIMENT_STOPPED = enum.auto()
    NO_MATCHING_EXPERIMENT = enum.auto()
    INVALID_VARIANTS = enum.auto()
    INVALID_WEIGHTS = enum.auto()
    INVALID_TARGETING = enum.auto()
    INVALID_STEPS = enum.auto()
    INVALID_THRESHOLDS = enum.auto()
    IMMUTABLE_FIELD = enum.auto()
    UNKNOWN_VARIANT = enum.auto()
    VARIANT_HAS_EXPOSURES = enum.auto()
    UNKNOWN_METRIC = enum.auto()
    OUTCOME_KIND_MISMATCH = enum.auto()
    REVISION_MISMATCH = enum.auto()
    MODEL_VERSION_NOT_FOUND = enum.auto()
    MODEL_HAS_RUNNING_EXPERIMENT = enum.auto()
    MODEL_HAS_ACTIVE_CANARY = enum.auto()
    CANARY_NOT_FOUND = enum.auto()
    CANARY_FINISHED = enum.auto()
    NO_VERSION_IN_STAGE = enum.auto()
    REGISTRY_PROMOTION_FAILED = enum.auto()
    INPUT_TOO_LARGE = enum.auto()
    MODEL_NOT_LOADED = enum.auto()
    MODEL_HANDLER_ERROR = enum.auto()
    WORKER_DIED = enum.auto()
    BACKEND_OVERLOADED = enum.auto()
    BACKEND_UNAVAILABLE = enum.auto()
    PREDICTION_TIMEOUT = enum.auto()
    REGISTRY_UNAVAILABLE = enum.auto()
    STATE_STORE_UNAVAILABLE = enum.auto()

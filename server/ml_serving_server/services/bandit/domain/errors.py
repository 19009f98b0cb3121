"""Why a bandit request failed: mirrors `enum ErrorReason` in proto/.../bandit/v1/error_reason.proto.

The member's name is the wire's google.rpc.ErrorInfo.reason; a contract test keeps this
enum and the proto's equal, so a reason cannot be raised here without being declared there.
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
    BANDIT_NOT_FOUND = enum.auto()
    BANDIT_ALREADY_EXISTS = enum.auto()
    DECISION_NOT_FOUND = enum.auto()
    UNKNOWN_ARM = enum.auto()
    ARM_NOT_IN_DECISION = enum.auto()
    NOT_ENOUGH_ARMS = enum.auto()
    NOT_CONTEXTUAL = enum.auto()
    CONTEXT_DIMENSION_MISMATCH = enum.auto()
    REWARD_OUT_OF_RANGE = enum.auto()
    CONCURRENT_UPDATE = enum.auto()
    STATE_STORE_UNAVAILABLE = enum.auto()
    STATE_STORE_TIMEOUT = enum.auto()
    STATE_CORRUPT = enum.auto()
    EVENT_ID_CONFLICT = enum.auto()
    DECISION_LOG_DISABLED = enum.auto()
    DECISION_LOG_UNAVAILABLE = enum.auto()
    EVALUATIONS_BUSY = enum.auto()

from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    INVALID_FIELD: _ClassVar[ErrorReason]
    INVALID_PAGE_TOKEN: _ClassVar[ErrorReason]
    NOT_IMPLEMENTED: _ClassVar[ErrorReason]
    INTERNAL: _ClassVar[ErrorReason]
    UNAUTHENTICATED: _ClassVar[ErrorReason]
    SCOPE_REQUIRED: _ClassVar[ErrorReason]
    BANDIT_NOT_FOUND: _ClassVar[ErrorReason]
    BANDIT_ALREADY_EXISTS: _ClassVar[ErrorReason]
    DECISION_NOT_FOUND: _ClassVar[ErrorReason]
    UNKNOWN_ARM: _ClassVar[ErrorReason]
    ARM_NOT_IN_DECISION: _ClassVar[ErrorReason]
    NOT_ENOUGH_ARMS: _ClassVar[ErrorReason]
    NOT_CONTEXTUAL: _ClassVar[ErrorReason]
    CONTEXT_DIMENSION_MISMATCH: _ClassVar[ErrorReason]
    REWARD_OUT_OF_RANGE: _ClassVar[ErrorReason]
    CONCURRENT_UPDATE: _ClassVar[ErrorReason]
    STATE_STORE_UNAVAILABLE: _ClassVar[ErrorReason]
    STATE_STORE_TIMEOUT: _ClassVar[ErrorReason]
    STATE_CORRUPT: _ClassVar[ErrorReason]
    EVENT_ID_CONFLICT: _ClassVar[ErrorReason]
    DECISION_LOG_DISABLED: _ClassVar[ErrorReason]
    DECISION_LOG_UNAVAILABLE: _ClassVar[ErrorReason]
    EVALUATIONS_BUSY: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
INVALID_FIELD: ErrorReason
INVALID_PAGE_TOKEN: ErrorReason
NOT_IMPLEMENTED: ErrorReason
INTERNAL: ErrorReason
UNAUTHENTICATED: ErrorReason
SCOPE_REQUIRED: ErrorReason
BANDIT_NOT_FOUND: ErrorReason
BANDIT_ALREADY_EXISTS: ErrorReason
DECISION_NOT_FOUND: ErrorReason
UNKNOWN_ARM: ErrorReason
ARM_NOT_IN_DECISION: ErrorReason
NOT_ENOUGH_ARMS: ErrorReason
NOT_CONTEXTUAL: ErrorReason
CONTEXT_DIMENSION_MISMATCH: ErrorReason
REWARD_OUT_OF_RANGE: ErrorReason
CONCURRENT_UPDATE: ErrorReason
STATE_STORE_UNAVAILABLE: ErrorReason
STATE_STORE_TIMEOUT: ErrorReason
STATE_CORRUPT: ErrorReason
EVENT_ID_CONFLICT: ErrorReason
DECISION_LOG_DISABLED: ErrorReason
DECISION_LOG_UNAVAILABLE: ErrorReason
EVALUATIONS_BUSY: ErrorReason

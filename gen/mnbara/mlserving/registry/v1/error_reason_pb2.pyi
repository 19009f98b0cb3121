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
    MODEL_NOT_FOUND: _ClassVar[ErrorReason]
    MODEL_ALREADY_EXISTS: _ClassVar[ErrorReason]
    VERSION_NOT_FOUND: _ClassVar[ErrorReason]
    VERSION_NOT_READY: _ClassVar[ErrorReason]
    VERSION_IN_PRODUCTION: _ClassVar[ErrorReason]
    MODEL_HAS_PRODUCTION_VERSION: _ClassVar[ErrorReason]
    NO_VERSION_IN_STAGE: _ClassVar[ErrorReason]
    ALIAS_NOT_FOUND: _ClassVar[ErrorReason]
    RESERVED_ALIAS: _ClassVar[ErrorReason]
    RESERVED_TAG: _ClassVar[ErrorReason]
    INVALID_TRANSITION: _ClassVar[ErrorReason]
    INVALID_INITIAL_STAGE: _ClassVar[ErrorReason]
    GATE_FAILED: _ClassVar[ErrorReason]
    OVERRIDE_REASON_REQUIRED: _ClassVar[ErrorReason]
    STAGE_CONFLICT: _ClassVar[ErrorReason]
    ARTIFACT_INVALID: _ClassVar[ErrorReason]
    ARTIFACT_NOT_FOUND: _ClassVar[ErrorReason]
    ARTIFACT_TOO_LARGE: _ClassVar[ErrorReason]
    ARTIFACT_STORE_UNAVAILABLE: _ClassVar[ErrorReason]
    BACKEND_UNAVAILABLE: _ClassVar[ErrorReason]
    INVALID_TIME_RANGE: _ClassVar[ErrorReason]
    CURSOR_EXPIRED: _ClassVar[ErrorReason]
    SHUTTING_DOWN: _ClassVar[ErrorReason]
    CHECKSUM_MISMATCH: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
INVALID_FIELD: ErrorReason
INVALID_PAGE_TOKEN: ErrorReason
NOT_IMPLEMENTED: ErrorReason
INTERNAL: ErrorReason
UNAUTHENTICATED: ErrorReason
SCOPE_REQUIRED: ErrorReason
MODEL_NOT_FOUND: ErrorReason
MODEL_ALREADY_EXISTS: ErrorReason
VERSION_NOT_FOUND: ErrorReason
VERSION_NOT_READY: ErrorReason
VERSION_IN_PRODUCTION: ErrorReason
MODEL_HAS_PRODUCTION_VERSION: ErrorReason
NO_VERSION_IN_STAGE: ErrorReason
ALIAS_NOT_FOUND: ErrorReason
RESERVED_ALIAS: ErrorReason
RESERVED_TAG: ErrorReason
INVALID_TRANSITION: ErrorReason
INVALID_INITIAL_STAGE: ErrorReason
GATE_FAILED: ErrorReason
OVERRIDE_REASON_REQUIRED: ErrorReason
STAGE_CONFLICT: ErrorReason
ARTIFACT_INVALID: ErrorReason
ARTIFACT_NOT_FOUND: ErrorReason
ARTIFACT_TOO_LARGE: ErrorReason
ARTIFACT_STORE_UNAVAILABLE: ErrorReason
BACKEND_UNAVAILABLE: ErrorReason
INVALID_TIME_RANGE: ErrorReason
CURSOR_EXPIRED: ErrorReason
SHUTTING_DOWN: ErrorReason
CHECKSUM_MISMATCH: ErrorReason

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
    VERSION_NOT_FOUND: _ClassVar[ErrorReason]
    VERSION_NOT_READY: _ClassVar[ErrorReason]
    ALIAS_NOT_FOUND: _ClassVar[ErrorReason]
    NO_VERSION_IN_STAGE: _ClassVar[ErrorReason]
    MODEL_NOT_LOADED: _ClassVar[ErrorReason]
    MODEL_ALREADY_LOADED: _ClassVar[ErrorReason]
    MODEL_LOAD_FAILED: _ClassVar[ErrorReason]
    ARTIFACT_NOT_SERVABLE: _ClassVar[ErrorReason]
    LOAD_TIMEOUT: _ClassVar[ErrorReason]
    SCALE_TIMEOUT: _ClassVar[ErrorReason]
    INVALID_WORKER_RANGE: _ClassVar[ErrorReason]
    INPUT_TOO_LARGE: _ClassVar[ErrorReason]
    TOO_MANY_INSTANCES: _ClassVar[ErrorReason]
    MODEL_HANDLER_ERROR: _ClassVar[ErrorReason]
    WORKER_DIED: _ClassVar[ErrorReason]
    BACKEND_OVERLOADED: _ClassVar[ErrorReason]
    BACKEND_UNAVAILABLE: _ClassVar[ErrorReason]
    PREDICTION_TIMEOUT: _ClassVar[ErrorReason]
    REGISTRY_UNAVAILABLE: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
INVALID_FIELD: ErrorReason
INVALID_PAGE_TOKEN: ErrorReason
NOT_IMPLEMENTED: ErrorReason
INTERNAL: ErrorReason
UNAUTHENTICATED: ErrorReason
SCOPE_REQUIRED: ErrorReason
MODEL_NOT_FOUND: ErrorReason
VERSION_NOT_FOUND: ErrorReason
VERSION_NOT_READY: ErrorReason
ALIAS_NOT_FOUND: ErrorReason
NO_VERSION_IN_STAGE: ErrorReason
MODEL_NOT_LOADED: ErrorReason
MODEL_ALREADY_LOADED: ErrorReason
MODEL_LOAD_FAILED: ErrorReason
ARTIFACT_NOT_SERVABLE: ErrorReason
LOAD_TIMEOUT: ErrorReason
SCALE_TIMEOUT: ErrorReason
INVALID_WORKER_RANGE: ErrorReason
INPUT_TOO_LARGE: ErrorReason
TOO_MANY_INSTANCES: ErrorReason
MODEL_HANDLER_ERROR: ErrorReason
WORKER_DIED: ErrorReason
BACKEND_OVERLOADED: ErrorReason
BACKEND_UNAVAILABLE: ErrorReason
PREDICTION_TIMEOUT: ErrorReason
REGISTRY_UNAVAILABLE: ErrorReason

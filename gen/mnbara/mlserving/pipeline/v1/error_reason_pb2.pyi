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
    FEATURE_VIEW_NOT_FOUND: _ClassVar[ErrorReason]
    UNKNOWN_FEATURE: _ClassVar[ErrorReason]
    TOO_MANY_ENTITIES: _ClassVar[ErrorReason]
    MATERIALIZATION_IN_PROGRESS: _ClassVar[ErrorReason]
    ONLINE_STORE_UNAVAILABLE: _ClassVar[ErrorReason]
    SOURCE_UNAVAILABLE: _ClassVar[ErrorReason]
    RUN_NOT_FOUND: _ClassVar[ErrorReason]
    MODEL_NOT_FOUND: _ClassVar[ErrorReason]
    NO_TRAINER_FOR_MODEL: _ClassVar[ErrorReason]
    SCHEDULE_NOT_FOUND: _ClassVar[ErrorReason]
    INVALID_CRON: _ClassVar[ErrorReason]
    INVALID_TIME_ZONE: _ClassVar[ErrorReason]
    INVALID_METRIC_VALUE: _ClassVar[ErrorReason]
    INVALID_CONDITION: _ClassVar[ErrorReason]
    INVALID_TIME_RANGE: _ClassVar[ErrorReason]
    INVALID_WEBHOOK_URL: _ClassVar[ErrorReason]
    ALERT_RULE_NOT_FOUND: _ClassVar[ErrorReason]
    ALERT_RULE_ALREADY_EXISTS: _ClassVar[ErrorReason]
    IMMUTABLE_FIELD: _ClassVar[ErrorReason]
    REGISTRY_UNAVAILABLE: _ClassVar[ErrorReason]
    STATE_STORE_UNAVAILABLE: _ClassVar[ErrorReason]
    VIEW_NOT_POINT_IN_TIME: _ClassVar[ErrorReason]
    QUERY_TIMEOUT: _ClassVar[ErrorReason]
    MATERIALIZATION_JOB_NOT_FOUND: _ClassVar[ErrorReason]
    SOURCE_QUERY_FAILED: _ClassVar[ErrorReason]
ERROR_REASON_UNSPECIFIED: ErrorReason
INVALID_FIELD: ErrorReason
INVALID_PAGE_TOKEN: ErrorReason
NOT_IMPLEMENTED: ErrorReason
INTERNAL: ErrorReason
UNAUTHENTICATED: ErrorReason
SCOPE_REQUIRED: ErrorReason
FEATURE_VIEW_NOT_FOUND: ErrorReason
UNKNOWN_FEATURE: ErrorReason
TOO_MANY_ENTITIES: ErrorReason
MATERIALIZATION_IN_PROGRESS: ErrorReason
ONLINE_STORE_UNAVAILABLE: ErrorReason
SOURCE_UNAVAILABLE: ErrorReason
RUN_NOT_FOUND: ErrorReason
MODEL_NOT_FOUND: ErrorReason
NO_TRAINER_FOR_MODEL: ErrorReason
SCHEDULE_NOT_FOUND: ErrorReason
INVALID_CRON: ErrorReason
INVALID_TIME_ZONE: ErrorReason
INVALID_METRIC_VALUE: ErrorReason
INVALID_CONDITION: ErrorReason
INVALID_TIME_RANGE: ErrorReason
INVALID_WEBHOOK_URL: ErrorReason
ALERT_RULE_NOT_FOUND: ErrorReason
ALERT_RULE_ALREADY_EXISTS: ErrorReason
IMMUTABLE_FIELD: ErrorReason
REGISTRY_UNAVAILABLE: ErrorReason
STATE_STORE_UNAVAILABLE: ErrorReason
VIEW_NOT_POINT_IN_TIME: ErrorReason
QUERY_TIMEOUT: ErrorReason
MATERIALIZATION_JOB_NOT_FOUND: ErrorReason
SOURCE_QUERY_FAILED: ErrorReason

import datetime

from google.api import annotations_pb2 as _annotations_pb2
from mnbara.mlserving.auth.v1 import auth_pb2 as _auth_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExperimentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_STATE_UNSPECIFIED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_RUNNING: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_PAUSED: _ClassVar[ExperimentState]
    EXPERIMENT_STATE_STOPPED: _ClassVar[ExperimentState]

class AttributeOperator(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTRIBUTE_OPERATOR_UNSPECIFIED: _ClassVar[AttributeOperator]
    ATTRIBUTE_OPERATOR_EQUALS: _ClassVar[AttributeOperator]
    ATTRIBUTE_OPERATOR_NOT_EQUALS: _ClassVar[AttributeOperator]
    ATTRIBUTE_OPERATOR_IN: _ClassVar[AttributeOperator]
    ATTRIBUTE_OPERATOR_NOT_IN: _ClassVar[AttributeOperator]
    ATTRIBUTE_OPERATOR_GREATER_THAN: _ClassVar[AttributeOperator]
    ATTRIBUTE_OPERATOR_GREATER_OR_EQUAL: _ClassVar[AttributeOperator]
    ATTRIBUTE_OPERATOR_LESS_THAN: _ClassVar[AttributeOperator]
    ATTRIBUTE_OPERATOR_LESS_OR_EQUAL: _ClassVar[AttributeOperator]
    ATTRIBUTE_OPERATOR_EXISTS: _ClassVar[AttributeOperator]
    ATTRIBUTE_OPERATOR_CONTAINS: _ClassVar[AttributeOperator]

class OutcomeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_KIND_UNSPECIFIED: _ClassVar[OutcomeKind]
    OUTCOME_KIND_BINARY: _ClassVar[OutcomeKind]
    OUTCOME_KIND_NUMERIC: _ClassVar[OutcomeKind]

class AllocationMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALLOCATION_MODE_UNSPECIFIED: _ClassVar[AllocationMode]
    ALLOCATION_MODE_FIXED: _ClassVar[AllocationMode]
    ALLOCATION_MODE_THOMPSON: _ClassVar[AllocationMode]

class AssignmentReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ASSIGNMENT_REASON_UNSPECIFIED: _ClassVar[AssignmentReason]
    ASSIGNMENT_REASON_EXPERIMENT_BUCKET: _ClassVar[AssignmentReason]
    ASSIGNMENT_REASON_USER_OVERRIDE: _ClassVar[AssignmentReason]
    ASSIGNMENT_REASON_HOLDOUT: _ClassVar[AssignmentReason]
    ASSIGNMENT_REASON_NOT_TARGETED: _ClassVar[AssignmentReason]
    ASSIGNMENT_REASON_EXPERIMENT_INACTIVE: _ClassVar[AssignmentReason]
    ASSIGNMENT_REASON_CANARY_BUCKET: _ClassVar[AssignmentReason]
    ASSIGNMENT_REASON_DEFAULT: _ClassVar[AssignmentReason]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_NOT_ENOUGH_DATA: _ClassVar[Verdict]
    VERDICT_NO_SIGNIFICANT_DIFFERENCE: _ClassVar[Verdict]
    VERDICT_TREATMENT_BETTER: _ClassVar[Verdict]
    VERDICT_CONTROL_BETTER: _ClassVar[Verdict]
    VERDICT_SAMPLE_RATIO_MISMATCH: _ClassVar[Verdict]

class ExperimentChangeAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXPERIMENT_CHANGE_ACTION_UNSPECIFIED: _ClassVar[ExperimentChangeAction]
    EXPERIMENT_CHANGE_ACTION_CREATED: _ClassVar[ExperimentChangeAction]
    EXPERIMENT_CHANGE_ACTION_UPDATED: _ClassVar[ExperimentChangeAction]
    EXPERIMENT_CHANGE_ACTION_PAUSED: _ClassVar[ExperimentChangeAction]
    EXPERIMENT_CHANGE_ACTION_RESUMED: _ClassVar[ExperimentChangeAction]
    EXPERIMENT_CHANGE_ACTION_STOPPED: _ClassVar[ExperimentChangeAction]
    EXPERIMENT_CHANGE_ACTION_REWEIGHTED: _ClassVar[ExperimentChangeAction]

class CanaryState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANARY_STATE_UNSPECIFIED: _ClassVar[CanaryState]
    CANARY_STATE_RUNNING: _ClassVar[CanaryState]
    CANARY_STATE_PAUSED: _ClassVar[CanaryState]
    CANARY_STATE_AWAITING_PROMOTION: _ClassVar[CanaryState]
    CANARY_STATE_PROMOTED: _ClassVar[CanaryState]
    CANARY_STATE_ROLLED_BACK: _ClassVar[CanaryState]

class CanaryEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CANARY_EVENT_TYPE_UNSPECIFIED: _ClassVar[CanaryEventType]
    CANARY_EVENT_TYPE_STARTED: _ClassVar[CanaryEventType]
    CANARY_EVENT_TYPE_ADVANCED: _ClassVar[CanaryEventType]
    CANARY_EVENT_TYPE_PAUSED: _ClassVar[CanaryEventType]
    CANARY_EVENT_TYPE_RESUMED: _ClassVar[CanaryEventType]
    CANARY_EVENT_TYPE_AWAITING_PROMOTION: _ClassVar[CanaryEventType]
    CANARY_EVENT_TYPE_PROMOTED: _ClassVar[CanaryEventType]
    CANARY_EVENT_TYPE_PROMOTION_FAILED: _ClassVar[CanaryEventType]
    CANARY_EVENT_TYPE_ROLLED_BACK: _ClassVar[CanaryEventType]
EXPERIMENT_STATE_UNSPECIFIED: ExperimentState
EXPERIMENT_STATE_RUNNING: ExperimentState
EXPERIMENT_STATE_PAUSED: ExperimentState
EXPERIMENT_STATE_STOPPED: ExperimentState
ATTRIBUTE_OPERATOR_UNSPECIFIED: AttributeOperator
ATTRIBUTE_OPERATOR_EQUALS: AttributeOperator
ATTRIBUTE_OPERATOR_NOT_EQUALS: AttributeOperator
ATTRIBUTE_OPERATOR_IN: AttributeOperator
ATTRIBUTE_OPERATOR_NOT_IN: AttributeOperator
ATTRIBUTE_OPERATOR_GREATER_THAN: AttributeOperator
ATTRIBUTE_OPERATOR_GREATER_OR_EQUAL: AttributeOperator
ATTRIBUTE_OPERATOR_LESS_THAN: AttributeOperator
ATTRIBUTE_OPERATOR_LESS_OR_EQUAL: AttributeOperator
ATTRIBUTE_OPERATOR_EXISTS: AttributeOperator
ATTRIBUTE_OPERATOR_CONTAINS: AttributeOperator
OUTCOME_KIND_UNSPECIFIED: OutcomeKind
OUTCOME_KIND_BINARY: OutcomeKind
OUTCOME_KIND_NUMERIC: OutcomeKind
ALLOCATION_MODE_UNSPECIFIED: AllocationMode
ALLOCATION_MODE_FIXED: AllocationMode
ALLOCATION_MODE_THOMPSON: AllocationMode
ASSIGNMENT_REASON_UNSPECIFIED: AssignmentReason
ASSIGNMENT_REASON_EXPERIMENT_BUCKET: AssignmentReason
ASSIGNMENT_REASON_USER_OVERRIDE: AssignmentReason
ASSIGNMENT_REASON_HOLDOUT: AssignmentReason
ASSIGNMENT_REASON_NOT_TARGETED: AssignmentReason
ASSIGNMENT_REASON_EXPERIMENT_INACTIVE: AssignmentReason
ASSIGNMENT_REASON_CANARY_BUCKET: AssignmentReason
ASSIGNMENT_REASON_DEFAULT: AssignmentReason
VERDICT_UNSPECIFIED: Verdict
VERDICT_NOT_ENOUGH_DATA: Verdict
VERDICT_NO_SIGNIFICANT_DIFFERENCE: Verdict
VERDICT_TREATMENT_BETTER: Verdict
VERDICT_CONTROL_BETTER: Verdict
VERDICT_SAMPLE_RATIO_MISMATCH: Verdict
EXPERIMENT_CHANGE_ACTION_UNSPECIFIED: ExperimentChangeAction
EXPERIMENT_CHANGE_ACTION_CREATED: ExperimentChangeAction
EXPERIMENT_CHANGE_ACTION_UPDATED: ExperimentChangeAction
EXPERIMENT_CHANGE_ACTION_PAUSED: ExperimentChangeAction
EXPERIMENT_CHANGE_ACTION_RESUMED: ExperimentChangeAction
EXPERIMENT_CHANGE_ACTION_STOPPED: ExperimentChangeAction
EXPERIMENT_CHANGE_ACTION_REWEIGHTED: ExperimentChangeAction
CANARY_STATE_UNSPECIFIED: CanaryState
CANARY_STATE_RUNNING: CanaryState
CANARY_STATE_PAUSED: CanaryState
CANARY_STATE_AWAITING_PROMOTION: CanaryState
CANARY_STATE_PROMOTED: CanaryState
CANARY_STATE_ROLLED_BACK: CanaryState
CANARY_EVENT_TYPE_UNSPECIFIED: CanaryEventType
CANARY_EVENT_TYPE_STARTED: CanaryEventType
CANARY_EVENT_TYPE_ADVANCED: CanaryEventType
CANARY_EVENT_TYPE_PAUSED: CanaryEventType
CANARY_EVENT_TYPE_RESUMED: CanaryEventType
CANARY_EVENT_TYPE_AWAITING_PROMOTION: CanaryEventType
CANARY_EVENT_TYPE_PROMOTED: CanaryEventType
CANARY_EVENT_TYPE_PROMOTION_FAILED: CanaryEventType
CANARY_EVENT_TYPE_ROLLED_BACK: CanaryEventType

class Variant(_message.Message):
    __slots__ = ("name", "model_name", "model_version", "weight_bps", "control", "description", "buckets")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BPS_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    name: str
    model_name: str
    model_version: str
    weight_bps: int
    control: bool
    description: str
    buckets: _containers.RepeatedCompositeFieldContainer[BucketRange]
    def __init__(self, name: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., weight_bps: _Optional[int] = ..., control: _Optional[bool] = ..., description: _Optional[str] = ..., buckets: _Optional[_Iterable[_Union[BucketRange, _Mapping]]] = ...) -> None: ...

class BucketRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class AttributeCondition(_message.Message):
    __slots__ = ("attribute", "operator", "values")
    ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    attribute: str
    operator: AttributeOperator
    values: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Value]
    def __init__(self, attribute: _Optional[str] = ..., operator: _Optional[_Union[AttributeOperator, str]] = ..., values: _Optional[_Iterable[_Union[_struct_pb2.Value, _Mapping]]] = ...) -> None: ...

class TargetingRule(_message.Message):
    __slots__ = ("include_segments", "exclude_segments", "conditions")
    INCLUDE_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    include_segments: _containers.RepeatedScalarFieldContainer[str]
    exclude_segments: _containers.RepeatedScalarFieldContainer[str]
    conditions: _containers.RepeatedCompositeFieldContainer[AttributeCondition]
    def __init__(self, include_segments: _Optional[_Iterable[str]] = ..., exclude_segments: _Optional[_Iterable[str]] = ..., conditions: _Optional[_Iterable[_Union[AttributeCondition, _Mapping]]] = ...) -> None: ...

class UserOverride(_message.Message):
    __slots__ = ("user_id", "variant")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    variant: str
    def __init__(self, user_id: _Optional[str] = ..., variant: _Optional[str] = ...) -> None: ...

class ShadowConfig(_message.Message):
    __slots__ = ("model_name", "model_version", "sample_bps")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_BPS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    sample_bps: int
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., sample_bps: _Optional[int] = ...) -> None: ...

class OutcomeMetric(_message.Message):
    __slots__ = ("name", "kind")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: OutcomeKind
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[OutcomeKind, str]] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("name", "description", "variants", "targeting", "overrides", "holdout_bps", "salt", "metrics", "shadow", "priority", "state", "winning_variant", "revision", "created_by", "create_time", "update_time", "start_time", "stop_time", "allocation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    TARGETING_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_BPS_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WINNING_VARIANT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    STOP_TIME_FIELD_NUMBER: _ClassVar[int]
    ALLOCATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    variants: _containers.RepeatedCompositeFieldContainer[Variant]
    targeting: TargetingRule
    overrides: _containers.RepeatedCompositeFieldContainer[UserOverride]
    holdout_bps: int
    salt: str
    metrics: _containers.RepeatedCompositeFieldContainer[OutcomeMetric]
    shadow: ShadowConfig
    priority: int
    state: ExperimentState
    winning_variant: str
    revision: int
    created_by: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    stop_time: _timestamp_pb2.Timestamp
    allocation: Allocation
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., variants: _Optional[_Iterable[_Union[Variant, _Mapping]]] = ..., targeting: _Optional[_Union[TargetingRule, _Mapping]] = ..., overrides: _Optional[_Iterable[_Union[UserOverride, _Mapping]]] = ..., holdout_bps: _Optional[int] = ..., salt: _Optional[str] = ..., metrics: _Optional[_Iterable[_Union[OutcomeMetric, _Mapping]]] = ..., shadow: _Optional[_Union[ShadowConfig, _Mapping]] = ..., priority: _Optional[int] = ..., state: _Optional[_Union[ExperimentState, str]] = ..., winning_variant: _Optional[str] = ..., revision: _Optional[int] = ..., created_by: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stop_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., allocation: _Optional[_Union[Allocation, _Mapping]] = ...) -> None: ...

class Allocation(_message.Message):
    __slots__ = ("mode", "floor_bps", "ceiling_bps", "interval", "min_exposures", "last_change_time")
    MODE_FIELD_NUMBER: _ClassVar[int]
    FLOOR_BPS_FIELD_NUMBER: _ClassVar[int]
    CEILING_BPS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MIN_EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    LAST_CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    mode: AllocationMode
    floor_bps: int
    ceiling_bps: int
    interval: _duration_pb2.Duration
    min_exposures: int
    last_change_time: _timestamp_pb2.Timestamp
    def __init__(self, mode: _Optional[_Union[AllocationMode, str]] = ..., floor_bps: _Optional[int] = ..., ceiling_bps: _Optional[int] = ..., interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., min_exposures: _Optional[int] = ..., last_change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateExperimentRequest(_message.Message):
    __slots__ = ("experiment", "paused")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    paused: bool
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ..., paused: _Optional[bool] = ...) -> None: ...

class CreateExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class GetExperimentRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class ListExperimentsRequest(_message.Message):
    __slots__ = ("states", "model_name", "page_size", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[ExperimentState]
    model_name: str
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[ExperimentState, str]]] = ..., model_name: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListExperimentsResponse(_message.Message):
    __slots__ = ("experiments", "next_page_token")
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    next_page_token: str
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateExperimentRequest(_message.Message):
    __slots__ = ("experiment", "update_mask")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class PauseExperimentRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PauseExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class ResumeExperimentRequest(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResumeExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class StopExperimentRequest(_message.Message):
    __slots__ = ("name", "reason", "winning_variant")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    WINNING_VARIANT_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    winning_variant: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ..., winning_variant: _Optional[str] = ...) -> None: ...

class StopExperimentResponse(_message.Message):
    __slots__ = ("experiment",)
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    experiment: Experiment
    def __init__(self, experiment: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("experiment", "variant", "model_name", "model_version", "bucket", "reason", "canary_id")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CANARY_ID_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    variant: str
    model_name: str
    model_version: str
    bucket: int
    reason: AssignmentReason
    canary_id: str
    def __init__(self, experiment: _Optional[str] = ..., variant: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., bucket: _Optional[int] = ..., reason: _Optional[_Union[AssignmentReason, str]] = ..., canary_id: _Optional[str] = ...) -> None: ...

class AssignVariantRequest(_message.Message):
    __slots__ = ("user_id", "attributes", "segments", "experiment", "model_name", "dry_run")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    attributes: _struct_pb2.Struct
    segments: _containers.RepeatedScalarFieldContainer[str]
    experiment: str
    model_name: str
    dry_run: bool
    def __init__(self, user_id: _Optional[str] = ..., attributes: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., segments: _Optional[_Iterable[str]] = ..., experiment: _Optional[str] = ..., model_name: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class AssignVariantResponse(_message.Message):
    __slots__ = ("assignment",)
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    assignment: Assignment
    def __init__(self, assignment: _Optional[_Union[Assignment, _Mapping]] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("user_id", "attributes", "segments", "experiment", "model_name", "inputs", "raw_input", "raw_output")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SEGMENTS_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    RAW_INPUT_FIELD_NUMBER: _ClassVar[int]
    RAW_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    attributes: _struct_pb2.Struct
    segments: _containers.RepeatedScalarFieldContainer[str]
    experiment: str
    model_name: str
    inputs: _struct_pb2.Struct
    raw_input: bytes
    raw_output: bool
    def __init__(self, user_id: _Optional[str] = ..., attributes: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., segments: _Optional[_Iterable[str]] = ..., experiment: _Optional[str] = ..., model_name: _Optional[str] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., raw_input: _Optional[bytes] = ..., raw_output: _Optional[bool] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("assignment", "prediction", "raw_prediction", "model_latency_ms", "shadowed")
    ASSIGNMENT_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    RAW_PREDICTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    SHADOWED_FIELD_NUMBER: _ClassVar[int]
    assignment: Assignment
    prediction: _struct_pb2.Value
    raw_prediction: bytes
    model_latency_ms: float
    shadowed: bool
    def __init__(self, assignment: _Optional[_Union[Assignment, _Mapping]] = ..., prediction: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., raw_prediction: _Optional[bytes] = ..., model_latency_ms: _Optional[float] = ..., shadowed: _Optional[bool] = ...) -> None: ...

class ExposureRecord(_message.Message):
    __slots__ = ("experiment", "user_id", "variant", "holdout")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    user_id: str
    variant: str
    holdout: bool
    def __init__(self, experiment: _Optional[str] = ..., user_id: _Optional[str] = ..., variant: _Optional[str] = ..., holdout: _Optional[bool] = ...) -> None: ...

class RecordExposuresRequest(_message.Message):
    __slots__ = ("exposures",)
    EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    exposures: _containers.RepeatedCompositeFieldContainer[ExposureRecord]
    def __init__(self, exposures: _Optional[_Iterable[_Union[ExposureRecord, _Mapping]]] = ...) -> None: ...

class RecordExposuresResponse(_message.Message):
    __slots__ = ("accepted_count", "ignored_count")
    ACCEPTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    IGNORED_COUNT_FIELD_NUMBER: _ClassVar[int]
    accepted_count: int
    ignored_count: int
    def __init__(self, accepted_count: _Optional[int] = ..., ignored_count: _Optional[int] = ...) -> None: ...

class RecordOutcomeRequest(_message.Message):
    __slots__ = ("event_id", "experiment", "user_id", "variant", "metric", "converted", "value", "event_time")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    CONVERTED_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    experiment: str
    user_id: str
    variant: str
    metric: str
    converted: bool
    value: float
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., experiment: _Optional[str] = ..., user_id: _Optional[str] = ..., variant: _Optional[str] = ..., metric: _Optional[str] = ..., converted: _Optional[bool] = ..., value: _Optional[float] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RecordOutcomeResponse(_message.Message):
    __slots__ = ("duplicate", "counted", "variant")
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    COUNTED_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    duplicate: bool
    counted: bool
    variant: str
    def __init__(self, duplicate: _Optional[bool] = ..., counted: _Optional[bool] = ..., variant: _Optional[str] = ...) -> None: ...

class BatchRecordOutcomesRequest(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[RecordOutcomeRequest]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[RecordOutcomeRequest, _Mapping]]] = ...) -> None: ...

class BatchRecordOutcomesResponse(_message.Message):
    __slots__ = ("applied_count", "duplicate_count", "not_counted_count")
    APPLIED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    NOT_COUNTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    applied_count: int
    duplicate_count: int
    not_counted_count: int
    def __init__(self, applied_count: _Optional[int] = ..., duplicate_count: _Optional[int] = ..., not_counted_count: _Optional[int] = ...) -> None: ...

class VariantResult(_message.Message):
    __slots__ = ("variant", "control", "exposures", "outcome_count", "estimate", "confidence_interval_lower", "confidence_interval_upper", "difference", "relative_difference", "difference_interval_lower", "difference_interval_upper", "p_value", "significant", "request_count", "error_count", "latency_p50_ms", "latency_p99_ms")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_COUNT_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_INTERVAL_LOWER_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_INTERVAL_UPPER_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_INTERVAL_LOWER_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_INTERVAL_UPPER_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    SIGNIFICANT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    variant: str
    control: bool
    exposures: int
    outcome_count: int
    estimate: float
    confidence_interval_lower: float
    confidence_interval_upper: float
    difference: float
    relative_difference: float
    difference_interval_lower: float
    difference_interval_upper: float
    p_value: float
    significant: bool
    request_count: int
    error_count: int
    latency_p50_ms: float
    latency_p99_ms: float
    def __init__(self, variant: _Optional[str] = ..., control: _Optional[bool] = ..., exposures: _Optional[int] = ..., outcome_count: _Optional[int] = ..., estimate: _Optional[float] = ..., confidence_interval_lower: _Optional[float] = ..., confidence_interval_upper: _Optional[float] = ..., difference: _Optional[float] = ..., relative_difference: _Optional[float] = ..., difference_interval_lower: _Optional[float] = ..., difference_interval_upper: _Optional[float] = ..., p_value: _Optional[float] = ..., significant: _Optional[bool] = ..., request_count: _Optional[int] = ..., error_count: _Optional[int] = ..., latency_p50_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ...) -> None: ...

class SampleRatioCheck(_message.Message):
    __slots__ = ("chi_square", "p_value", "mismatch", "expected_shares", "observed_shares")
    class ExpectedSharesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ObservedSharesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CHI_SQUARE_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_SHARES_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_SHARES_FIELD_NUMBER: _ClassVar[int]
    chi_square: float
    p_value: float
    mismatch: bool
    expected_shares: _containers.ScalarMap[str, float]
    observed_shares: _containers.ScalarMap[str, float]
    def __init__(self, chi_square: _Optional[float] = ..., p_value: _Optional[float] = ..., mismatch: _Optional[bool] = ..., expected_shares: _Optional[_Mapping[str, float]] = ..., observed_shares: _Optional[_Mapping[str, float]] = ...) -> None: ...

class AllocationFigure(_message.Message):
    __slots__ = ("variant", "exposures", "mean", "probability_best", "weight_before_bps", "weight_after_bps")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_BEST_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BEFORE_BPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_AFTER_BPS_FIELD_NUMBER: _ClassVar[int]
    variant: str
    exposures: int
    mean: float
    probability_best: float
    weight_before_bps: int
    weight_after_bps: int
    def __init__(self, variant: _Optional[str] = ..., exposures: _Optional[int] = ..., mean: _Optional[float] = ..., probability_best: _Optional[float] = ..., weight_before_bps: _Optional[int] = ..., weight_after_bps: _Optional[int] = ...) -> None: ...

class ExperimentChange(_message.Message):
    __slots__ = ("experiment", "revision", "action", "actor", "change_time", "reason", "fields", "figures", "experiment_after")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CHANGE_TIME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    FIGURES_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_AFTER_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    revision: int
    action: ExperimentChangeAction
    actor: str
    change_time: _timestamp_pb2.Timestamp
    reason: str
    fields: _containers.RepeatedScalarFieldContainer[str]
    figures: _containers.RepeatedCompositeFieldContainer[AllocationFigure]
    experiment_after: Experiment
    def __init__(self, experiment: _Optional[str] = ..., revision: _Optional[int] = ..., action: _Optional[_Union[ExperimentChangeAction, str]] = ..., actor: _Optional[str] = ..., change_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason: _Optional[str] = ..., fields: _Optional[_Iterable[str]] = ..., figures: _Optional[_Iterable[_Union[AllocationFigure, _Mapping]]] = ..., experiment_after: _Optional[_Union[Experiment, _Mapping]] = ...) -> None: ...

class ListExperimentChangesRequest(_message.Message):
    __slots__ = ("name", "page_size", "page_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    page_size: int
    page_token: str
    def __init__(self, name: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListExperimentChangesResponse(_message.Message):
    __slots__ = ("changes", "next_page_token")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[ExperimentChange]
    next_page_token: str
    def __init__(self, changes: _Optional[_Iterable[_Union[ExperimentChange, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetExperimentResultsRequest(_message.Message):
    __slots__ = ("name", "metric", "confidence_level")
    NAME_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    metric: str
    confidence_level: float
    def __init__(self, name: _Optional[str] = ..., metric: _Optional[str] = ..., confidence_level: _Optional[float] = ...) -> None: ...

class GetExperimentResultsResponse(_message.Message):
    __slots__ = ("experiment", "metric", "confidence_level", "variants", "holdout_exposures", "sample_ratio", "verdict", "winning_variant", "compute_time", "caveats")
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    HOLDOUT_EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATIO_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    WINNING_VARIANT_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_TIME_FIELD_NUMBER: _ClassVar[int]
    CAVEATS_FIELD_NUMBER: _ClassVar[int]
    experiment: str
    metric: OutcomeMetric
    confidence_level: float
    variants: _containers.RepeatedCompositeFieldContainer[VariantResult]
    holdout_exposures: int
    sample_ratio: SampleRatioCheck
    verdict: Verdict
    winning_variant: str
    compute_time: _timestamp_pb2.Timestamp
    caveats: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, experiment: _Optional[str] = ..., metric: _Optional[_Union[OutcomeMetric, _Mapping]] = ..., confidence_level: _Optional[float] = ..., variants: _Optional[_Iterable[_Union[VariantResult, _Mapping]]] = ..., holdout_exposures: _Optional[int] = ..., sample_ratio: _Optional[_Union[SampleRatioCheck, _Mapping]] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., winning_variant: _Optional[str] = ..., compute_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., caveats: _Optional[_Iterable[str]] = ...) -> None: ...

class CanaryThresholds(_message.Message):
    __slots__ = ("max_error_rate_increase", "max_p99_latency_ratio")
    MAX_ERROR_RATE_INCREASE_FIELD_NUMBER: _ClassVar[int]
    MAX_P99_LATENCY_RATIO_FIELD_NUMBER: _ClassVar[int]
    max_error_rate_increase: float
    max_p99_latency_ratio: float
    def __init__(self, max_error_rate_increase: _Optional[float] = ..., max_p99_latency_ratio: _Optional[float] = ...) -> None: ...

class CanarySideStats(_message.Message):
    __slots__ = ("request_count", "error_count", "error_rate", "latency_p99_ms")
    REQUEST_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    request_count: int
    error_count: int
    error_rate: float
    latency_p99_ms: float
    def __init__(self, request_count: _Optional[int] = ..., error_count: _Optional[int] = ..., error_rate: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ...) -> None: ...

class Canary(_message.Message):
    __slots__ = ("canary_id", "model_name", "stable_version", "canary_version", "steps_bps", "step_interval", "min_requests_per_step", "thresholds", "manual_promotion", "salt", "state", "current_step", "current_weight_bps", "step_start_time", "stable_stats", "canary_stats", "rollback_reason", "created_by", "create_time", "update_time", "end_time", "status_message")
    CANARY_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    STABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    STEPS_BPS_FIELD_NUMBER: _ClassVar[int]
    STEP_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MIN_REQUESTS_PER_STEP_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    MANUAL_PROMOTION_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STEP_FIELD_NUMBER: _ClassVar[int]
    CURRENT_WEIGHT_BPS_FIELD_NUMBER: _ClassVar[int]
    STEP_START_TIME_FIELD_NUMBER: _ClassVar[int]
    STABLE_STATS_FIELD_NUMBER: _ClassVar[int]
    CANARY_STATS_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    canary_id: str
    model_name: str
    stable_version: str
    canary_version: str
    steps_bps: _containers.RepeatedScalarFieldContainer[int]
    step_interval: _duration_pb2.Duration
    min_requests_per_step: int
    thresholds: CanaryThresholds
    manual_promotion: bool
    salt: str
    state: CanaryState
    current_step: int
    current_weight_bps: int
    step_start_time: _timestamp_pb2.Timestamp
    stable_stats: CanarySideStats
    canary_stats: CanarySideStats
    rollback_reason: str
    created_by: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    status_message: str
    def __init__(self, canary_id: _Optional[str] = ..., model_name: _Optional[str] = ..., stable_version: _Optional[str] = ..., canary_version: _Optional[str] = ..., steps_bps: _Optional[_Iterable[int]] = ..., step_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., min_requests_per_step: _Optional[int] = ..., thresholds: _Optional[_Union[CanaryThresholds, _Mapping]] = ..., manual_promotion: _Optional[bool] = ..., salt: _Optional[str] = ..., state: _Optional[_Union[CanaryState, str]] = ..., current_step: _Optional[int] = ..., current_weight_bps: _Optional[int] = ..., step_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stable_stats: _Optional[_Union[CanarySideStats, _Mapping]] = ..., canary_stats: _Optional[_Union[CanarySideStats, _Mapping]] = ..., rollback_reason: _Optional[str] = ..., created_by: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status_message: _Optional[str] = ...) -> None: ...

class CanaryEvent(_message.Message):
    __slots__ = ("canary_id", "sequence", "event_type", "event_time", "from_weight_bps", "to_weight_bps", "step", "reason", "actor", "automatic", "stable_stats", "canary_stats")
    CANARY_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    FROM_WEIGHT_BPS_FIELD_NUMBER: _ClassVar[int]
    TO_WEIGHT_BPS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    AUTOMATIC_FIELD_NUMBER: _ClassVar[int]
    STABLE_STATS_FIELD_NUMBER: _ClassVar[int]
    CANARY_STATS_FIELD_NUMBER: _ClassVar[int]
    canary_id: str
    sequence: int
    event_type: CanaryEventType
    event_time: _timestamp_pb2.Timestamp
    from_weight_bps: int
    to_weight_bps: int
    step: int
    reason: str
    actor: str
    automatic: bool
    stable_stats: CanarySideStats
    canary_stats: CanarySideStats
    def __init__(self, canary_id: _Optional[str] = ..., sequence: _Optional[int] = ..., event_type: _Optional[_Union[CanaryEventType, str]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., from_weight_bps: _Optional[int] = ..., to_weight_bps: _Optional[int] = ..., step: _Optional[int] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ..., automatic: _Optional[bool] = ..., stable_stats: _Optional[_Union[CanarySideStats, _Mapping]] = ..., canary_stats: _Optional[_Union[CanarySideStats, _Mapping]] = ...) -> None: ...

class StartCanaryRequest(_message.Message):
    __slots__ = ("canary", "request_id")
    CANARY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    canary: Canary
    request_id: str
    def __init__(self, canary: _Optional[_Union[Canary, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class StartCanaryResponse(_message.Message):
    __slots__ = ("canary",)
    CANARY_FIELD_NUMBER: _ClassVar[int]
    canary: Canary
    def __init__(self, canary: _Optional[_Union[Canary, _Mapping]] = ...) -> None: ...

class GetCanaryRequest(_message.Message):
    __slots__ = ("canary_id",)
    CANARY_ID_FIELD_NUMBER: _ClassVar[int]
    canary_id: str
    def __init__(self, canary_id: _Optional[str] = ...) -> None: ...

class GetCanaryResponse(_message.Message):
    __slots__ = ("canary",)
    CANARY_FIELD_NUMBER: _ClassVar[int]
    canary: Canary
    def __init__(self, canary: _Optional[_Union[Canary, _Mapping]] = ...) -> None: ...

class ListCanariesRequest(_message.Message):
    __slots__ = ("model_name", "states", "page_size", "page_token")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    states: _containers.RepeatedScalarFieldContainer[CanaryState]
    page_size: int
    page_token: str
    def __init__(self, model_name: _Optional[str] = ..., states: _Optional[_Iterable[_Union[CanaryState, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCanariesResponse(_message.Message):
    __slots__ = ("canaries", "next_page_token")
    CANARIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    canaries: _containers.RepeatedCompositeFieldContainer[Canary]
    next_page_token: str
    def __init__(self, canaries: _Optional[_Iterable[_Union[Canary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class PauseCanaryRequest(_message.Message):
    __slots__ = ("canary_id", "reason")
    CANARY_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    canary_id: str
    reason: str
    def __init__(self, canary_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PauseCanaryResponse(_message.Message):
    __slots__ = ("canary",)
    CANARY_FIELD_NUMBER: _ClassVar[int]
    canary: Canary
    def __init__(self, canary: _Optional[_Union[Canary, _Mapping]] = ...) -> None: ...

class ResumeCanaryRequest(_message.Message):
    __slots__ = ("canary_id", "reason")
    CANARY_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    canary_id: str
    reason: str
    def __init__(self, canary_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResumeCanaryResponse(_message.Message):
    __slots__ = ("canary",)
    CANARY_FIELD_NUMBER: _ClassVar[int]
    canary: Canary
    def __init__(self, canary: _Optional[_Union[Canary, _Mapping]] = ...) -> None: ...

class RollbackCanaryRequest(_message.Message):
    __slots__ = ("canary_id", "reason")
    CANARY_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    canary_id: str
    reason: str
    def __init__(self, canary_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackCanaryResponse(_message.Message):
    __slots__ = ("canary",)
    CANARY_FIELD_NUMBER: _ClassVar[int]
    canary: Canary
    def __init__(self, canary: _Optional[_Union[Canary, _Mapping]] = ...) -> None: ...

class PromoteCanaryRequest(_message.Message):
    __slots__ = ("canary_id", "reason", "override_gates")
    CANARY_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_GATES_FIELD_NUMBER: _ClassVar[int]
    canary_id: str
    reason: str
    override_gates: bool
    def __init__(self, canary_id: _Optional[str] = ..., reason: _Optional[str] = ..., override_gates: _Optional[bool] = ...) -> None: ...

class PromoteCanaryResponse(_message.Message):
    __slots__ = ("canary",)
    CANARY_FIELD_NUMBER: _ClassVar[int]
    canary: Canary
    def __init__(self, canary: _Optional[_Union[Canary, _Mapping]] = ...) -> None: ...

class ListCanaryEventsRequest(_message.Message):
    __slots__ = ("canary_id", "page_size", "page_token")
    CANARY_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    canary_id: str
    page_size: int
    page_token: str
    def __init__(self, canary_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCanaryEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[CanaryEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[CanaryEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

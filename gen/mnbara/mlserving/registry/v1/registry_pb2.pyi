import datetime

from google.api import annotations_pb2 as _annotations_pb2
from mnbara.mlserving.auth.v1 import auth_pb2 as _auth_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_DEVELOPMENT: _ClassVar[Stage]
    STAGE_STAGING: _ClassVar[Stage]
    STAGE_PRODUCTION: _ClassVar[Stage]
    STAGE_ARCHIVED: _ClassVar[Stage]

class ModelVersionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_VERSION_STATUS_UNSPECIFIED: _ClassVar[ModelVersionStatus]
    MODEL_VERSION_STATUS_PENDING_REGISTRATION: _ClassVar[ModelVersionStatus]
    MODEL_VERSION_STATUS_READY: _ClassVar[ModelVersionStatus]
    MODEL_VERSION_STATUS_FAILED_REGISTRATION: _ClassVar[ModelVersionStatus]

class ArtifactFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARTIFACT_FORMAT_UNSPECIFIED: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_TORCHSERVE_MAR: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_DIRECTORY_ZIP: _ClassVar[ArtifactFormat]
    ARTIFACT_FORMAT_DIRECTORY_TAR_GZ: _ClassVar[ArtifactFormat]

class GateComparison(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GATE_COMPARISON_UNSPECIFIED: _ClassVar[GateComparison]
    GATE_COMPARISON_GREATER_THAN: _ClassVar[GateComparison]
    GATE_COMPARISON_GREATER_OR_EQUAL: _ClassVar[GateComparison]
    GATE_COMPARISON_LESS_THAN: _ClassVar[GateComparison]
    GATE_COMPARISON_LESS_OR_EQUAL: _ClassVar[GateComparison]

class RegistryEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REGISTRY_EVENT_TYPE_UNSPECIFIED: _ClassVar[RegistryEventType]
    REGISTRY_EVENT_TYPE_MODEL_CREATED: _ClassVar[RegistryEventType]
    REGISTRY_EVENT_TYPE_MODEL_UPDATED: _ClassVar[RegistryEventType]
    REGISTRY_EVENT_TYPE_MODEL_DELETED: _ClassVar[RegistryEventType]
    REGISTRY_EVENT_TYPE_VERSION_CREATED: _ClassVar[RegistryEventType]
    REGISTRY_EVENT_TYPE_VERSION_UPDATED: _ClassVar[RegistryEventType]
    REGISTRY_EVENT_TYPE_VERSION_DELETED: _ClassVar[RegistryEventType]
    REGISTRY_EVENT_TYPE_STAGE_CHANGED: _ClassVar[RegistryEventType]
    REGISTRY_EVENT_TYPE_ALIAS_SET: _ClassVar[RegistryEventType]
    REGISTRY_EVENT_TYPE_ALIAS_DELETED: _ClassVar[RegistryEventType]
STAGE_UNSPECIFIED: Stage
STAGE_DEVELOPMENT: Stage
STAGE_STAGING: Stage
STAGE_PRODUCTION: Stage
STAGE_ARCHIVED: Stage
MODEL_VERSION_STATUS_UNSPECIFIED: ModelVersionStatus
MODEL_VERSION_STATUS_PENDING_REGISTRATION: ModelVersionStatus
MODEL_VERSION_STATUS_READY: ModelVersionStatus
MODEL_VERSION_STATUS_FAILED_REGISTRATION: ModelVersionStatus
ARTIFACT_FORMAT_UNSPECIFIED: ArtifactFormat
ARTIFACT_FORMAT_TORCHSERVE_MAR: ArtifactFormat
ARTIFACT_FORMAT_DIRECTORY_ZIP: ArtifactFormat
ARTIFACT_FORMAT_DIRECTORY_TAR_GZ: ArtifactFormat
GATE_COMPARISON_UNSPECIFIED: GateComparison
GATE_COMPARISON_GREATER_THAN: GateComparison
GATE_COMPARISON_GREATER_OR_EQUAL: GateComparison
GATE_COMPARISON_LESS_THAN: GateComparison
GATE_COMPARISON_LESS_OR_EQUAL: GateComparison
REGISTRY_EVENT_TYPE_UNSPECIFIED: RegistryEventType
REGISTRY_EVENT_TYPE_MODEL_CREATED: RegistryEventType
REGISTRY_EVENT_TYPE_MODEL_UPDATED: RegistryEventType
REGISTRY_EVENT_TYPE_MODEL_DELETED: RegistryEventType
REGISTRY_EVENT_TYPE_VERSION_CREATED: RegistryEventType
REGISTRY_EVENT_TYPE_VERSION_UPDATED: RegistryEventType
REGISTRY_EVENT_TYPE_VERSION_DELETED: RegistryEventType
REGISTRY_EVENT_TYPE_STAGE_CHANGED: RegistryEventType
REGISTRY_EVENT_TYPE_ALIAS_SET: RegistryEventType
REGISTRY_EVENT_TYPE_ALIAS_DELETED: RegistryEventType

class MetricGate(_message.Message):
    __slots__ = ("metric", "comparison", "threshold", "target_stage")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    TARGET_STAGE_FIELD_NUMBER: _ClassVar[int]
    metric: str
    comparison: GateComparison
    threshold: float
    target_stage: Stage
    def __init__(self, metric: _Optional[str] = ..., comparison: _Optional[_Union[GateComparison, str]] = ..., threshold: _Optional[float] = ..., target_stage: _Optional[_Union[Stage, str]] = ...) -> None: ...

class GateResult(_message.Message):
    __slots__ = ("gate", "actual", "passed")
    GATE_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    gate: MetricGate
    actual: float
    passed: bool
    def __init__(self, gate: _Optional[_Union[MetricGate, _Mapping]] = ..., actual: _Optional[float] = ..., passed: _Optional[bool] = ...) -> None: ...

class PromotionPolicy(_message.Message):
    __slots__ = ("gates",)
    GATES_FIELD_NUMBER: _ClassVar[int]
    gates: _containers.RepeatedCompositeFieldContainer[MetricGate]
    def __init__(self, gates: _Optional[_Iterable[_Union[MetricGate, _Mapping]]] = ...) -> None: ...

class RegisteredModel(_message.Message):
    __slots__ = ("name", "description", "tags", "promotion_policy", "latest_version", "production_version", "staging_versions", "aliases", "create_time", "update_time")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AliasesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_POLICY_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    PRODUCTION_VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGING_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    tags: _containers.ScalarMap[str, str]
    promotion_policy: PromotionPolicy
    latest_version: str
    production_version: str
    staging_versions: _containers.RepeatedScalarFieldContainer[str]
    aliases: _containers.ScalarMap[str, str]
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., promotion_policy: _Optional[_Union[PromotionPolicy, _Mapping]] = ..., latest_version: _Optional[str] = ..., production_version: _Optional[str] = ..., staging_versions: _Optional[_Iterable[str]] = ..., aliases: _Optional[_Mapping[str, str]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "datatype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class ModelSignature(_message.Message):
    __slots__ = ("inputs", "outputs")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    def __init__(self, inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("model_name", "version", "description", "stage", "aliases", "artifact_uri", "artifact_format", "artifact_sha256", "artifact_size_bytes", "source_run_id", "metrics", "parameters", "tags", "status", "status_message", "created_by", "create_time", "update_time", "stage_update_time", "signature")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_URI_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    STAGE_UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    description: str
    stage: Stage
    aliases: _containers.RepeatedScalarFieldContainer[str]
    artifact_uri: str
    artifact_format: ArtifactFormat
    artifact_sha256: str
    artifact_size_bytes: int
    source_run_id: str
    metrics: _containers.ScalarMap[str, float]
    parameters: _containers.ScalarMap[str, str]
    tags: _containers.ScalarMap[str, str]
    status: ModelVersionStatus
    status_message: str
    created_by: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    stage_update_time: _timestamp_pb2.Timestamp
    signature: ModelSignature
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., description: _Optional[str] = ..., stage: _Optional[_Union[Stage, str]] = ..., aliases: _Optional[_Iterable[str]] = ..., artifact_uri: _Optional[str] = ..., artifact_format: _Optional[_Union[ArtifactFormat, str]] = ..., artifact_sha256: _Optional[str] = ..., artifact_size_bytes: _Optional[int] = ..., source_run_id: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., parameters: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Mapping[str, str]] = ..., status: _Optional[_Union[ModelVersionStatus, str]] = ..., status_message: _Optional[str] = ..., created_by: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stage_update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., signature: _Optional[_Union[ModelSignature, _Mapping]] = ...) -> None: ...

class StageTransition(_message.Message):
    __slots__ = ("transition_id", "model_name", "version", "from_stage", "to_stage", "actor", "reason", "transition_time", "override", "gate_results", "caused_by_transition_id")
    TRANSITION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FROM_STAGE_FIELD_NUMBER: _ClassVar[int]
    TO_STAGE_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_TIME_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    GATE_RESULTS_FIELD_NUMBER: _ClassVar[int]
    CAUSED_BY_TRANSITION_ID_FIELD_NUMBER: _ClassVar[int]
    transition_id: str
    model_name: str
    version: str
    from_stage: Stage
    to_stage: Stage
    actor: str
    reason: str
    transition_time: _timestamp_pb2.Timestamp
    override: bool
    gate_results: _containers.RepeatedCompositeFieldContainer[GateResult]
    caused_by_transition_id: str
    def __init__(self, transition_id: _Optional[str] = ..., model_name: _Optional[str] = ..., version: _Optional[str] = ..., from_stage: _Optional[_Union[Stage, str]] = ..., to_stage: _Optional[_Union[Stage, str]] = ..., actor: _Optional[str] = ..., reason: _Optional[str] = ..., transition_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., override: _Optional[bool] = ..., gate_results: _Optional[_Iterable[_Union[GateResult, _Mapping]]] = ..., caused_by_transition_id: _Optional[str] = ...) -> None: ...

class CreateRegisteredModelRequest(_message.Message):
    __slots__ = ("registered_model",)
    REGISTERED_MODEL_FIELD_NUMBER: _ClassVar[int]
    registered_model: RegisteredModel
    def __init__(self, registered_model: _Optional[_Union[RegisteredModel, _Mapping]] = ...) -> None: ...

class CreateRegisteredModelResponse(_message.Message):
    __slots__ = ("registered_model",)
    REGISTERED_MODEL_FIELD_NUMBER: _ClassVar[int]
    registered_model: RegisteredModel
    def __init__(self, registered_model: _Optional[_Union[RegisteredModel, _Mapping]] = ...) -> None: ...

class GetRegisteredModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetRegisteredModelResponse(_message.Message):
    __slots__ = ("registered_model",)
    REGISTERED_MODEL_FIELD_NUMBER: _ClassVar[int]
    registered_model: RegisteredModel
    def __init__(self, registered_model: _Optional[_Union[RegisteredModel, _Mapping]] = ...) -> None: ...

class ListRegisteredModelsRequest(_message.Message):
    __slots__ = ("name_contains", "tags", "page_size", "page_token")
    NAME_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name_contains: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    page_size: int
    page_token: str
    def __init__(self, name_contains: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRegisteredModelsResponse(_message.Message):
    __slots__ = ("registered_models", "next_page_token")
    REGISTERED_MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    registered_models: _containers.RepeatedCompositeFieldContainer[RegisteredModel]
    next_page_token: str
    def __init__(self, registered_models: _Optional[_Iterable[_Union[RegisteredModel, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateRegisteredModelRequest(_message.Message):
    __slots__ = ("name", "description", "set_tags", "remove_tag_keys", "promotion_policy")
    class SetTagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SET_TAGS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_TAG_KEYS_FIELD_NUMBER: _ClassVar[int]
    PROMOTION_POLICY_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    set_tags: _containers.ScalarMap[str, str]
    remove_tag_keys: _containers.RepeatedScalarFieldContainer[str]
    promotion_policy: PromotionPolicy
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., set_tags: _Optional[_Mapping[str, str]] = ..., remove_tag_keys: _Optional[_Iterable[str]] = ..., promotion_policy: _Optional[_Union[PromotionPolicy, _Mapping]] = ...) -> None: ...

class UpdateRegisteredModelResponse(_message.Message):
    __slots__ = ("registered_model",)
    REGISTERED_MODEL_FIELD_NUMBER: _ClassVar[int]
    registered_model: RegisteredModel
    def __init__(self, registered_model: _Optional[_Union[RegisteredModel, _Mapping]] = ...) -> None: ...

class DeleteRegisteredModelRequest(_message.Message):
    __slots__ = ("name", "force")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    force: bool
    def __init__(self, name: _Optional[str] = ..., force: _Optional[bool] = ...) -> None: ...

class DeleteRegisteredModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CreateModelVersionRequest(_message.Message):
    __slots__ = ("model_name", "artifact", "artifact_uri", "artifact_format", "artifact_file_name", "source_run_id", "metrics", "parameters", "tags", "description", "initial_stage", "create_model_if_missing", "request_id", "signature", "artifact_sha256")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ParametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_URI_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INITIAL_STAGE_FIELD_NUMBER: _ClassVar[int]
    CREATE_MODEL_IF_MISSING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_SHA256_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    artifact: bytes
    artifact_uri: str
    artifact_format: ArtifactFormat
    artifact_file_name: str
    source_run_id: str
    metrics: _containers.ScalarMap[str, float]
    parameters: _containers.ScalarMap[str, str]
    tags: _containers.ScalarMap[str, str]
    description: str
    initial_stage: Stage
    create_model_if_missing: bool
    request_id: str
    signature: ModelSignature
    artifact_sha256: str
    def __init__(self, model_name: _Optional[str] = ..., artifact: _Optional[bytes] = ..., artifact_uri: _Optional[str] = ..., artifact_format: _Optional[_Union[ArtifactFormat, str]] = ..., artifact_file_name: _Optional[str] = ..., source_run_id: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., parameters: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Mapping[str, str]] = ..., description: _Optional[str] = ..., initial_stage: _Optional[_Union[Stage, str]] = ..., create_model_if_missing: _Optional[bool] = ..., request_id: _Optional[str] = ..., signature: _Optional[_Union[ModelSignature, _Mapping]] = ..., artifact_sha256: _Optional[str] = ...) -> None: ...

class UploadArtifactRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadArtifactHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadArtifactHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadArtifactHeader(_message.Message):
    __slots__ = ("model_name", "file_name", "artifact_format", "size_bytes", "sha256")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    FILE_NAME_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    file_name: str
    artifact_format: ArtifactFormat
    size_bytes: int
    sha256: str
    def __init__(self, model_name: _Optional[str] = ..., file_name: _Optional[str] = ..., artifact_format: _Optional[_Union[ArtifactFormat, str]] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadArtifactResponse(_message.Message):
    __slots__ = ("artifact_uri", "sha256", "size_bytes", "artifact_format")
    ARTIFACT_URI_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    artifact_uri: str
    sha256: str
    size_bytes: int
    artifact_format: ArtifactFormat
    def __init__(self, artifact_uri: _Optional[str] = ..., sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., artifact_format: _Optional[_Union[ArtifactFormat, str]] = ...) -> None: ...

class CreateModelVersionResponse(_message.Message):
    __slots__ = ("model_version", "duplicate")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    model_version: ModelVersion
    duplicate: bool
    def __init__(self, model_version: _Optional[_Union[ModelVersion, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class GetModelVersionRequest(_message.Message):
    __slots__ = ("model_name", "version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class GetModelVersionResponse(_message.Message):
    __slots__ = ("model_version",)
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_version: ModelVersion
    def __init__(self, model_version: _Optional[_Union[ModelVersion, _Mapping]] = ...) -> None: ...

class ListModelVersionsRequest(_message.Message):
    __slots__ = ("model_name", "stages", "alias", "page_size", "page_token")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    stages: _containers.RepeatedScalarFieldContainer[Stage]
    alias: str
    page_size: int
    page_token: str
    def __init__(self, model_name: _Optional[str] = ..., stages: _Optional[_Iterable[_Union[Stage, str]]] = ..., alias: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelVersionsResponse(_message.Message):
    __slots__ = ("model_versions", "next_page_token", "event_sequence")
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    EVENT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    model_versions: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    next_page_token: str
    event_sequence: int
    def __init__(self, model_versions: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., event_sequence: _Optional[int] = ...) -> None: ...

class UpdateModelVersionRequest(_message.Message):
    __slots__ = ("model_name", "version", "description", "set_tags", "remove_tag_keys", "set_metrics")
    class SetTagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class SetMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SET_TAGS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_TAG_KEYS_FIELD_NUMBER: _ClassVar[int]
    SET_METRICS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    description: str
    set_tags: _containers.ScalarMap[str, str]
    remove_tag_keys: _containers.RepeatedScalarFieldContainer[str]
    set_metrics: _containers.ScalarMap[str, float]
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., description: _Optional[str] = ..., set_tags: _Optional[_Mapping[str, str]] = ..., remove_tag_keys: _Optional[_Iterable[str]] = ..., set_metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class UpdateModelVersionResponse(_message.Message):
    __slots__ = ("model_version",)
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_version: ModelVersion
    def __init__(self, model_version: _Optional[_Union[ModelVersion, _Mapping]] = ...) -> None: ...

class DeleteModelVersionRequest(_message.Message):
    __slots__ = ("model_name", "version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DeleteModelVersionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TransitionStageRequest(_message.Message):
    __slots__ = ("model_name", "version", "to_stage", "expected_stage", "extra_gates", "override", "reason", "actor")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_STAGE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_STAGE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_GATES_FIELD_NUMBER: _ClassVar[int]
    OVERRIDE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    to_stage: Stage
    expected_stage: Stage
    extra_gates: _containers.RepeatedCompositeFieldContainer[MetricGate]
    override: bool
    reason: str
    actor: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., to_stage: _Optional[_Union[Stage, str]] = ..., expected_stage: _Optional[_Union[Stage, str]] = ..., extra_gates: _Optional[_Iterable[_Union[MetricGate, _Mapping]]] = ..., override: _Optional[bool] = ..., reason: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class TransitionStageResponse(_message.Message):
    __slots__ = ("model_version", "transition", "archived_version")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_FIELD_NUMBER: _ClassVar[int]
    ARCHIVED_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_version: ModelVersion
    transition: StageTransition
    archived_version: ModelVersion
    def __init__(self, model_version: _Optional[_Union[ModelVersion, _Mapping]] = ..., transition: _Optional[_Union[StageTransition, _Mapping]] = ..., archived_version: _Optional[_Union[ModelVersion, _Mapping]] = ...) -> None: ...

class SetAliasRequest(_message.Message):
    __slots__ = ("model_name", "alias", "version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    alias: str
    version: str
    def __init__(self, model_name: _Optional[str] = ..., alias: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class SetAliasResponse(_message.Message):
    __slots__ = ("model_version", "previous_version")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_version: ModelVersion
    previous_version: str
    def __init__(self, model_version: _Optional[_Union[ModelVersion, _Mapping]] = ..., previous_version: _Optional[str] = ...) -> None: ...

class DeleteAliasRequest(_message.Message):
    __slots__ = ("model_name", "alias")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    alias: str
    def __init__(self, model_name: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...

class DeleteAliasResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResolveModelVersionRequest(_message.Message):
    __slots__ = ("model_name", "version", "stage", "alias", "as_of")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    stage: Stage
    alias: str
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., stage: _Optional[_Union[Stage, str]] = ..., alias: _Optional[str] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ResolveModelVersionResponse(_message.Message):
    __slots__ = ("model_version", "event_sequence")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    model_version: ModelVersion
    event_sequence: int
    def __init__(self, model_version: _Optional[_Union[ModelVersion, _Mapping]] = ..., event_sequence: _Optional[int] = ...) -> None: ...

class ListStageTransitionsRequest(_message.Message):
    __slots__ = ("model_name", "version", "start_time", "end_time", "actor", "page_size", "page_token")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    actor: str
    page_size: int
    page_token: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListStageTransitionsResponse(_message.Message):
    __slots__ = ("transitions", "next_page_token")
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    transitions: _containers.RepeatedCompositeFieldContainer[StageTransition]
    next_page_token: str
    def __init__(self, transitions: _Optional[_Iterable[_Union[StageTransition, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RegistryEvent(_message.Message):
    __slots__ = ("sequence", "event_type", "event_time", "model_name", "version", "from_stage", "to_stage", "alias", "actor", "model_version", "transition")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FROM_STAGE_FIELD_NUMBER: _ClassVar[int]
    TO_STAGE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    event_type: RegistryEventType
    event_time: _timestamp_pb2.Timestamp
    model_name: str
    version: str
    from_stage: Stage
    to_stage: Stage
    alias: str
    actor: str
    model_version: ModelVersion
    transition: StageTransition
    def __init__(self, sequence: _Optional[int] = ..., event_type: _Optional[_Union[RegistryEventType, str]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., model_name: _Optional[str] = ..., version: _Optional[str] = ..., from_stage: _Optional[_Union[Stage, str]] = ..., to_stage: _Optional[_Union[Stage, str]] = ..., alias: _Optional[str] = ..., actor: _Optional[str] = ..., model_version: _Optional[_Union[ModelVersion, _Mapping]] = ..., transition: _Optional[_Union[StageTransition, _Mapping]] = ...) -> None: ...

class WatchEventsRequest(_message.Message):
    __slots__ = ("after_sequence", "model_names", "event_types")
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAMES_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    model_names: _containers.RepeatedScalarFieldContainer[str]
    event_types: _containers.RepeatedScalarFieldContainer[RegistryEventType]
    def __init__(self, after_sequence: _Optional[int] = ..., model_names: _Optional[_Iterable[str]] = ..., event_types: _Optional[_Iterable[_Union[RegistryEventType, str]]] = ...) -> None: ...

class WatchEventsResponse(_message.Message):
    __slots__ = ("events", "head_sequence")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[RegistryEvent]
    head_sequence: int
    def __init__(self, events: _Optional[_Iterable[_Union[RegistryEvent, _Mapping]]] = ..., head_sequence: _Optional[int] = ...) -> None: ...

import datetime

from google.api import annotations_pb2 as _annotations_pb2
from mnbara.mlserving.auth.v1 import auth_pb2 as _auth_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from mnbara.mlserving.registry.v1 import registry_pb2 as _registry_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LoadedModelStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOADED_MODEL_STATUS_UNSPECIFIED: _ClassVar[LoadedModelStatus]
    LOADED_MODEL_STATUS_LOADING: _ClassVar[LoadedModelStatus]
    LOADED_MODEL_STATUS_READY: _ClassVar[LoadedModelStatus]
    LOADED_MODEL_STATUS_DEGRADED: _ClassVar[LoadedModelStatus]
    LOADED_MODEL_STATUS_UNAVAILABLE: _ClassVar[LoadedModelStatus]
    LOADED_MODEL_STATUS_UNLOADING: _ClassVar[LoadedModelStatus]

class WorkerStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_STATUS_UNSPECIFIED: _ClassVar[WorkerStatus]
    WORKER_STATUS_STARTING: _ClassVar[WorkerStatus]
    WORKER_STATUS_READY: _ClassVar[WorkerStatus]
    WORKER_STATUS_UNLOADING: _ClassVar[WorkerStatus]
    WORKER_STATUS_FAILED: _ClassVar[WorkerStatus]
LOADED_MODEL_STATUS_UNSPECIFIED: LoadedModelStatus
LOADED_MODEL_STATUS_LOADING: LoadedModelStatus
LOADED_MODEL_STATUS_READY: LoadedModelStatus
LOADED_MODEL_STATUS_DEGRADED: LoadedModelStatus
LOADED_MODEL_STATUS_UNAVAILABLE: LoadedModelStatus
LOADED_MODEL_STATUS_UNLOADING: LoadedModelStatus
WORKER_STATUS_UNSPECIFIED: WorkerStatus
WORKER_STATUS_STARTING: WorkerStatus
WORKER_STATUS_READY: WorkerStatus
WORKER_STATUS_UNLOADING: WorkerStatus
WORKER_STATUS_FAILED: WorkerStatus

class ResolvedModel(_message.Message):
    __slots__ = ("model_name", "model_version", "stage")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    stage: _registry_pb2.Stage
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., stage: _Optional[_Union[_registry_pb2.Stage, str]] = ...) -> None: ...

class PredictInstance(_message.Message):
    __slots__ = ("inputs", "raw_input")
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    RAW_INPUT_FIELD_NUMBER: _ClassVar[int]
    inputs: _struct_pb2.Struct
    raw_input: bytes
    def __init__(self, inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., raw_input: _Optional[bytes] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model_name", "version", "stage", "alias", "inputs", "raw_input", "raw_output")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    RAW_INPUT_FIELD_NUMBER: _ClassVar[int]
    RAW_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    stage: _registry_pb2.Stage
    alias: str
    inputs: _struct_pb2.Struct
    raw_input: bytes
    raw_output: bool
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., stage: _Optional[_Union[_registry_pb2.Stage, str]] = ..., alias: _Optional[str] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., raw_input: _Optional[bytes] = ..., raw_output: _Optional[bool] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model", "prediction", "raw_prediction", "model_latency_ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    RAW_PREDICTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    model: ResolvedModel
    prediction: _struct_pb2.Value
    raw_prediction: bytes
    model_latency_ms: float
    def __init__(self, model: _Optional[_Union[ResolvedModel, _Mapping]] = ..., prediction: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., raw_prediction: _Optional[bytes] = ..., model_latency_ms: _Optional[float] = ...) -> None: ...

class BatchPredictRequest(_message.Message):
    __slots__ = ("model_name", "version", "stage", "alias", "instances", "raw_output")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    RAW_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    stage: _registry_pb2.Stage
    alias: str
    instances: _containers.RepeatedCompositeFieldContainer[PredictInstance]
    raw_output: bool
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., stage: _Optional[_Union[_registry_pb2.Stage, str]] = ..., alias: _Optional[str] = ..., instances: _Optional[_Iterable[_Union[PredictInstance, _Mapping]]] = ..., raw_output: _Optional[bool] = ...) -> None: ...

class PredictResult(_message.Message):
    __slots__ = ("index", "prediction", "raw_prediction", "error")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    RAW_PREDICTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    index: int
    prediction: _struct_pb2.Value
    raw_prediction: bytes
    error: _status_pb2.Status
    def __init__(self, index: _Optional[int] = ..., prediction: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., raw_prediction: _Optional[bytes] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class BatchPredictResponse(_message.Message):
    __slots__ = ("model", "results", "success_count", "failure_count")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_COUNT_FIELD_NUMBER: _ClassVar[int]
    model: ResolvedModel
    results: _containers.RepeatedCompositeFieldContainer[PredictResult]
    success_count: int
    failure_count: int
    def __init__(self, model: _Optional[_Union[ResolvedModel, _Mapping]] = ..., results: _Optional[_Iterable[_Union[PredictResult, _Mapping]]] = ..., success_count: _Optional[int] = ..., failure_count: _Optional[int] = ...) -> None: ...

class StreamPredictRequest(_message.Message):
    __slots__ = ("model_name", "version", "stage", "alias", "inputs", "raw_input", "raw_output")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    RAW_INPUT_FIELD_NUMBER: _ClassVar[int]
    RAW_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    stage: _registry_pb2.Stage
    alias: str
    inputs: _struct_pb2.Struct
    raw_input: bytes
    raw_output: bool
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., stage: _Optional[_Union[_registry_pb2.Stage, str]] = ..., alias: _Optional[str] = ..., inputs: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., raw_input: _Optional[bytes] = ..., raw_output: _Optional[bool] = ...) -> None: ...

class StreamPredictResponse(_message.Message):
    __slots__ = ("model", "index", "prediction", "raw_prediction", "last")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    RAW_PREDICTION_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    model: ResolvedModel
    index: int
    prediction: _struct_pb2.Value
    raw_prediction: bytes
    last: bool
    def __init__(self, model: _Optional[_Union[ResolvedModel, _Mapping]] = ..., index: _Optional[int] = ..., prediction: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., raw_prediction: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class Worker(_message.Message):
    __slots__ = ("id", "status", "start_time", "pid", "memory_usage_bytes", "gpu")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    GPU_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: WorkerStatus
    start_time: _timestamp_pb2.Timestamp
    pid: int
    memory_usage_bytes: int
    gpu: bool
    def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[WorkerStatus, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pid: _Optional[int] = ..., memory_usage_bytes: _Optional[int] = ..., gpu: _Optional[bool] = ...) -> None: ...

class LoadedModel(_message.Message):
    __slots__ = ("model_name", "version", "status", "min_workers", "max_workers", "batch_size", "max_batch_delay", "response_timeout", "workers", "artifact_uri", "is_default_version", "load_time", "loaded_by")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MIN_WORKERS_FIELD_NUMBER: _ClassVar[int]
    MAX_WORKERS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_DELAY_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_URI_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOAD_TIME_FIELD_NUMBER: _ClassVar[int]
    LOADED_BY_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    status: LoadedModelStatus
    min_workers: int
    max_workers: int
    batch_size: int
    max_batch_delay: _duration_pb2.Duration
    response_timeout: _duration_pb2.Duration
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    artifact_uri: str
    is_default_version: bool
    load_time: _timestamp_pb2.Timestamp
    loaded_by: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., status: _Optional[_Union[LoadedModelStatus, str]] = ..., min_workers: _Optional[int] = ..., max_workers: _Optional[int] = ..., batch_size: _Optional[int] = ..., max_batch_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., response_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ..., artifact_uri: _Optional[str] = ..., is_default_version: _Optional[bool] = ..., load_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., loaded_by: _Optional[str] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("model_name", "version", "stage", "alias", "min_workers", "max_workers", "batch_size", "max_batch_delay", "response_timeout", "startup_timeout", "handler", "wait_until_ready", "set_default")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    MIN_WORKERS_FIELD_NUMBER: _ClassVar[int]
    MAX_WORKERS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_DELAY_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    STARTUP_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    HANDLER_FIELD_NUMBER: _ClassVar[int]
    WAIT_UNTIL_READY_FIELD_NUMBER: _ClassVar[int]
    SET_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    stage: _registry_pb2.Stage
    alias: str
    min_workers: int
    max_workers: int
    batch_size: int
    max_batch_delay: _duration_pb2.Duration
    response_timeout: _duration_pb2.Duration
    startup_timeout: _duration_pb2.Duration
    handler: str
    wait_until_ready: bool
    set_default: bool
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., stage: _Optional[_Union[_registry_pb2.Stage, str]] = ..., alias: _Optional[str] = ..., min_workers: _Optional[int] = ..., max_workers: _Optional[int] = ..., batch_size: _Optional[int] = ..., max_batch_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., response_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., startup_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., handler: _Optional[str] = ..., wait_until_ready: _Optional[bool] = ..., set_default: _Optional[bool] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("loaded_model",)
    LOADED_MODEL_FIELD_NUMBER: _ClassVar[int]
    loaded_model: LoadedModel
    def __init__(self, loaded_model: _Optional[_Union[LoadedModel, _Mapping]] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("model_name", "version", "drain_timeout")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DRAIN_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    drain_timeout: _duration_pb2.Duration
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., drain_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ScaleModelRequest(_message.Message):
    __slots__ = ("model_name", "version", "min_workers", "max_workers", "wait_until_ready")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MIN_WORKERS_FIELD_NUMBER: _ClassVar[int]
    MAX_WORKERS_FIELD_NUMBER: _ClassVar[int]
    WAIT_UNTIL_READY_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    min_workers: int
    max_workers: int
    wait_until_ready: bool
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., min_workers: _Optional[int] = ..., max_workers: _Optional[int] = ..., wait_until_ready: _Optional[bool] = ...) -> None: ...

class ScaleModelResponse(_message.Message):
    __slots__ = ("loaded_model",)
    LOADED_MODEL_FIELD_NUMBER: _ClassVar[int]
    loaded_model: LoadedModel
    def __init__(self, loaded_model: _Optional[_Union[LoadedModel, _Mapping]] = ...) -> None: ...

class ListLoadedModelsRequest(_message.Message):
    __slots__ = ("model_name", "page_size", "page_token")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    page_size: int
    page_token: str
    def __init__(self, model_name: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLoadedModelsResponse(_message.Message):
    __slots__ = ("loaded_models", "next_page_token")
    LOADED_MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    loaded_models: _containers.RepeatedCompositeFieldContainer[LoadedModel]
    next_page_token: str
    def __init__(self, loaded_models: _Optional[_Iterable[_Union[LoadedModel, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DescribeLoadedModelRequest(_message.Message):
    __slots__ = ("model_name", "version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DescribeLoadedModelResponse(_message.Message):
    __slots__ = ("loaded_model",)
    LOADED_MODEL_FIELD_NUMBER: _ClassVar[int]
    loaded_model: LoadedModel
    def __init__(self, loaded_model: _Optional[_Union[LoadedModel, _Mapping]] = ...) -> None: ...

import datetime

from google.api import annotations_pb2 as _annotations_pb2
from mnbara.mlserving.auth.v1 import auth_pb2 as _auth_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_TYPE_UNSPECIFIED: _ClassVar[FeatureType]
    FEATURE_TYPE_INT64: _ClassVar[FeatureType]
    FEATURE_TYPE_DOUBLE: _ClassVar[FeatureType]
    FEATURE_TYPE_STRING: _ClassVar[FeatureType]
    FEATURE_TYPE_BOOL: _ClassVar[FeatureType]
    FEATURE_TYPE_BYTES: _ClassVar[FeatureType]
    FEATURE_TYPE_TIMESTAMP: _ClassVar[FeatureType]
    FEATURE_TYPE_INT64_LIST: _ClassVar[FeatureType]
    FEATURE_TYPE_DOUBLE_LIST: _ClassVar[FeatureType]
    FEATURE_TYPE_STRING_LIST: _ClassVar[FeatureType]

class FeatureValueSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_VALUE_SOURCE_UNSPECIFIED: _ClassVar[FeatureValueSource]
    FEATURE_VALUE_SOURCE_ONLINE_STORE: _ClassVar[FeatureValueSource]
    FEATURE_VALUE_SOURCE_READ_THROUGH: _ClassVar[FeatureValueSource]
    FEATURE_VALUE_SOURCE_NOT_FOUND: _ClassVar[FeatureValueSource]

class FeaturesLayout(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURES_LAYOUT_UNSPECIFIED: _ClassVar[FeaturesLayout]
    FEATURES_LAYOUT_ENTITIES: _ClassVar[FeaturesLayout]
    FEATURES_LAYOUT_COLUMNS: _ClassVar[FeaturesLayout]

class MaterializationMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MATERIALIZATION_MODE_UNSPECIFIED: _ClassVar[MaterializationMode]
    MATERIALIZATION_MODE_INCREMENTAL: _ClassVar[MaterializationMode]
    MATERIALIZATION_MODE_FULL: _ClassVar[MaterializationMode]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_QUEUED: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_SUCCEEDED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]
    RUN_STATE_CANCELLED: _ClassVar[RunState]

class RunTrigger(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_TRIGGER_UNSPECIFIED: _ClassVar[RunTrigger]
    RUN_TRIGGER_MANUAL: _ClassVar[RunTrigger]
    RUN_TRIGGER_SCHEDULE: _ClassVar[RunTrigger]
    RUN_TRIGGER_ALERT: _ClassVar[RunTrigger]

class AlertState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_STATE_UNSPECIFIED: _ClassVar[AlertState]
    ALERT_STATE_FIRING: _ClassVar[AlertState]
    ALERT_STATE_RESOLVED: _ClassVar[AlertState]

class AlertSeverity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ALERT_SEVERITY_UNSPECIFIED: _ClassVar[AlertSeverity]
    ALERT_SEVERITY_INFO: _ClassVar[AlertSeverity]
    ALERT_SEVERITY_WARNING: _ClassVar[AlertSeverity]
    ALERT_SEVERITY_CRITICAL: _ClassVar[AlertSeverity]

class Comparison(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPARISON_UNSPECIFIED: _ClassVar[Comparison]
    COMPARISON_GREATER_THAN: _ClassVar[Comparison]
    COMPARISON_GREATER_OR_EQUAL: _ClassVar[Comparison]
    COMPARISON_LESS_THAN: _ClassVar[Comparison]
    COMPARISON_LESS_OR_EQUAL: _ClassVar[Comparison]

class Aggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGGREGATION_UNSPECIFIED: _ClassVar[Aggregation]
    AGGREGATION_MEAN: _ClassVar[Aggregation]
    AGGREGATION_SUM: _ClassVar[Aggregation]
    AGGREGATION_COUNT: _ClassVar[Aggregation]
    AGGREGATION_MIN: _ClassVar[Aggregation]
    AGGREGATION_MAX: _ClassVar[Aggregation]
    AGGREGATION_P50: _ClassVar[Aggregation]
    AGGREGATION_P95: _ClassVar[Aggregation]
    AGGREGATION_P99: _ClassVar[Aggregation]

class DegradationDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEGRADATION_DIRECTION_UNSPECIFIED: _ClassVar[DegradationDirection]
    DEGRADATION_DIRECTION_DECREASE: _ClassVar[DegradationDirection]
    DEGRADATION_DIRECTION_INCREASE: _ClassVar[DegradationDirection]

class DriftReference(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DRIFT_REFERENCE_UNSPECIFIED: _ClassVar[DriftReference]
    DRIFT_REFERENCE_WINDOW: _ClassVar[DriftReference]
    DRIFT_REFERENCE_TRAINING: _ClassVar[DriftReference]
FEATURE_TYPE_UNSPECIFIED: FeatureType
FEATURE_TYPE_INT64: FeatureType
FEATURE_TYPE_DOUBLE: FeatureType
FEATURE_TYPE_STRING: FeatureType
FEATURE_TYPE_BOOL: FeatureType
FEATURE_TYPE_BYTES: FeatureType
FEATURE_TYPE_TIMESTAMP: FeatureType
FEATURE_TYPE_INT64_LIST: FeatureType
FEATURE_TYPE_DOUBLE_LIST: FeatureType
FEATURE_TYPE_STRING_LIST: FeatureType
FEATURE_VALUE_SOURCE_UNSPECIFIED: FeatureValueSource
FEATURE_VALUE_SOURCE_ONLINE_STORE: FeatureValueSource
FEATURE_VALUE_SOURCE_READ_THROUGH: FeatureValueSource
FEATURE_VALUE_SOURCE_NOT_FOUND: FeatureValueSource
FEATURES_LAYOUT_UNSPECIFIED: FeaturesLayout
FEATURES_LAYOUT_ENTITIES: FeaturesLayout
FEATURES_LAYOUT_COLUMNS: FeaturesLayout
MATERIALIZATION_MODE_UNSPECIFIED: MaterializationMode
MATERIALIZATION_MODE_INCREMENTAL: MaterializationMode
MATERIALIZATION_MODE_FULL: MaterializationMode
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_QUEUED: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_SUCCEEDED: RunState
RUN_STATE_FAILED: RunState
RUN_STATE_CANCELLED: RunState
RUN_TRIGGER_UNSPECIFIED: RunTrigger
RUN_TRIGGER_MANUAL: RunTrigger
RUN_TRIGGER_SCHEDULE: RunTrigger
RUN_TRIGGER_ALERT: RunTrigger
ALERT_STATE_UNSPECIFIED: AlertState
ALERT_STATE_FIRING: AlertState
ALERT_STATE_RESOLVED: AlertState
ALERT_SEVERITY_UNSPECIFIED: AlertSeverity
ALERT_SEVERITY_INFO: AlertSeverity
ALERT_SEVERITY_WARNING: AlertSeverity
ALERT_SEVERITY_CRITICAL: AlertSeverity
COMPARISON_UNSPECIFIED: Comparison
COMPARISON_GREATER_THAN: Comparison
COMPARISON_GREATER_OR_EQUAL: Comparison
COMPARISON_LESS_THAN: Comparison
COMPARISON_LESS_OR_EQUAL: Comparison
AGGREGATION_UNSPECIFIED: Aggregation
AGGREGATION_MEAN: Aggregation
AGGREGATION_SUM: Aggregation
AGGREGATION_COUNT: Aggregation
AGGREGATION_MIN: Aggregation
AGGREGATION_MAX: Aggregation
AGGREGATION_P50: Aggregation
AGGREGATION_P95: Aggregation
AGGREGATION_P99: Aggregation
DEGRADATION_DIRECTION_UNSPECIFIED: DegradationDirection
DEGRADATION_DIRECTION_DECREASE: DegradationDirection
DEGRADATION_DIRECTION_INCREASE: DegradationDirection
DRIFT_REFERENCE_UNSPECIFIED: DriftReference
DRIFT_REFERENCE_WINDOW: DriftReference
DRIFT_REFERENCE_TRAINING: DriftReference

class Int64List(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, values: _Optional[_Iterable[int]] = ...) -> None: ...

class DoubleList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class StringList(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, values: _Optional[_Iterable[str]] = ...) -> None: ...

class FeatureValue(_message.Message):
    __slots__ = ("int64_value", "double_value", "string_value", "bool_value", "bytes_value", "timestamp_value", "int64_list_value", "double_list_value", "string_list_value")
    INT64_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    BYTES_VALUE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT64_LIST_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_LIST_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_LIST_VALUE_FIELD_NUMBER: _ClassVar[int]
    int64_value: int
    double_value: float
    string_value: str
    bool_value: bool
    bytes_value: bytes
    timestamp_value: _timestamp_pb2.Timestamp
    int64_list_value: Int64List
    double_list_value: DoubleList
    string_list_value: StringList
    def __init__(self, int64_value: _Optional[int] = ..., double_value: _Optional[float] = ..., string_value: _Optional[str] = ..., bool_value: _Optional[bool] = ..., bytes_value: _Optional[bytes] = ..., timestamp_value: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., int64_list_value: _Optional[_Union[Int64List, _Mapping]] = ..., double_list_value: _Optional[_Union[DoubleList, _Mapping]] = ..., string_list_value: _Optional[_Union[StringList, _Mapping]] = ...) -> None: ...

class Feature(_message.Message):
    __slots__ = ("value", "computed_at", "source", "event_time", "stale")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    value: FeatureValue
    computed_at: _timestamp_pb2.Timestamp
    source: FeatureValueSource
    event_time: _timestamp_pb2.Timestamp
    stale: bool
    def __init__(self, value: _Optional[_Union[FeatureValue, _Mapping]] = ..., computed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[_Union[FeatureValueSource, str]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stale: _Optional[bool] = ...) -> None: ...

class EntityFeatures(_message.Message):
    __slots__ = ("entity_id", "features", "read_through", "found")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Feature
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Feature, _Mapping]] = ...) -> None: ...
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    READ_THROUGH_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    entity_id: str
    features: _containers.MessageMap[str, Feature]
    read_through: bool
    found: bool
    def __init__(self, entity_id: _Optional[str] = ..., features: _Optional[_Mapping[str, Feature]] = ..., read_through: _Optional[bool] = ..., found: _Optional[bool] = ...) -> None: ...

class FeatureViewSelection(_message.Message):
    __slots__ = ("feature_view", "feature_names")
    FEATURE_VIEW_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    feature_view: str
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, feature_view: _Optional[str] = ..., feature_names: _Optional[_Iterable[str]] = ...) -> None: ...

class FeatureColumn(_message.Message):
    __slots__ = ("feature_view", "name", "type", "values")
    FEATURE_VIEW_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    feature_view: str
    name: str
    type: FeatureType
    values: TrainingSetColumn
    def __init__(self, feature_view: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[_Union[FeatureType, str]] = ..., values: _Optional[_Union[TrainingSetColumn, _Mapping]] = ...) -> None: ...

class FeatureViewStatus(_message.Message):
    __slots__ = ("feature_view", "found", "sources", "event_times", "computed_at", "stale")
    FEATURE_VIEW_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    SOURCES_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIMES_FIELD_NUMBER: _ClassVar[int]
    COMPUTED_AT_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    feature_view: str
    found: _containers.RepeatedScalarFieldContainer[bool]
    sources: _containers.RepeatedScalarFieldContainer[FeatureValueSource]
    event_times: TrainingSetColumn
    computed_at: TrainingSetColumn
    stale: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, feature_view: _Optional[str] = ..., found: _Optional[_Iterable[bool]] = ..., sources: _Optional[_Iterable[_Union[FeatureValueSource, str]]] = ..., event_times: _Optional[_Union[TrainingSetColumn, _Mapping]] = ..., computed_at: _Optional[_Union[TrainingSetColumn, _Mapping]] = ..., stale: _Optional[_Iterable[bool]] = ...) -> None: ...

class GetFeaturesRequest(_message.Message):
    __slots__ = ("feature_view", "entity_id", "entity_ids", "feature_names", "disable_read_through", "views", "layout")
    FEATURE_VIEW_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_IDS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    DISABLE_READ_THROUGH_FIELD_NUMBER: _ClassVar[int]
    VIEWS_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_FIELD_NUMBER: _ClassVar[int]
    feature_view: str
    entity_id: str
    entity_ids: _containers.RepeatedScalarFieldContainer[str]
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    disable_read_through: bool
    views: _containers.RepeatedCompositeFieldContainer[FeatureViewSelection]
    layout: FeaturesLayout
    def __init__(self, feature_view: _Optional[str] = ..., entity_id: _Optional[str] = ..., entity_ids: _Optional[_Iterable[str]] = ..., feature_names: _Optional[_Iterable[str]] = ..., disable_read_through: _Optional[bool] = ..., views: _Optional[_Iterable[_Union[FeatureViewSelection, _Mapping]]] = ..., layout: _Optional[_Union[FeaturesLayout, str]] = ...) -> None: ...

class GetFeaturesResponse(_message.Message):
    __slots__ = ("feature_view", "entities", "read_through_count", "online_store_unavailable", "entity_ids", "view_statuses", "columns")
    FEATURE_VIEW_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    READ_THROUGH_COUNT_FIELD_NUMBER: _ClassVar[int]
    ONLINE_STORE_UNAVAILABLE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_IDS_FIELD_NUMBER: _ClassVar[int]
    VIEW_STATUSES_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    feature_view: str
    entities: _containers.RepeatedCompositeFieldContainer[EntityFeatures]
    read_through_count: int
    online_store_unavailable: bool
    entity_ids: _containers.RepeatedScalarFieldContainer[str]
    view_statuses: _containers.RepeatedCompositeFieldContainer[FeatureViewStatus]
    columns: _containers.RepeatedCompositeFieldContainer[FeatureColumn]
    def __init__(self, feature_view: _Optional[str] = ..., entities: _Optional[_Iterable[_Union[EntityFeatures, _Mapping]]] = ..., read_through_count: _Optional[int] = ..., online_store_unavailable: _Optional[bool] = ..., entity_ids: _Optional[_Iterable[str]] = ..., view_statuses: _Optional[_Iterable[_Union[FeatureViewStatus, _Mapping]]] = ..., columns: _Optional[_Iterable[_Union[FeatureColumn, _Mapping]]] = ...) -> None: ...

class EntitySpec(_message.Message):
    __slots__ = ("name", "join_key", "value_type", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    JOIN_KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    join_key: str
    value_type: FeatureType
    description: str
    def __init__(self, name: _Optional[str] = ..., join_key: _Optional[str] = ..., value_type: _Optional[_Union[FeatureType, str]] = ..., description: _Optional[str] = ...) -> None: ...

class FeatureSpec(_message.Message):
    __slots__ = ("name", "type", "description", "dimension")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DIMENSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: FeatureType
    description: str
    dimension: int
    def __init__(self, name: _Optional[str] = ..., type: _Optional[_Union[FeatureType, str]] = ..., description: _Optional[str] = ..., dimension: _Optional[int] = ...) -> None: ...

class FeatureSource(_message.Message):
    __slots__ = ("query", "timestamp_column", "connection")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_COLUMN_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_FIELD_NUMBER: _ClassVar[int]
    query: str
    timestamp_column: str
    connection: str
    def __init__(self, query: _Optional[str] = ..., timestamp_column: _Optional[str] = ..., connection: _Optional[str] = ...) -> None: ...

class FeatureView(_message.Message):
    __slots__ = ("name", "description", "entity", "features", "source", "ttl", "materialization_schedule", "materialized_until", "last_materialization_time", "tags", "definition_hash", "compute_on_miss")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    MATERIALIZATION_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    MATERIALIZED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    LAST_MATERIALIZATION_TIME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_HASH_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_ON_MISS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    entity: EntitySpec
    features: _containers.RepeatedCompositeFieldContainer[FeatureSpec]
    source: FeatureSource
    ttl: _duration_pb2.Duration
    materialization_schedule: str
    materialized_until: _timestamp_pb2.Timestamp
    last_materialization_time: _timestamp_pb2.Timestamp
    tags: _containers.ScalarMap[str, str]
    definition_hash: str
    compute_on_miss: bool
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., entity: _Optional[_Union[EntitySpec, _Mapping]] = ..., features: _Optional[_Iterable[_Union[FeatureSpec, _Mapping]]] = ..., source: _Optional[_Union[FeatureSource, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., materialization_schedule: _Optional[str] = ..., materialized_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_materialization_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tags: _Optional[_Mapping[str, str]] = ..., definition_hash: _Optional[str] = ..., compute_on_miss: _Optional[bool] = ...) -> None: ...

class GetFeatureSchemaRequest(_message.Message):
    __slots__ = ("feature_view",)
    FEATURE_VIEW_FIELD_NUMBER: _ClassVar[int]
    feature_view: str
    def __init__(self, feature_view: _Optional[str] = ...) -> None: ...

class GetFeatureSchemaResponse(_message.Message):
    __slots__ = ("feature_views", "version")
    FEATURE_VIEWS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    feature_views: _containers.RepeatedCompositeFieldContainer[FeatureView]
    version: str
    def __init__(self, feature_views: _Optional[_Iterable[_Union[FeatureView, _Mapping]]] = ..., version: _Optional[str] = ...) -> None: ...

class TrainingSetEntityRow(_message.Message):
    __slots__ = ("entity_ids", "timestamp", "columns")
    class EntityIdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class ColumnsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: FeatureValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[FeatureValue, _Mapping]] = ...) -> None: ...
    ENTITY_IDS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    entity_ids: _containers.ScalarMap[str, str]
    timestamp: _timestamp_pb2.Timestamp
    columns: _containers.MessageMap[str, FeatureValue]
    def __init__(self, entity_ids: _Optional[_Mapping[str, str]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., columns: _Optional[_Mapping[str, FeatureValue]] = ...) -> None: ...

class GetTrainingSetRequest(_message.Message):
    __slots__ = ("entity_rows", "entity_query", "timestamp_column", "features")
    ENTITY_ROWS_FIELD_NUMBER: _ClassVar[int]
    ENTITY_QUERY_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_COLUMN_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    entity_rows: TrainingSetEntityRows
    entity_query: str
    timestamp_column: str
    features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entity_rows: _Optional[_Union[TrainingSetEntityRows, _Mapping]] = ..., entity_query: _Optional[str] = ..., timestamp_column: _Optional[str] = ..., features: _Optional[_Iterable[str]] = ...) -> None: ...

class TrainingSetEntityRows(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[TrainingSetEntityRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[TrainingSetEntityRow, _Mapping]]] = ...) -> None: ...

class TrainingSetFeature(_message.Message):
    __slots__ = ("feature_view", "name", "type")
    FEATURE_VIEW_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    feature_view: str
    name: str
    type: FeatureType
    def __init__(self, feature_view: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[_Union[FeatureType, str]] = ...) -> None: ...

class TrainingSetColumn(_message.Message):
    __slots__ = ("null_rows", "int64_values", "double_values", "string_values", "bool_values", "bytes_values", "timestamp_micros", "int64_list_values", "double_list_values", "string_list_values", "list_lengths")
    NULL_ROWS_FIELD_NUMBER: _ClassVar[int]
    INT64_VALUES_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUES_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUES_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUES_FIELD_NUMBER: _ClassVar[int]
    BYTES_VALUES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MICROS_FIELD_NUMBER: _ClassVar[int]
    INT64_LIST_VALUES_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_LIST_VALUES_FIELD_NUMBER: _ClassVar[int]
    STRING_LIST_VALUES_FIELD_NUMBER: _ClassVar[int]
    LIST_LENGTHS_FIELD_NUMBER: _ClassVar[int]
    null_rows: _containers.RepeatedScalarFieldContainer[int]
    int64_values: _containers.RepeatedScalarFieldContainer[int]
    double_values: _containers.RepeatedScalarFieldContainer[float]
    string_values: _containers.RepeatedScalarFieldContainer[str]
    bool_values: _containers.RepeatedScalarFieldContainer[bool]
    bytes_values: _containers.RepeatedScalarFieldContainer[bytes]
    timestamp_micros: _containers.RepeatedScalarFieldContainer[int]
    int64_list_values: _containers.RepeatedCompositeFieldContainer[Int64List]
    double_list_values: _containers.RepeatedCompositeFieldContainer[DoubleList]
    string_list_values: _containers.RepeatedCompositeFieldContainer[StringList]
    list_lengths: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, null_rows: _Optional[_Iterable[int]] = ..., int64_values: _Optional[_Iterable[int]] = ..., double_values: _Optional[_Iterable[float]] = ..., string_values: _Optional[_Iterable[str]] = ..., bool_values: _Optional[_Iterable[bool]] = ..., bytes_values: _Optional[_Iterable[bytes]] = ..., timestamp_micros: _Optional[_Iterable[int]] = ..., int64_list_values: _Optional[_Iterable[_Union[Int64List, _Mapping]]] = ..., double_list_values: _Optional[_Iterable[_Union[DoubleList, _Mapping]]] = ..., string_list_values: _Optional[_Iterable[_Union[StringList, _Mapping]]] = ..., list_lengths: _Optional[_Iterable[int]] = ...) -> None: ...

class GetTrainingSetResponse(_message.Message):
    __slots__ = ("join_keys", "column_names", "feature_views", "features", "row_count", "row_indexes", "entity_ids", "timestamps", "columns", "event_times", "values")
    JOIN_KEYS_FIELD_NUMBER: _ClassVar[int]
    COLUMN_NAMES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_VIEWS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    ROW_INDEXES_FIELD_NUMBER: _ClassVar[int]
    ENTITY_IDS_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIMES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    join_keys: _containers.RepeatedScalarFieldContainer[str]
    column_names: _containers.RepeatedScalarFieldContainer[str]
    feature_views: _containers.RepeatedScalarFieldContainer[str]
    features: _containers.RepeatedCompositeFieldContainer[TrainingSetFeature]
    row_count: int
    row_indexes: _containers.RepeatedScalarFieldContainer[int]
    entity_ids: _containers.RepeatedCompositeFieldContainer[TrainingSetColumn]
    timestamps: TrainingSetColumn
    columns: _containers.RepeatedCompositeFieldContainer[TrainingSetColumn]
    event_times: _containers.RepeatedCompositeFieldContainer[TrainingSetColumn]
    values: _containers.RepeatedCompositeFieldContainer[TrainingSetColumn]
    def __init__(self, join_keys: _Optional[_Iterable[str]] = ..., column_names: _Optional[_Iterable[str]] = ..., feature_views: _Optional[_Iterable[str]] = ..., features: _Optional[_Iterable[_Union[TrainingSetFeature, _Mapping]]] = ..., row_count: _Optional[int] = ..., row_indexes: _Optional[_Iterable[int]] = ..., entity_ids: _Optional[_Iterable[_Union[TrainingSetColumn, _Mapping]]] = ..., timestamps: _Optional[_Union[TrainingSetColumn, _Mapping]] = ..., columns: _Optional[_Iterable[_Union[TrainingSetColumn, _Mapping]]] = ..., event_times: _Optional[_Iterable[_Union[TrainingSetColumn, _Mapping]]] = ..., values: _Optional[_Iterable[_Union[TrainingSetColumn, _Mapping]]] = ...) -> None: ...

class MaterializationJob(_message.Message):
    __slots__ = ("job_id", "feature_view", "mode", "state", "window_start", "window_end", "entities_written", "create_time", "start_time", "end_time", "error", "entities_total", "resumed_job_id", "entities_deleted")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURE_VIEW_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RESUMED_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITIES_DELETED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    feature_view: str
    mode: MaterializationMode
    state: JobState
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    entities_written: int
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    error: _status_pb2.Status
    entities_total: int
    resumed_job_id: str
    entities_deleted: int
    def __init__(self, job_id: _Optional[str] = ..., feature_view: _Optional[str] = ..., mode: _Optional[_Union[MaterializationMode, str]] = ..., state: _Optional[_Union[JobState, str]] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., entities_written: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., entities_total: _Optional[int] = ..., resumed_job_id: _Optional[str] = ..., entities_deleted: _Optional[int] = ...) -> None: ...

class MaterializeFeaturesRequest(_message.Message):
    __slots__ = ("feature_views", "mode", "start_time", "end_time", "wait")
    FEATURE_VIEWS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    feature_views: _containers.RepeatedScalarFieldContainer[str]
    mode: MaterializationMode
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    wait: bool
    def __init__(self, feature_views: _Optional[_Iterable[str]] = ..., mode: _Optional[_Union[MaterializationMode, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., wait: _Optional[bool] = ...) -> None: ...

class GetMaterializationJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetMaterializationJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: MaterializationJob
    def __init__(self, job: _Optional[_Union[MaterializationJob, _Mapping]] = ...) -> None: ...

class MaterializeFeaturesResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[MaterializationJob]
    def __init__(self, jobs: _Optional[_Iterable[_Union[MaterializationJob, _Mapping]]] = ...) -> None: ...

class RetrainingRun(_message.Message):
    __slots__ = ("run_id", "model_name", "state", "trigger", "reason", "parameters", "schedule_id", "alert_id", "create_time", "start_time", "end_time", "metrics", "mlflow_run_id", "registered_version", "error", "attempt", "worker_id", "idempotency_key", "progress", "stage", "heartbeat_time", "max_attempts", "cancel_requested")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    MLFLOW_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIME_FIELD_NUMBER: _ClassVar[int]
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    model_name: str
    state: RunState
    trigger: RunTrigger
    reason: str
    parameters: _struct_pb2.Struct
    schedule_id: str
    alert_id: str
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    metrics: _containers.ScalarMap[str, float]
    mlflow_run_id: str
    registered_version: str
    error: _status_pb2.Status
    attempt: int
    worker_id: str
    idempotency_key: str
    progress: float
    stage: str
    heartbeat_time: _timestamp_pb2.Timestamp
    max_attempts: int
    cancel_requested: bool
    def __init__(self, run_id: _Optional[str] = ..., model_name: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., trigger: _Optional[_Union[RunTrigger, str]] = ..., reason: _Optional[str] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., schedule_id: _Optional[str] = ..., alert_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., mlflow_run_id: _Optional[str] = ..., registered_version: _Optional[str] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., attempt: _Optional[int] = ..., worker_id: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., progress: _Optional[float] = ..., stage: _Optional[str] = ..., heartbeat_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., max_attempts: _Optional[int] = ..., cancel_requested: _Optional[bool] = ...) -> None: ...

class TriggerRetrainingRequest(_message.Message):
    __slots__ = ("model_name", "reason", "parameters", "idempotency_key")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    reason: str
    parameters: _struct_pb2.Struct
    idempotency_key: str
    def __init__(self, model_name: _Optional[str] = ..., reason: _Optional[str] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class TriggerRetrainingResponse(_message.Message):
    __slots__ = ("run_id", "run", "duplicate")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    run: RetrainingRun
    duplicate: bool
    def __init__(self, run_id: _Optional[str] = ..., run: _Optional[_Union[RetrainingRun, _Mapping]] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class GetRetrainingStatusRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetRetrainingStatusResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: RetrainingRun
    def __init__(self, run: _Optional[_Union[RetrainingRun, _Mapping]] = ...) -> None: ...

class CancelRetrainingRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class CancelRetrainingRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: RetrainingRun
    def __init__(self, run: _Optional[_Union[RetrainingRun, _Mapping]] = ...) -> None: ...

class ListRetrainingRunsRequest(_message.Message):
    __slots__ = ("model_name", "states", "page_size", "page_token")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    states: _containers.RepeatedScalarFieldContainer[RunState]
    page_size: int
    page_token: str
    def __init__(self, model_name: _Optional[str] = ..., states: _Optional[_Iterable[_Union[RunState, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRetrainingRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RetrainingRun]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[RetrainingRun, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RetrainingSchedule(_message.Message):
    __slots__ = ("schedule_id", "model_name", "cron", "time_zone", "parameters", "reason", "enabled", "next_run_time", "last_run_time", "last_run_id", "created_by", "create_time", "jitter_seconds")
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    CRON_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    NEXT_RUN_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    JITTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    schedule_id: str
    model_name: str
    cron: str
    time_zone: str
    parameters: _struct_pb2.Struct
    reason: str
    enabled: bool
    next_run_time: _timestamp_pb2.Timestamp
    last_run_time: _timestamp_pb2.Timestamp
    last_run_id: str
    created_by: str
    create_time: _timestamp_pb2.Timestamp
    jitter_seconds: int
    def __init__(self, schedule_id: _Optional[str] = ..., model_name: _Optional[str] = ..., cron: _Optional[str] = ..., time_zone: _Optional[str] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., reason: _Optional[str] = ..., enabled: _Optional[bool] = ..., next_run_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_run_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_run_id: _Optional[str] = ..., created_by: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., jitter_seconds: _Optional[int] = ...) -> None: ...

class CreateRetrainingScheduleRequest(_message.Message):
    __slots__ = ("schedule",)
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    schedule: RetrainingSchedule
    def __init__(self, schedule: _Optional[_Union[RetrainingSchedule, _Mapping]] = ...) -> None: ...

class CreateRetrainingScheduleResponse(_message.Message):
    __slots__ = ("schedule",)
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    schedule: RetrainingSchedule
    def __init__(self, schedule: _Optional[_Union[RetrainingSchedule, _Mapping]] = ...) -> None: ...

class GetRetrainingScheduleRequest(_message.Message):
    __slots__ = ("schedule_id",)
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    schedule_id: str
    def __init__(self, schedule_id: _Optional[str] = ...) -> None: ...

class GetRetrainingScheduleResponse(_message.Message):
    __slots__ = ("schedule",)
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    schedule: RetrainingSchedule
    def __init__(self, schedule: _Optional[_Union[RetrainingSchedule, _Mapping]] = ...) -> None: ...

class ListRetrainingSchedulesRequest(_message.Message):
    __slots__ = ("model_name", "page_size", "page_token")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    page_size: int
    page_token: str
    def __init__(self, model_name: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListRetrainingSchedulesResponse(_message.Message):
    __slots__ = ("schedules", "next_page_token")
    SCHEDULES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    schedules: _containers.RepeatedCompositeFieldContainer[RetrainingSchedule]
    next_page_token: str
    def __init__(self, schedules: _Optional[_Iterable[_Union[RetrainingSchedule, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteRetrainingScheduleRequest(_message.Message):
    __slots__ = ("schedule_id",)
    SCHEDULE_ID_FIELD_NUMBER: _ClassVar[int]
    schedule_id: str
    def __init__(self, schedule_id: _Optional[str] = ...) -> None: ...

class DeleteRetrainingScheduleResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RecordMetricRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "metric_name", "value", "time", "labels", "event_id")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRIC_NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    metric_name: str
    value: float
    time: _timestamp_pb2.Timestamp
    labels: _containers.ScalarMap[str, str]
    event_id: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., metric_name: _Optional[str] = ..., value: _Optional[float] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., event_id: _Optional[str] = ...) -> None: ...

class RecordMetricResponse(_message.Message):
    __slots__ = ("duplicate",)
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    duplicate: bool
    def __init__(self, duplicate: _Optional[bool] = ...) -> None: ...

class BatchRecordMetricsRequest(_message.Message):
    __slots__ = ("metrics",)
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[RecordMetricRequest]
    def __init__(self, metrics: _Optional[_Iterable[_Union[RecordMetricRequest, _Mapping]]] = ...) -> None: ...

class BatchRecordMetricsResponse(_message.Message):
    __slots__ = ("applied_count", "duplicate_count")
    APPLIED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    applied_count: int
    duplicate_count: int
    def __init__(self, applied_count: _Optional[int] = ..., duplicate_count: _Optional[int] = ...) -> None: ...

class ThresholdCondition(_message.Message):
    __slots__ = ("comparison", "threshold")
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    comparison: Comparison
    threshold: float
    def __init__(self, comparison: _Optional[_Union[Comparison, str]] = ..., threshold: _Optional[float] = ...) -> None: ...

class RelativeDegradationCondition(_message.Message):
    __slots__ = ("baseline_window", "max_relative_change", "direction")
    BASELINE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    MAX_RELATIVE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    baseline_window: _duration_pb2.Duration
    max_relative_change: float
    direction: DegradationDirection
    def __init__(self, baseline_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_relative_change: _Optional[float] = ..., direction: _Optional[_Union[DegradationDirection, str]] = ...) -> None: ...

class DriftCondition(_message.Message):
    __slots__ = ("reference_window", "bins", "psi_threshold", "reference", "feature")
    REFERENCE_WINDOW_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    PSI_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    reference_window: _duration_pb2.Duration
    bins: int
    psi_threshold: float
    reference: DriftReference
    feature: str
    def __init__(self, reference_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., bins: _Optional[int] = ..., psi_threshold: _Optional[float] = ..., reference: _Optional[_Union[DriftReference, str]] = ..., feature: _Optional[str] = ...) -> None: ...

class AlertRule(_message.Message):
    __slots__ = ("rule_id", "name", "description", "model_name", "model_version", "metric_name", "label_filter", "threshold", "degradation", "drift", "window", "aggregation", "for_duration", "min_samples", "severity", "webhook_url", "trigger_retraining", "retraining_parameters", "enabled", "create_time", "update_time")
    class LabelFilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRIC_NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_FILTER_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DEGRADATION_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    FOR_DURATION_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    WEBHOOK_URL_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_RETRAINING_FIELD_NUMBER: _ClassVar[int]
    RETRAINING_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    name: str
    description: str
    model_name: str
    model_version: str
    metric_name: str
    label_filter: _containers.ScalarMap[str, str]
    threshold: ThresholdCondition
    degradation: RelativeDegradationCondition
    drift: DriftCondition
    window: _duration_pb2.Duration
    aggregation: Aggregation
    for_duration: _duration_pb2.Duration
    min_samples: int
    severity: AlertSeverity
    webhook_url: str
    trigger_retraining: bool
    retraining_parameters: _struct_pb2.Struct
    enabled: bool
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, rule_id: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., metric_name: _Optional[str] = ..., label_filter: _Optional[_Mapping[str, str]] = ..., threshold: _Optional[_Union[ThresholdCondition, _Mapping]] = ..., degradation: _Optional[_Union[RelativeDegradationCondition, _Mapping]] = ..., drift: _Optional[_Union[DriftCondition, _Mapping]] = ..., window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., aggregation: _Optional[_Union[Aggregation, str]] = ..., for_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., min_samples: _Optional[int] = ..., severity: _Optional[_Union[AlertSeverity, str]] = ..., webhook_url: _Optional[str] = ..., trigger_retraining: _Optional[bool] = ..., retraining_parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., enabled: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Alert(_message.Message):
    __slots__ = ("alert_id", "rule_id", "rule_name", "model_name", "model_version", "metric_name", "state", "severity", "value", "reference_value", "message", "fire_time", "resolve_time", "last_evaluation_time", "retraining_run_id")
    ALERT_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    RULE_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    METRIC_NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_VALUE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    RESOLVE_TIME_FIELD_NUMBER: _ClassVar[int]
    LAST_EVALUATION_TIME_FIELD_NUMBER: _ClassVar[int]
    RETRAINING_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    alert_id: str
    rule_id: str
    rule_name: str
    model_name: str
    model_version: str
    metric_name: str
    state: AlertState
    severity: AlertSeverity
    value: float
    reference_value: float
    message: str
    fire_time: _timestamp_pb2.Timestamp
    resolve_time: _timestamp_pb2.Timestamp
    last_evaluation_time: _timestamp_pb2.Timestamp
    retraining_run_id: str
    def __init__(self, alert_id: _Optional[str] = ..., rule_id: _Optional[str] = ..., rule_name: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., metric_name: _Optional[str] = ..., state: _Optional[_Union[AlertState, str]] = ..., severity: _Optional[_Union[AlertSeverity, str]] = ..., value: _Optional[float] = ..., reference_value: _Optional[float] = ..., message: _Optional[str] = ..., fire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resolve_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_evaluation_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., retraining_run_id: _Optional[str] = ...) -> None: ...

class ListAlertsRequest(_message.Message):
    __slots__ = ("model_name", "states", "rule_id", "min_severity", "page_size", "page_token")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    MIN_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    states: _containers.RepeatedScalarFieldContainer[AlertState]
    rule_id: str
    min_severity: AlertSeverity
    page_size: int
    page_token: str
    def __init__(self, model_name: _Optional[str] = ..., states: _Optional[_Iterable[_Union[AlertState, str]]] = ..., rule_id: _Optional[str] = ..., min_severity: _Optional[_Union[AlertSeverity, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAlertsResponse(_message.Message):
    __slots__ = ("alerts", "next_page_token")
    ALERTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    alerts: _containers.RepeatedCompositeFieldContainer[Alert]
    next_page_token: str
    def __init__(self, alerts: _Optional[_Iterable[_Union[Alert, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CreateAlertRuleRequest(_message.Message):
    __slots__ = ("rule",)
    RULE_FIELD_NUMBER: _ClassVar[int]
    rule: AlertRule
    def __init__(self, rule: _Optional[_Union[AlertRule, _Mapping]] = ...) -> None: ...

class CreateAlertRuleResponse(_message.Message):
    __slots__ = ("rule",)
    RULE_FIELD_NUMBER: _ClassVar[int]
    rule: AlertRule
    def __init__(self, rule: _Optional[_Union[AlertRule, _Mapping]] = ...) -> None: ...

class GetAlertRuleRequest(_message.Message):
    __slots__ = ("rule_id",)
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    def __init__(self, rule_id: _Optional[str] = ...) -> None: ...

class GetAlertRuleResponse(_message.Message):
    __slots__ = ("rule",)
    RULE_FIELD_NUMBER: _ClassVar[int]
    rule: AlertRule
    def __init__(self, rule: _Optional[_Union[AlertRule, _Mapping]] = ...) -> None: ...

class ListAlertRulesRequest(_message.Message):
    __slots__ = ("model_name", "page_size", "page_token")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    page_size: int
    page_token: str
    def __init__(self, model_name: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAlertRulesResponse(_message.Message):
    __slots__ = ("rules", "next_page_token")
    RULES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[AlertRule]
    next_page_token: str
    def __init__(self, rules: _Optional[_Iterable[_Union[AlertRule, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateAlertRuleRequest(_message.Message):
    __slots__ = ("rule", "update_mask")
    RULE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    rule: AlertRule
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, rule: _Optional[_Union[AlertRule, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateAlertRuleResponse(_message.Message):
    __slots__ = ("rule",)
    RULE_FIELD_NUMBER: _ClassVar[int]
    rule: AlertRule
    def __init__(self, rule: _Optional[_Union[AlertRule, _Mapping]] = ...) -> None: ...

class DeleteAlertRuleRequest(_message.Message):
    __slots__ = ("rule_id",)
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    rule_id: str
    def __init__(self, rule_id: _Optional[str] = ...) -> None: ...

class DeleteAlertRuleResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

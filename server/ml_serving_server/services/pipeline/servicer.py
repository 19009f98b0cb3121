"""PipelineService over gRPC: map the request, call the domain, map the response.

GetFeatureSchema, GetFeatures (by entity or by column, one view or several), MaterializeFeatures,
GetMaterializationJob, GetTrainingSet (server streaming), retraining runs and schedules
(retraining_rpcs.py) and the monitor (monitoring_rpcs.py) are built; any other RPC falls through
to the generated base, which the error interceptor answers with UNIMPLEMENTED (NOT_IMPLEMENTED).
Domain errors become statuses in the runtime's one mapping (runtime/status.py).
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone
from itertools import chain

from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import code_pb2, error_details_pb2, status_pb2
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb
from mnbara.mlserving.pipeline.v1 import pipeline_pb2_grpc

from ...errors import InvalidArgument
from .domain.feature_views import FeatureView, ValueType
from .domain.materialization import FULL, INCREMENTAL
from .domain.monitor import Monitor
from .domain.online import EntityResult, FeaturesResult, ValueSource, ViewSelection
from .domain.ports import Job
from .domain.runs import RetrainingRuns
from .domain.schedules import RetrainingSchedules
from .domain.service import FeatureStore
from .domain.training import ColumnKind, InlineRow
from .metrics import count_feature_reads
from .monitoring_rpcs import MonitoringRpcs
from .retraining_rpcs import ERROR_DOMAIN, RetrainingRpcs
from .wire import timestamp

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)

_TYPES = {
    ValueType.INT: pb.FEATURE_TYPE_INT64,
    ValueType.FLOAT: pb.FEATURE_TYPE_DOUBLE,
    ValueType.STRING: pb.FEATURE_TYPE_STRING,
    ValueType.BOOL: pb.FEATURE_TYPE_BOOL,
    ValueType.INT_LIST: pb.FEATURE_TYPE_INT64_LIST,
    ValueType.FLOAT_LIST: pb.FEATURE_TYPE_DOUBLE_LIST,
    ValueType.STRING_LIST: pb.FEATURE_TYPE_STRING_LIST,
}
_SOURCES = {ValueSource.ONLINE_STORE: pb.FEATURE_VALUE_SOURCE_ONLINE_STORE,
            ValueSource.READ_THROUGH: pb.FEATURE_VALUE_SOURCE_READ_THROUGH,
            ValueSource.NOT_FOUND: pb.FEATURE_VALUE_SOURCE_NOT_FOUND}
_MODES = {pb.MATERIALIZATION_MODE_UNSPECIFIED: INCREMENTAL, pb.MATERIALIZATION_MODE_INCREMENTAL: INCREMENTAL,
          pb.MATERIALIZATION_MODE_FULL: FULL}
_MODES_PB = {INCREMENTAL: pb.MATERIALIZATION_MODE_INCREMENTAL, FULL: pb.MATERIALIZATION_MODE_FULL}
_STATES_PB = {"QUEUED": pb.JOB_STATE_QUEUED, "RUNNING": pb.JOB_STATE_RUNNING, "SUCCEEDED": pb.JOB_STATE_SUCCEEDED,
              "FAILED": pb.JOB_STATE_FAILED}


def view_to_pb(view: FeatureView) -> pb.FeatureView:
    """The declaration; the materialisation state (materialized_until, ...) is not set here."""
    message = pb.FeatureView(
        name=view.name, description=view.description,
        entity=pb.EntitySpec(name=view.entity.name, join_key=view.entity.join_key,
                             value_type=_TYPES[view.entity.key_type], description=view.entity.description),
        features=[pb.FeatureSpec(name=f.name, type=_TYPES[f.type], description=f.description,
                                 dimension=f.dimension or 0) for f in view.features],
        source=pb.FeatureSource(query=view.source.query, timestamp_column=view.source.event_time_column),
        materialization_schedule=view.materialization_schedule, tags=dict(view.tags),
        definition_hash=view.definition_hash, compute_on_miss=view.compute_on_miss,
    )
    if view.ttl is not None:
        message.ttl.FromTimedelta(view.ttl)
    return message


def _time(stamp: Timestamp, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=timezone.utc) if present else None


_VALUE_FIELDS = {  # the FeatureValue field of each type, and whether it is a list
    ValueType.INT: ("int64_value", False), ValueType.FLOAT: ("double_value", False),
    ValueType.STRING: ("string_value", False), ValueType.BOOL: ("bool_value", False),
    ValueType.INT_LIST: ("int64_list_value", True), ValueType.FLOAT_LIST: ("double_list_value", True),
    ValueType.STRING_LIST: ("string_list_value", True),
}


class _Stamps(dict):
    """Timestamps by datetime, made once per answer."""

    def __missing__(self, value: datetime) -> Timestamp:
        micros = (value - _EPOCH) // _MICROSECOND if value.tzinfo else None
        stamp = Timestamp(seconds=micros // 1_000_000, nanos=micros % 1_000_000 * 1000) if micros is not None \
            else timestamp(value)
        self[value] = stamp
        return stamp


def _entity(entity: EntityResult, fields: dict[str, tuple[str, bool]], stamps: _Stamps) -> pb.EntityFeatures:
    message = pb.EntityFeatures(entity_id=entity.entity_id, found=entity.found, read_through=entity.read_through)
    _add_features(message.features, entity, fields, stamps)
    return message


def _add_features(features, entity: EntityResult, fields: dict[str, tuple[str, bool]], stamps: _Stamps,
                  prefix: str = "") -> None:
    """The entity's values into a features map, under prefix + name."""
    # The features of one entity share their origin and times: one template, copied (much faster than
    # building each Feature from keyword arguments).
    template = pb.Feature(source=_SOURCES[entity.source], stale=entity.stale,
                          computed_at=None if entity.computed_at is None else stamps[entity.computed_at],
                          event_time=None if entity.event_time is None else stamps[entity.event_time])
    for name, value in entity.values.items():
        feature = features[prefix + name]
        feature.CopyFrom(template)
        if value is not None:
            attribute, is_list = fields[name]
            if is_list:
                getattr(feature.value, attribute).values.extend(value)
            else:
                setattr(feature.value, attribute, value)


def _fill(column: pb.TrainingSetColumn, field_name: str, values: list) -> None:
    """The values into a column already in a message: one packed list, a placeholder and a
    null_rows entry per None. A list column is flat: its elements in the element type's field,
    each row's length in list_lengths (0 for a null)."""
    if None in values:
        column.null_rows.extend([i for i, value in enumerate(values) if value is None])
        placeholder = () if field_name in _LIST_FIELDS else _PLACEHOLDERS[field_name]
        values = [placeholder if value is None else value for value in values]
    if field_name in _LIST_FIELDS:
        column.list_lengths.extend([len(value) for value in values])
        getattr(column, _LIST_FIELDS[field_name]).extend(list(chain.from_iterable(values)))
    else:
        getattr(column, field_name).extend(values)


def _micros(value: datetime | None) -> int | None:
    return None if value is None else (value - _EPOCH) // _MICROSECOND


def job_to_pb(job: Job) -> pb.MaterializationJob:
    message = pb.MaterializationJob(
        job_id=job.job_id, feature_view=job.feature_view, mode=_MODES_PB[job.mode], state=_STATES_PB[job.state],
        window_start=timestamp(job.window_start), window_end=timestamp(job.window_end),
        entities_written=job.entities_written, entities_total=job.entities_total,
        create_time=timestamp(job.create_time), start_time=timestamp(job.start_time),
        end_time=timestamp(job.end_time), resumed_job_id=job.resumed_job_id,
        entities_deleted=job.entities_deleted)
    if job.error is not None:
        status = status_pb2.Status(code=code_pb2.Code.Value(job.error.code) if job.error.code in code_pb2.Code.keys()
                                   else code_pb2.INTERNAL, message=job.error.message)
        status.details.add().Pack(error_details_pb2.ErrorInfo(reason=job.error.reason, domain=ERROR_DOMAIN))
        message.error.CopyFrom(status)
    return message


class PipelineServicer(RetrainingRpcs, MonitoringRpcs, pipeline_pb2_grpc.PipelineServiceServicer):
    def __init__(self, store: FeatureStore, runs: RetrainingRuns, schedules: RetrainingSchedules, monitor: Monitor):
        self._store, self._runs, self._schedules, self._monitor = store, runs, schedules, monitor
        # Declarations are read once at start: their messages are built once too.
        self._views = {view.name: view_to_pb(view) for view in store.schema.views}
        self._fields = {view.name: {f.name: _VALUE_FIELDS[f.type] for f in view.features}
                        for view in store.schema.views}
        self._columns_of = {view.name: {f.name: (_TYPES[f.type], _VALUE_LIST_FIELDS[f.type]) for f in view.features}
                            for view in store.schema.views}  # per feature: its type and its column's field

    async def GetFeatureSchema(self, request, context):
        described = await self._store.describe(request.feature_view)
        views = []
        for item in described:
            message = self._views[item.view.name]
            if item.state is not None:
                message = pb.FeatureView()
                message.CopyFrom(self._views[item.view.name])
                if item.state.materialized_until is not None:
                    message.materialized_until.CopyFrom(timestamp(item.state.materialized_until))
                if item.state.last_materialization_time is not None:
                    message.last_materialization_time.CopyFrom(timestamp(item.state.last_materialization_time))
            views.append(message)
        return pb.GetFeatureSchemaResponse(feature_views=views, version=self._store.schema.version)

    async def GetFeatures(self, request, context):
        ids = ([("entity_id", request.entity_id)] if request.entity_id else []) + \
              [(f"entity_ids[{i}]", text) for i, text in enumerate(request.entity_ids)]
        if request.views:
            if request.feature_view or request.feature_names:
                raise InvalidArgument("feature_view", "give feature_view (with feature_names) or views, not both")
            selections = [ViewSelection(v.feature_view, tuple(v.feature_names), None) for v in request.views]
        else:
            selections = [ViewSelection(request.feature_view, tuple(request.feature_names))]
        result = await self._store.reader.read(selections, ids, read_through=not request.disable_read_through)
        count_feature_reads(result.views)
        response = pb.GetFeaturesResponse(
            feature_view=result.views[0].feature_view if len(result.views) == 1 else "",
            read_through_count=result.read_through_count, online_store_unavailable=result.online_store_unavailable)
        if request.layout == pb.FEATURES_LAYOUT_COLUMNS:
            self._columns(response, result.views)
        else:
            self._entities(response, result.views, qualified=len(result.views) > 1)
        return response

    def _entities(self, response: pb.GetFeaturesResponse, views: list[FeaturesResult], qualified: bool) -> None:
        stamps = _Stamps()
        first = views[0]
        if not qualified:
            response.entities.extend(_entity(entity, self._fields[first.feature_view], stamps)
                                     for entity in first.entities)
            return
        for index, entity in enumerate(first.entities):
            message = response.entities.add(entity_id=entity.entity_id)
            message.found = any(view.entities[index].found for view in views)
            message.read_through = any(view.entities[index].read_through for view in views)
            for view in views:
                _add_features(message.features, view.entities[index], self._fields[view.feature_view], stamps,
                              prefix=f"{view.feature_view}:")

    def _columns(self, response: pb.GetFeaturesResponse, views: list[FeaturesResult]) -> None:
        # Filled in place (add, extend): a column built from keyword arguments costs several times more.
        response.entity_ids.extend(entity.entity_id for entity in views[0].entities)
        for view in views:
            entities = view.entities
            status = response.view_statuses.add(feature_view=view.feature_view)
            status.found.extend([e.found for e in entities])
            status.sources.extend([_SOURCES[e.source] for e in entities])
            status.stale.extend([e.stale for e in entities])
            _fill(status.event_times, "timestamp_micros", [_micros(e.event_time) for e in entities])
            _fill(status.computed_at, "timestamp_micros", [_micros(e.computed_at) for e in entities])
            specs = self._columns_of[view.feature_view]
            # Every entity's values are in feature_names' order: zip turns rows into columns in C.
            rows = [e.values.values() for e in entities]
            for name, values in zip(view.feature_names, zip(*rows)):
                kind, field_name = specs[name]
                column = response.columns.add(feature_view=view.feature_view, name=name, type=kind)
                _fill(column.values, field_name, list(values))

    async def MaterializeFeatures(self, request, context):
        jobs = await self._store.materializer.materialize(
            list(request.feature_views), _MODES.get(request.mode, f"mode {request.mode}"),
            start_time=_time(request.start_time, request.HasField("start_time")),
            end_time=_time(request.end_time, request.HasField("end_time")), wait=request.wait)
        return pb.MaterializeFeaturesResponse(jobs=[job_to_pb(job) for job in jobs])

    async def GetMaterializationJob(self, request, context):
        return pb.GetMaterializationJobResponse(job=job_to_pb(await self._store.materializer.job(request.job_id)))

    async def GetTrainingSet(self, request, context):
        form = request.WhichOneof("entity_dataframe")
        rows = None
        if form == "entity_rows":
            rows = [InlineRow(dict(row.entity_ids), _time(row.timestamp, row.HasField("timestamp")),
                              {name: _from_value(value) for name, value in row.columns.items()})
                    for row in request.entity_rows.rows]
        answer = await self._store.training.training_set(
            list(request.features), rows=rows, query=request.entity_query if form == "entity_query" else "",
            timestamp_column=request.timestamp_column)
        plan = answer.plan
        header = pb.GetTrainingSetResponse(
            join_keys=plan.join_keys, column_names=plan.column_names,
            feature_views=[s.view.name for s in plan.views],
            features=[pb.TrainingSetFeature(feature_view=s.view.name, name=f.name, type=_TYPES[f.type])
                      for s in plan.views for f in s.features])
        column_fields = [_KIND_FIELDS[kind] for kind in plan.column_kinds]
        value_fields = [_VALUE_LIST_FIELDS[f.type] for s in plan.views for f in s.features]
        message = header
        async with contextlib.aclosing(answer.batches) as batches:
            async for batch in batches:
                message.row_count = len(batch)
                message.row_indexes[:] = batch.row_indexes
                message.entity_ids.extend(_column("string_values", ids) for ids in batch.entity_ids)
                message.timestamps.CopyFrom(_column("timestamp_micros", batch.timestamps))
                message.columns.extend(_column(name, values) for name, values in zip(column_fields, batch.columns))
                message.event_times.extend(_column("timestamp_micros", times) for times in batch.event_times)
                message.values.extend(_column(name, values) for name, values in zip(value_fields, batch.values))
                yield message
                message = pb.GetTrainingSetResponse()
        if message is header:
            yield header  # no rows: the header alone


# ----- training sets: values in and out -----

_KIND_OF_FIELD = {"int64_value": ColumnKind.INT, "double_value": ColumnKind.FLOAT, "string_value": ColumnKind.STRING,
                  "bool_value": ColumnKind.BOOL, "bytes_value": ColumnKind.BYTES,
                  "timestamp_value": ColumnKind.TIMESTAMP, "int64_list_value": ColumnKind.INT_LIST,
                  "double_list_value": ColumnKind.FLOAT_LIST, "string_list_value": ColumnKind.STRING_LIST}
_KIND_FIELDS = {ColumnKind.INT: "int64_values", ColumnKind.FLOAT: "double_values",
                ColumnKind.STRING: "string_values", ColumnKind.BOOL: "bool_values", ColumnKind.BYTES: "bytes_values",
                ColumnKind.TIMESTAMP: "timestamp_micros", ColumnKind.INT_LIST: "int64_list_values",
                ColumnKind.FLOAT_LIST: "double_list_values", ColumnKind.STRING_LIST: "string_list_values"}
_VALUE_LIST_FIELDS = {ValueType.INT: "int64_values", ValueType.FLOAT: "double_values",
                      ValueType.STRING: "string_values", ValueType.BOOL: "bool_values",
                      ValueType.INT_LIST: "int64_list_values", ValueType.FLOAT_LIST: "double_list_values",
                      ValueType.STRING_LIST: "string_list_values"}
_PLACEHOLDERS = {"int64_values": 0, "double_values": 0.0, "string_values": "", "bool_values": False,
                 "bytes_values": b"", "timestamp_micros": 0}
# A list column's kind -> the field its elements are written to, flat (see _fill).
_LIST_FIELDS = {"int64_list_values": "int64_values", "double_list_values": "double_values",
                "string_list_values": "string_values"}


def _from_value(value: pb.FeatureValue) -> tuple[ColumnKind | None, object]:
    """A request's FeatureValue as (kind, Python value); no kind set: (None, None)."""
    name = value.WhichOneof("kind")
    if name is None:
        return None, None
    kind = _KIND_OF_FIELD[name]
    if kind is ColumnKind.TIMESTAMP:
        return kind, value.timestamp_value.ToDatetime(tzinfo=timezone.utc)
    item = getattr(value, name)
    return kind, list(item.values) if name.endswith("_list_value") else item


def _column(field_name: str, values: list) -> pb.TrainingSetColumn:
    """One column: the values in one packed list, a placeholder and a null_rows entry per None."""
    column = pb.TrainingSetColumn()
    _fill(column, field_name, values)
    return column

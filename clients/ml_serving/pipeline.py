"""PipelineClient: feature store, retraining scheduler and model monitor (PipelineService).

Features as plain Python: `get_feature_values` answers `{entity_id: {feature: value}}` (or a
pandas DataFrame with `as_dataframe=True`; pandas is the optional extra `ml-serving-mesh[pandas]`),
decoded by `feature_value` from the typed FeatureValue of GetFeatures; `get_features` is the RPC
itself. `FeatureStore` is the same for code that is not async (a blocking channel).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb
from mnbara.mlserving.pipeline.v1 import pipeline_pb2_grpc

from ._base import AsyncClient, struct
from ._methods import paged, server_stream, unary
from ._sync import SyncClient

if TYPE_CHECKING:
    import pandas

EntityId = str | int
"""An entity id: ids travel as strings; an int key may be given as an int."""
FeatureValues = dict[Any, dict[str, Any] | None]
"""`{entity_id: {feature: value}}`; an entity found nowhere maps to None."""
MAX_ENTITIES_PER_CALL = 1000
"""GetFeatures answers at most this many entities; `get_feature_values` splits longer lists."""
EVENT_TIME_SUFFIX = "__event_time"
"""With `with_event_times`, each feature `f` gets an `f__event_time` entry (or column) too."""


def feature_value(value: pb.FeatureValue) -> Any:
    """One FeatureValue as plain Python: int, float, str, bool, bytes, an aware UTC datetime, or a
    list (of ints, floats or strings; an embedding is a list of floats); None when no value is set."""
    kind = value.WhichOneof("kind")
    if kind is None:
        return None
    if kind == "timestamp_value":
        return value.timestamp_value.ToDatetime(tzinfo=timezone.utc)
    if kind.endswith("_list_value"):
        return list(getattr(value, kind).values)
    return getattr(value, kind)


def _event_time(feature: pb.Feature) -> datetime | None:
    return feature.event_time.ToDatetime(tzinfo=timezone.utc) if feature.HasField("event_time") else None


def _ordered(features: Sequence[str], answered: Iterable[str]) -> list[str]:
    """Feature names in the asked order, then any others in name order (a proto map has no order)."""
    return [name for name in features if name in answered] + sorted(set(answered).difference(features))


def entity_values(entity: pb.EntityFeatures, features: Sequence[str] = (), *,
                  with_event_times: bool = False) -> dict[str, Any] | None:
    """One entity's features as `{feature: value}` (in the order of `features` when given, else in
    name order), with `<feature>__event_time` entries if asked; None when the entity was not found."""
    if not entity.found:
        return None
    answered = entity.features
    names = _ordered(features, answered)
    values: dict[str, Any] = {}
    for name in names:
        values[name] = feature_value(answered[name].value)
    if with_event_times:
        for name in names:
            values[name + EVENT_TIME_SUFFIX] = _event_time(answered[name])
    return values


def _ids(entity_ids: EntityId | Iterable[EntityId]) -> dict[str, EntityId]:
    """The distinct ids as sent (text) -> as given, in order; one id may be given alone."""
    if isinstance(entity_ids, (str, int)):
        entity_ids = [entity_ids]
    ids: dict[str, EntityId] = {}
    for entity_id in entity_ids:
        if isinstance(entity_id, bool) or not isinstance(entity_id, (str, int)):
            raise TypeError(f"an entity id is a str or an int, not {type(entity_id).__name__}")
        ids.setdefault(str(entity_id), entity_id)
    if not ids:
        raise ValueError("at least one entity id is required")
    return ids


def _chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[start:start + MAX_ENTITIES_PER_CALL] for start in range(0, len(ids), MAX_ENTITIES_PER_CALL)]


_COLUMN_FIELDS = {pb.FEATURE_TYPE_INT64: "int64_values", pb.FEATURE_TYPE_DOUBLE: "double_values",
                  pb.FEATURE_TYPE_STRING: "string_values", pb.FEATURE_TYPE_BOOL: "bool_values",
                  pb.FEATURE_TYPE_BYTES: "bytes_values", pb.FEATURE_TYPE_TIMESTAMP: "timestamp_micros",
                  pb.FEATURE_TYPE_INT64_LIST: "int64_list_values", pb.FEATURE_TYPE_DOUBLE_LIST: "double_list_values",
                  pb.FEATURE_TYPE_STRING_LIST: "string_list_values"}
_KIND_OF_TYPE = {pb.FEATURE_TYPE_INT64: "int64_value", pb.FEATURE_TYPE_BOOL: "bool_value",
                 pb.FEATURE_TYPE_INT64_LIST: "int64_list_value", pb.FEATURE_TYPE_DOUBLE_LIST: "double_list_value",
                 pb.FEATURE_TYPE_STRING_LIST: "string_list_value"}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _micros_to_time(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


# A list column's kind -> the field its elements are in, flat, cut by list_lengths.
_LIST_ELEMENTS = {"int64_list_values": "int64_values", "double_list_values": "double_values",
                  "string_list_values": "string_values"}


def _lists(column: pb.TrainingSetColumn, field_name: str) -> list[list[Any]]:
    """A list column's rows. Servers before list_lengths wrote a message per row: read too."""
    if not column.list_lengths:
        return [list(item.values) for item in getattr(column, field_name)]
    elements, rows, start = list(getattr(column, _LIST_ELEMENTS[field_name])), [], 0
    for length in column.list_lengths:
        rows.append(elements[start:start + length])
        start += length
    return rows


def column_values(column: pb.TrainingSetColumn, field_name: str) -> list[Any]:
    """A packed column as a list of plain values, None at its null rows."""
    if field_name in _LIST_ELEMENTS:
        values = _lists(column, field_name)
    elif field_name == "timestamp_micros":
        values = [_micros_to_time(micros) for micros in column.timestamp_micros]
    else:
        values = list(getattr(column, field_name))
    for row in column.null_rows:
        values[row] = None
    return values


def _column_names(response: pb.GetFeaturesResponse) -> list[str]:
    """The answer's feature names: "view:feature" when it holds several views."""
    several = len(response.view_statuses) > 1
    return [f"{c.feature_view}:{c.name}" if several else c.name for c in response.columns]


def _column_entities(response: pb.GetFeaturesResponse, features: Sequence[str], with_event_times: bool
                     ) -> Iterable[tuple[str, dict[str, Any] | None]]:
    """(entity id, values or None) per entity of a columns-layout answer."""
    names = _column_names(response)
    columns = [column_values(c.values, _COLUMN_FIELDS[c.type]) for c in response.columns]
    chosen = _ordered(features, names) if features else names  # columns have an order: the view's
    where = [names.index(name) for name in chosen]
    found = [any(row) for row in zip(*(status.found for status in response.view_statuses))]
    if with_event_times:
        times_of_view = {s.feature_view: column_values(s.event_times, "timestamp_micros")
                         for s in response.view_statuses}
        times = [times_of_view[response.columns[i].feature_view] for i in where]
    for row, entity_id in enumerate(response.entity_ids):
        if not found[row]:
            yield entity_id, None
            continue
        values = {name: columns[i][row] for name, i in zip(chosen, where)}
        if with_event_times:
            for name, view_times in zip(chosen, times):
                values[name + EVENT_TIME_SUFFIX] = view_times[row]
        yield entity_id, values


def features_as_dicts(responses: pb.GetFeaturesResponse | Iterable[pb.GetFeaturesResponse],
                      features: Sequence[str] = (), *, with_event_times: bool = False,
                      entity_ids: Mapping[str, EntityId] | None = None) -> FeatureValues:
    """GetFeatures answers as `{entity_id: {feature: value}}` in answer order, None for an entity
    found nowhere (`found: false`). `entity_ids` maps the ids as answered (text) to the keys to
    use (e.g. the ints the caller gave); by default the keys are the ids as answered."""
    if isinstance(responses, pb.GetFeaturesResponse):
        responses = [responses]
    result: FeatureValues = {}
    for response in responses:
        if response.view_statuses:  # the columns layout
            for entity_id, values in _column_entities(response, features, with_event_times):
                result.setdefault(entity_ids.get(entity_id, entity_id) if entity_ids else entity_id, values)
            continue
        for entity in response.entities:
            key = entity_ids.get(entity.entity_id, entity.entity_id) if entity_ids else entity.entity_id
            if key not in result:
                result[key] = entity_values(entity, features, with_event_times=with_event_times)
    return result


_NULLABLE = {"int64_value": ("int64", "Int64"), "bool_value": ("bool", "boolean")}


def features_as_dataframe(responses: pb.GetFeaturesResponse | Iterable[pb.GetFeaturesResponse],
                          features: Sequence[str] = (), *, with_event_times: bool = False,
                          entity_ids: Mapping[str, EntityId] | None = None) -> pandas.DataFrame:
    """GetFeatures answers as a pandas DataFrame: one row per entity (index `entity_id`, in answer
    order), one column per feature (in the order of `features` when given, else in name order),
    then `<feature>__event_time` columns (UTC) if asked. An entity found nowhere is a row of
    missing values, and listed in `frame.attrs["not_found"]`. Integer and bool columns with
    missing values use pandas' nullable Int64 and boolean; lists (embeddings) are object columns
    of lists. Needs pandas (`pip install 'ml-serving-mesh[pandas]'`)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("as_dataframe needs pandas: pip install 'ml-serving-mesh[pandas]'") from None
    if isinstance(responses, pb.GetFeaturesResponse):
        responses = [responses]
    responses = list(responses)
    rows = features_as_dicts(responses, features, with_event_times=False, entity_ids=entity_ids)
    kinds: dict[str, str] = {}  # feature -> the FeatureValue field its values use
    times: dict[Any, dict[str, Any]] = {}
    seen: set[str] = set()
    for response in responses:
        if response.view_statuses:  # the columns layout
            for name, column in zip(_column_names(response), response.columns):
                seen.add(name)
                kinds.setdefault(name, _KIND_OF_TYPE.get(column.type, "value"))
            if with_event_times:
                for entity_id, values in _column_entities(response, (), True):
                    if values is not None:
                        key = entity_ids.get(entity_id, entity_id) if entity_ids else entity_id
                        times.setdefault(key, {name[:-len(EVENT_TIME_SUFFIX)]: value for name, value in values.items()
                                               if name.endswith(EVENT_TIME_SUFFIX)})
        for entity in response.entities:
            for name, feature in entity.features.items():
                seen.add(name)
                kind = feature.value.WhichOneof("kind")
                if kind is not None:
                    kinds.setdefault(name, kind)
            if with_event_times and entity.found:
                key = entity_ids.get(entity.entity_id, entity.entity_id) if entity_ids else entity.entity_id
                times.setdefault(key, {name: _event_time(feature) for name, feature in entity.features.items()})
    names = _ordered(features, seen)
    index = pd.Index(list(rows), name="entity_id")
    columns: dict[str, pandas.Series] = {}
    for name in names:
        values = [None if row is None else row.get(name) for row in rows.values()]
        plain, nullable = _NULLABLE.get(kinds.get(name, ""), (None, None))
        if plain is not None:
            dtype: Any = nullable if any(value is None for value in values) else plain
        else:  # floats (None: NaN), strings, and lists kept as lists
            dtype = object if kinds.get(name, "").endswith("_list_value") else None
        columns[name] = pd.Series(values, index=index, dtype=dtype)
    if with_event_times:
        for name in names:
            stamps = [times.get(key, {}).get(name) for key in rows]
            columns[name + EVENT_TIME_SUFFIX] = pd.Series(pd.to_datetime(stamps, utc=True), index=index)
    frame = pd.DataFrame(columns, index=index)
    frame.attrs["not_found"] = [key for key, row in rows.items() if row is None]
    return frame


def feature_views_as_dicts(response: pb.GetFeatureSchemaResponse) -> dict[str, dict[str, Any]]:
    """GetFeatureSchema's views as `{view: {"entity": {...}, "features": {feature: {"type":
    "FEATURE_TYPE_INT64", ...}}, ...}}`, field names as in the proto (TTL as "604800s", times as
    RFC 3339 text)."""
    views = {}
    for view in response.feature_views:
        as_dict = json_format.MessageToDict(view, preserving_proto_field_name=True)
        as_dict["features"] = {feature.pop("name"): feature for feature in as_dict.get("features", [])}
        views[view.name] = as_dict
    return views


_MODES = {"FULL": pb.MATERIALIZATION_MODE_FULL, "INCREMENTAL": pb.MATERIALIZATION_MODE_INCREMENTAL}


def _mode(mode: pb.MaterializationMode | str) -> pb.MaterializationMode | str:
    return _MODES.get(mode.upper(), mode) if isinstance(mode, str) else mode


def _get_features_request(feature_view: str, entity_id: str, entity_ids: Sequence[str], feature_names: Sequence[str],
                          disable_read_through: bool, layout: pb.FeaturesLayout = pb.FEATURES_LAYOUT_UNSPECIFIED
                          ) -> pb.GetFeaturesRequest:
    return pb.GetFeaturesRequest(feature_view=feature_view, entity_id=entity_id, entity_ids=entity_ids,
                                 feature_names=feature_names, disable_read_through=disable_read_through, layout=layout)


def _materialize_request(feature_views: str | Sequence[str], mode: pb.MaterializationMode | str,
                         start_time: datetime | None, end_time: datetime | None,
                         wait: bool) -> pb.MaterializeFeaturesRequest:
    views = [feature_views] if isinstance(feature_views, str) else list(feature_views)
    return pb.MaterializeFeaturesRequest(feature_views=views, mode=_mode(mode), start_time=start_time,
                                         end_time=end_time, wait=wait)


def _values(responses: list[pb.GetFeaturesResponse], features: Sequence[str], ids: dict[str, EntityId],
            with_event_times: bool, as_dataframe: bool) -> Any:
    convert = features_as_dataframe if as_dataframe else features_as_dicts
    return convert(responses, features, with_event_times=with_event_times, entity_ids=ids)


class PipelineClient(AsyncClient[pipeline_pb2_grpc.PipelineServiceStub]):
    """Async client of mnbara.mlserving.pipeline.v1.PipelineService.

    >>> async with PipelineClient() as pipeline:
    ...     values = await pipeline.get_feature_values("user_profile", [123, 456])
    ...     values[123]["country"], values[123]["taste"]        # 'DE', [0.41, -1.2, 0.05, 0.77]
    ...     frame = await pipeline.get_feature_values("user_engagement", range(100), as_dataframe=True)
    """

    stub_type = pipeline_pb2_grpc.PipelineServiceStub

    async def get_features(self, feature_view: str, *, entity_id: str = "", entity_ids: Sequence[str] = (),
                           feature_names: Sequence[str] = (), disable_read_through: bool = False,
                           layout: pb.FeaturesLayout = pb.FEATURES_LAYOUT_UNSPECIFIED,
                           timeout: float | None = None) -> pb.GetFeaturesResponse:
        """Features of one entity (`entity_id`) or many (`entity_ids`, at most 1000) from the online
        store, read through to the source on a miss unless disabled: the response message, by
        entity or (`layout=FEATURES_LAYOUT_COLUMNS`) by column (`get_feature_values` gives plain
        Python, from columns)."""
        request = _get_features_request(feature_view, entity_id, entity_ids, feature_names, disable_read_through,
                                        layout)
        return await self._call(self.stub.GetFeatures, request, timeout)

    async def get_feature_values(self, feature_view: str, entity_ids: EntityId | Iterable[EntityId], *,
                                 features: Sequence[str] = (), read_through: bool = True,
                                 as_dataframe: bool = False, with_event_times: bool = False,
                                 timeout: float | None = None) -> FeatureValues | pandas.DataFrame:
        """The features of `entity_ids` (str or int; one id alone is fine) as plain Python:
        `{entity_id: {feature: value}}`, keyed by the ids as given, in their order (repeats once).
        Values are typed (int, float, str, bool, lists; an embedding is a list of floats), None
        when the source has no value; an entity found nowhere (nor, read through, in the source)
        maps to None rather than being left out. `features`: those only (default: all of the view,
        in this order when given). `read_through=False`: a value missing online is not computed
        from the source (the entity then counts as not found). `with_event_times`: also
        `<feature>__event_time` (the aware UTC datetime of the source rows it came from).
        `as_dataframe`: a pandas DataFrame instead (see `features_as_dataframe`). More than 1000
        ids go in calls of 1000, concurrently. Raises as GetFeatures does (InvalidArgumentError for
        a bad id or an unknown feature, NotFoundError for an unknown view)."""
        import asyncio

        ids = _ids(entity_ids)
        calls = [self.get_features(feature_view, entity_ids=chunk, feature_names=features,
                                   disable_read_through=not read_through, layout=pb.FEATURES_LAYOUT_COLUMNS,
                                   timeout=timeout)
                 for chunk in _chunks(list(ids))]
        responses = list(await asyncio.gather(*calls))
        return _values(responses, features, ids, with_event_times, as_dataframe)

    async def get_feature_schema(self, feature_view: str = "", *,
                                 timeout: float | None = None) -> pb.GetFeatureSchemaResponse:
        """The feature views' schemas (all of them when `feature_view` is empty) and the schema's version;
        `feature_views_as_dicts` turns the views into plain dicts."""
        request = pb.GetFeatureSchemaRequest(feature_view=feature_view)
        return await self._call(self.stub.GetFeatureSchema, request, timeout)

    async def materialize_features(self, feature_views: str | Sequence[str] = (), *,
                                   mode: pb.MaterializationMode | str = pb.MATERIALIZATION_MODE_UNSPECIFIED,
                                   start_time: datetime | None = None, end_time: datetime | None = None,
                                   wait: bool = False, timeout: float | None = None) -> pb.MaterializeFeaturesResponse:
        """Materialise views (default: all) into the online store; `mode` "INCREMENTAL" (the default)
        or "FULL" (or the enum). Answers the queued jobs at once, or with `wait` once they end (a
        failed job carries its error). Raises FailedPreconditionError (MATERIALIZATION_IN_PROGRESS)
        while a view is being materialised."""
        request = _materialize_request(feature_views, mode, start_time, end_time, wait)
        return await self._call(self.stub.MaterializeFeatures, request, timeout)

    async def get_materialization_job(self, job_id: str, *,
                                      timeout: float | None = None) -> pb.GetMaterializationJobResponse:
        """One materialisation job as it is now: state, progress (entities_written of
        entities_total), error. Raises NotFoundError for an unknown job id."""
        request = pb.GetMaterializationJobRequest(job_id=job_id)
        return await self._call(self.stub.GetMaterializationJob, request, timeout)

    async def trigger_retraining(self, model_name: str, *, reason: str = "",
                                 parameters: Mapping[str, Any] | None = None, idempotency_key: str = "",
                                 timeout: float | None = None) -> pb.TriggerRetrainingResponse:
        """Queue a retraining run; `run_id` in the response. Idempotent by `idempotency_key`."""
        request = pb.TriggerRetrainingRequest(model_name=model_name, reason=reason, parameters=struct(parameters),
                                              idempotency_key=idempotency_key)
        return await self._call(self.stub.TriggerRetraining, request, timeout)

    async def get_retraining_status(self, run_id: str, *,
                                    timeout: float | None = None) -> pb.GetRetrainingStatusResponse:
        """One retraining run's state. Raises NotFoundError for an unknown run id."""
        request = pb.GetRetrainingStatusRequest(run_id=run_id)
        return await self._call(self.stub.GetRetrainingStatus, request, timeout)

    async def cancel_retraining_run(self, run_id: str, *,
                                    timeout: float | None = None) -> pb.CancelRetrainingRunResponse:
        """Cancel a run: a queued one at once, a running one at its trainer's next step (`cancel_requested`
        until then). Raises FailedPreconditionError for a run that has already ended."""
        request = pb.CancelRetrainingRunRequest(run_id=run_id)
        return await self._call(self.stub.CancelRetrainingRun, request, timeout)

    async def wait_for_retraining(self, run_id: str, *, poll_seconds: float = 1.0,
                                  timeout: float | None = None) -> pb.RetrainingRun:
        """The run once it has ended (succeeded, failed or cancelled), polling its status every
        `poll_seconds`; asyncio.TimeoutError after `timeout` seconds (None: no limit)."""
        ended = (pb.RUN_STATE_SUCCEEDED, pb.RUN_STATE_FAILED, pb.RUN_STATE_CANCELLED)

        async def poll() -> pb.RetrainingRun:
            while True:
                run = (await self.get_retraining_status(run_id)).run
                if run.state in ended:
                    return run
                await asyncio.sleep(poll_seconds)

        return await asyncio.wait_for(poll(), timeout)

    async def record_metric(self, model_name: str, metric_name: str, value: float, *, model_version: str = "",
                            time: datetime | None = None, labels: Mapping[str, str] | None = None,
                            event_id: str = "", timeout: float | None = None) -> pb.RecordMetricResponse:
        """Record one observation of a model's metric for the monitor; idempotent by `event_id`."""
        request = pb.RecordMetricRequest(model_name=model_name, model_version=model_version, metric_name=metric_name,
                                         value=value, time=time, labels=labels, event_id=event_id)
        return await self._call(self.stub.RecordMetric, request, timeout)

    async def list_alerts(self, *, model_name: str = "", states: Sequence[pb.AlertState | str] = (),
                          rule_id: str = "", min_severity: pb.AlertSeverity | str = 0, page_size: int = 0,
                          page_token: str = "", timeout: float | None = None) -> pb.ListAlertsResponse:
        """One page of alerts (firing and resolved; filter with `states`); `iter_alerts` goes through every page."""
        request = pb.ListAlertsRequest(model_name=model_name, states=states, rule_id=rule_id,
                                       min_severity=min_severity, page_size=page_size, page_token=page_token)
        return await self._call(self.stub.ListAlerts, request, timeout)

    get_training_set = server_stream(lambda stub: stub.GetTrainingSet, pb.GetTrainingSetRequest,
                                     pb.GetTrainingSetResponse)
    list_retraining_runs = unary(lambda stub: stub.ListRetrainingRuns, pb.ListRetrainingRunsRequest,
                                 pb.ListRetrainingRunsResponse)
    create_retraining_schedule = unary(lambda stub: stub.CreateRetrainingSchedule,
                                       pb.CreateRetrainingScheduleRequest, pb.CreateRetrainingScheduleResponse)
    get_retraining_schedule = unary(lambda stub: stub.GetRetrainingSchedule, pb.GetRetrainingScheduleRequest,
                                    pb.GetRetrainingScheduleResponse)
    list_retraining_schedules = unary(lambda stub: stub.ListRetrainingSchedules, pb.ListRetrainingSchedulesRequest,
                                      pb.ListRetrainingSchedulesResponse)
    delete_retraining_schedule = unary(lambda stub: stub.DeleteRetrainingSchedule,
                                       pb.DeleteRetrainingScheduleRequest, pb.DeleteRetrainingScheduleResponse)
    batch_record_metrics = unary(lambda stub: stub.BatchRecordMetrics, pb.BatchRecordMetricsRequest,
                                 pb.BatchRecordMetricsResponse)
    create_alert_rule = unary(lambda stub: stub.CreateAlertRule, pb.CreateAlertRuleRequest, pb.CreateAlertRuleResponse)
    get_alert_rule = unary(lambda stub: stub.GetAlertRule, pb.GetAlertRuleRequest, pb.GetAlertRuleResponse)
    list_alert_rules = unary(lambda stub: stub.ListAlertRules, pb.ListAlertRulesRequest, pb.ListAlertRulesResponse)
    update_alert_rule = unary(lambda stub: stub.UpdateAlertRule, pb.UpdateAlertRuleRequest, pb.UpdateAlertRuleResponse)
    delete_alert_rule = unary(lambda stub: stub.DeleteAlertRule, pb.DeleteAlertRuleRequest, pb.DeleteAlertRuleResponse)

    iter_alerts = paged(list_alerts, lambda page: page.alerts)
    iter_retraining_runs = paged(list_retraining_runs, lambda page: page.runs)
    iter_retraining_schedules = paged(list_retraining_schedules, lambda page: page.schedules)
    iter_alert_rules = paged(list_alert_rules, lambda page: page.rules)


class FeatureStore(SyncClient[pipeline_pb2_grpc.PipelineServiceStub]):
    """The feature calls of PipelineClient for code that is not async (a blocking channel; any
    thread): `FeatureStore().get_feature_values("user_profile", [123])`. Arguments as every
    client's (address, token, ...); use it in a `with` block, or `close()` it."""

    stub_type = pipeline_pb2_grpc.PipelineServiceStub

    def get_features(self, feature_view: str, *, entity_id: str = "", entity_ids: Sequence[str] = (),
                     feature_names: Sequence[str] = (), disable_read_through: bool = False,
                     layout: pb.FeaturesLayout = pb.FEATURES_LAYOUT_UNSPECIFIED,
                     timeout: float | None = None) -> pb.GetFeaturesResponse:
        """As PipelineClient.get_features, blocking."""
        request = _get_features_request(feature_view, entity_id, entity_ids, feature_names, disable_read_through,
                                        layout)
        return self._call(self.stub.GetFeatures, request, timeout)

    def get_feature_values(self, feature_view: str, entity_ids: EntityId | Iterable[EntityId], *,
                           features: Sequence[str] = (), read_through: bool = True, as_dataframe: bool = False,
                           with_event_times: bool = False,
                           timeout: float | None = None) -> FeatureValues | pandas.DataFrame:
        """As PipelineClient.get_feature_values, blocking (calls of 1000 ids one after another)."""
        ids = _ids(entity_ids)
        responses = [self.get_features(feature_view, entity_ids=chunk, feature_names=features,
                                       disable_read_through=not read_through, layout=pb.FEATURES_LAYOUT_COLUMNS,
                                       timeout=timeout)
                     for chunk in _chunks(list(ids))]
        return _values(responses, features, ids, with_event_times, as_dataframe)

    def get_feature_schema(self, feature_view: str = "", *,
                           timeout: float | None = None) -> pb.GetFeatureSchemaResponse:
        """As PipelineClient.get_feature_schema, blocking."""
        return self._call(self.stub.GetFeatureSchema, pb.GetFeatureSchemaRequest(feature_view=feature_view), timeout)

    def materialize_features(self, feature_views: str | Sequence[str] = (), *,
                             mode: pb.MaterializationMode | str = pb.MATERIALIZATION_MODE_UNSPECIFIED,
                             start_time: datetime | None = None, end_time: datetime | None = None,
                             wait: bool = False, timeout: float | None = None) -> pb.MaterializeFeaturesResponse:
        """As PipelineClient.materialize_features, blocking."""
        request = _materialize_request(feature_views, mode, start_time, end_time, wait)
        return self._call(self.stub.MaterializeFeatures, request, timeout)

    def get_materialization_job(self, job_id: str, *,
                                timeout: float | None = None) -> pb.GetMaterializationJobResponse:
        """As PipelineClient.get_materialization_job, blocking."""
        return self._call(self.stub.GetMaterializationJob, pb.GetMaterializationJobRequest(job_id=job_id), timeout)

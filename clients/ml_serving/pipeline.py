"""PipelineClient: feature store, retraining scheduler and model monitor (PipelineService)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb
from mnbara.mlserving.pipeline.v1 import pipeline_pb2_grpc

from ._base import AsyncClient, struct
from ._methods import paged, unary


class PipelineClient(AsyncClient[pipeline_pb2_grpc.PipelineServiceStub]):
    """Async client of mnbara.mlserving.pipeline.v1.PipelineService."""

    stub_type = pipeline_pb2_grpc.PipelineServiceStub

    async def get_features(self, feature_view: str, *, entity_id: str = "", entity_ids: Sequence[str] = (),
                           feature_names: Sequence[str] = (), disable_read_through: bool = False,
                           timeout: float | None = None) -> pb.GetFeaturesResponse:
        """Features of one entity (`entity_id`) or many (`entity_ids`) from the online store,
        read through to the source on a miss unless disabled."""
        request = pb.GetFeaturesRequest(feature_view=feature_view, entity_id=entity_id, entity_ids=entity_ids,
                                        feature_names=feature_names, disable_read_through=disable_read_through)
        return await self._call(self.stub.GetFeatures, request, timeout)

    async def get_feature_schema(self, feature_view: str = "", *,
                                 timeout: float | None = None) -> pb.GetFeatureSchemaResponse:
        """The feature views' schemas (all of them when `feature_view` is empty)."""
        request = pb.GetFeatureSchemaRequest(feature_view=feature_view)
        return await self._call(self.stub.GetFeatureSchema, request, timeout)

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

    materialize_features = unary(lambda stub: stub.MaterializeFeatures, pb.MaterializeFeaturesRequest,
                                 pb.MaterializeFeaturesResponse)
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

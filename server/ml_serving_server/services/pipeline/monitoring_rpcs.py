"""gRPC <-> domain for the model monitor: the RPCs PipelineServicer takes from this mixin."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb

from ...errors import InvalidArgument
from .domain.monitor import Monitor
from .domain.monitoring import (
    Aggregation,
    Alert,
    AlertRule,
    AlertState,
    Comparison,
    Degradation,
    Direction,
    Drift,
    DriftReference,
    MetricValue,
    Severity,
    Threshold,
)
from .wire import timestamp

_COMPARISONS = {pb.COMPARISON_GREATER_THAN: Comparison.GREATER_THAN,
                pb.COMPARISON_GREATER_OR_EQUAL: Comparison.GREATER_OR_EQUAL,
                pb.COMPARISON_LESS_THAN: Comparison.LESS_THAN, pb.COMPARISON_LESS_OR_EQUAL: Comparison.LESS_OR_EQUAL}
_AGGREGATIONS = {pb.AGGREGATION_UNSPECIFIED: Aggregation.MEAN, pb.AGGREGATION_MEAN: Aggregation.MEAN,
                 pb.AGGREGATION_SUM: Aggregation.SUM, pb.AGGREGATION_COUNT: Aggregation.COUNT,
                 pb.AGGREGATION_MIN: Aggregation.MIN, pb.AGGREGATION_MAX: Aggregation.MAX,
                 pb.AGGREGATION_P50: Aggregation.P50, pb.AGGREGATION_P95: Aggregation.P95,
                 pb.AGGREGATION_P99: Aggregation.P99}
_DIRECTIONS = {pb.DEGRADATION_DIRECTION_UNSPECIFIED: Direction.DECREASE,
               pb.DEGRADATION_DIRECTION_DECREASE: Direction.DECREASE,
               pb.DEGRADATION_DIRECTION_INCREASE: Direction.INCREASE}
_SEVERITIES = {pb.ALERT_SEVERITY_UNSPECIFIED: Severity.WARNING, pb.ALERT_SEVERITY_INFO: Severity.INFO,
               pb.ALERT_SEVERITY_WARNING: Severity.WARNING, pb.ALERT_SEVERITY_CRITICAL: Severity.CRITICAL}
_STATES = {pb.ALERT_STATE_FIRING: AlertState.FIRING, pb.ALERT_STATE_RESOLVED: AlertState.RESOLVED}
_DRIFT_REFERENCES = {pb.DRIFT_REFERENCE_UNSPECIFIED: DriftReference.WINDOW,
                     pb.DRIFT_REFERENCE_WINDOW: DriftReference.WINDOW,
                     pb.DRIFT_REFERENCE_TRAINING: DriftReference.TRAINING}


def _out(table: dict) -> dict:
    """A table turned around (the first wire value of each domain value)."""
    out = {}
    for wire, value in table.items():
        if wire:
            out.setdefault(value, wire)
    return out


_COMPARISONS_PB, _AGGREGATIONS_PB, _DIRECTIONS_PB = _out(_COMPARISONS), _out(_AGGREGATIONS), _out(_DIRECTIONS)
_SEVERITIES_PB, _STATES_PB, _DRIFT_REFERENCES_PB = _out(_SEVERITIES), _out(_STATES), _out(_DRIFT_REFERENCES)
_CONDITION_FIELDS = {"threshold", "degradation", "drift"}
# What UpdateAlertRule may change: everything but the id and the output-only times.
_UPDATABLE = {"name", "description", "model_name", "model_version", "metric_name", "label_filter", "window",
              "aggregation", "for_duration", "min_samples", "severity", "webhook_url", "trigger_retraining",
              "retraining_parameters", "enabled", *_CONDITION_FIELDS}


def _duration(value: timedelta) -> Duration:
    out = Duration()
    out.FromTimedelta(value)
    return out


def _span(message: Duration, present: bool, default: timedelta, field: str) -> timedelta:
    if not present:
        return default
    if message.seconds < 0 or message.nanos < 0:
        raise InvalidArgument(f"rule.{field}", "must not be negative")
    return message.ToTimedelta()


def _enum(table: dict, value: int, field: str):
    if value not in table:
        raise InvalidArgument(f"rule.{field}", f"is not a known value: {value}")
    return table[value]


def _condition(rule: pb.AlertRule):
    which = rule.WhichOneof("condition")
    if which == "threshold":
        return Threshold(_enum(_COMPARISONS, rule.threshold.comparison, "threshold.comparison"),
                         rule.threshold.threshold)
    if which == "degradation":
        given = rule.degradation
        return Degradation(_span(given.baseline_window, given.HasField("baseline_window"), timedelta(days=7),
                                 "degradation.baseline_window"),
                           given.max_relative_change, _enum(_DIRECTIONS, given.direction, "degradation.direction"))
    if which == "drift":
        given = rule.drift
        return Drift(_span(given.reference_window, given.HasField("reference_window"), timedelta(days=7),
                           "drift.reference_window"), given.bins or 10, given.psi_threshold or 0.2,
                     _enum(_DRIFT_REFERENCES, given.reference, "drift.reference"), given.feature)
    return None  # the domain names what is missing


def rule_from_pb(rule: pb.AlertRule) -> AlertRule:
    now = datetime.now(timezone.utc)  # replaced by the domain: create and update times are its own
    return AlertRule(
        rule_id=rule.rule_id, name=rule.name, model_name=rule.model_name, metric_name=rule.metric_name,
        condition=_condition(rule), create_time=now, update_time=now, description=rule.description,
        model_version=rule.model_version, label_filter=dict(rule.label_filter),
        window=_span(rule.window, rule.HasField("window"), timedelta(minutes=5), "window"),
        aggregation=_enum(_AGGREGATIONS, rule.aggregation, "aggregation"),
        for_duration=_span(rule.for_duration, rule.HasField("for_duration"), timedelta(0), "for_duration"),
        min_samples=rule.min_samples or 1, severity=_enum(_SEVERITIES, rule.severity, "severity"),
        webhook_url=rule.webhook_url, trigger_retraining=rule.trigger_retraining,
        retraining_parameters=json_format.MessageToDict(rule.retraining_parameters), enabled=rule.enabled)


def rule_to_pb(rule: AlertRule) -> pb.AlertRule:
    message = pb.AlertRule(
        rule_id=rule.rule_id, name=rule.name, description=rule.description, model_name=rule.model_name,
        model_version=rule.model_version, metric_name=rule.metric_name, label_filter=rule.label_filter,
        window=_duration(rule.window), aggregation=_AGGREGATIONS_PB[rule.aggregation],
        for_duration=_duration(rule.for_duration), min_samples=rule.min_samples,
        severity=_SEVERITIES_PB[rule.severity], webhook_url=rule.webhook_url,
        trigger_retraining=rule.trigger_retraining, enabled=rule.enabled, create_time=timestamp(rule.create_time),
        update_time=timestamp(rule.update_time))
    message.retraining_parameters.update(rule.retraining_parameters)
    condition = rule.condition
    if isinstance(condition, Threshold):
        message.threshold.CopyFrom(pb.ThresholdCondition(comparison=_COMPARISONS_PB[condition.comparison],
                                                         threshold=condition.threshold))
    elif isinstance(condition, Degradation):
        message.degradation.CopyFrom(pb.RelativeDegradationCondition(
            baseline_window=_duration(condition.baseline_window), max_relative_change=condition.max_relative_change,
            direction=_DIRECTIONS_PB[condition.direction]))
    else:
        message.drift.CopyFrom(pb.DriftCondition(reference_window=_duration(condition.reference_window),
                                                 bins=condition.bins, psi_threshold=condition.psi_threshold,
                                                 reference=_DRIFT_REFERENCES_PB[condition.reference],
                                                 feature=condition.feature))
    return message


def alert_to_pb(alert: Alert) -> pb.Alert:
    return pb.Alert(
        alert_id=alert.alert_id, rule_id=alert.rule_id, rule_name=alert.rule_name, model_name=alert.model_name,
        model_version=alert.model_version, metric_name=alert.metric_name, state=_STATES_PB[alert.state],
        severity=_SEVERITIES_PB[alert.severity], value=alert.value, reference_value=alert.reference_value,
        message=alert.message, fire_time=timestamp(alert.fire_time), resolve_time=timestamp(alert.resolve_time),
        last_evaluation_time=timestamp(alert.last_evaluation_time), retraining_run_id=alert.retraining_run_id)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _value(item: pb.RecordMetricRequest) -> MetricValue:
    # Field by field into a named tuple, the time by arithmetic: a batch holds ten thousand of these.
    time = None
    if item.HasField("time"):
        stamp = item.time
        time = _EPOCH + timedelta(seconds=stamp.seconds, microseconds=stamp.nanos // 1000)
    labels = item.labels
    return MetricValue(item.model_name, item.metric_name, item.value, time, item.model_version,
                       dict(labels) if labels else {}, item.event_id)


def _masked(current: AlertRule, given: pb.AlertRule, paths: list[str]) -> AlertRule:
    """The stored rule with the mask's fields taken from `given` (a condition field replaces the condition)."""
    if not paths:
        raise InvalidArgument("update_mask", "name at least one field to change")
    unknown = [path for path in paths if path not in _UPDATABLE]
    if unknown:
        raise InvalidArgument("update_mask", f"cannot change {', '.join(unknown[:5])}: fields are "
                                             f"{', '.join(sorted(_UPDATABLE))}")
    parsed = rule_from_pb(given)
    changes = {path: getattr(parsed, path) for path in paths if path not in _CONDITION_FIELDS}
    if _CONDITION_FIELDS & set(paths):
        changes["condition"] = parsed.condition
    return replace(current, **changes)


class MonitoringRpcs:
    _monitor: Monitor

    async def RecordMetric(self, request, context):
        _, duplicates = await self._monitor.record([_value(request)])
        return pb.RecordMetricResponse(duplicate=duplicates > 0)

    async def BatchRecordMetrics(self, request, context):
        applied, duplicates = await self._monitor.record([_value(item) for item in request.metrics], batch=True)
        return pb.BatchRecordMetricsResponse(applied_count=applied, duplicate_count=duplicates)

    async def ListAlerts(self, request, context):
        states = []
        for index, state in enumerate(request.states):
            if state not in _STATES:
                raise InvalidArgument(f"states[{index}]", f"is not an alert state: {state}")
            states.append(_STATES[state])
        if request.min_severity not in _SEVERITIES:
            raise InvalidArgument("min_severity", f"is not a severity: {request.min_severity}")
        alerts, token = await self._monitor.list_alerts(
            model_name=request.model_name, states=states, rule_id=request.rule_id,
            min_severity=_SEVERITIES[request.min_severity] if request.min_severity else None,
            page_size=request.page_size, page_token=request.page_token)
        return pb.ListAlertsResponse(alerts=[alert_to_pb(a) for a in alerts], next_page_token=token)

    async def CreateAlertRule(self, request, context):
        return pb.CreateAlertRuleResponse(rule=rule_to_pb(await self._monitor.create_rule(rule_from_pb(request.rule))))

    async def GetAlertRule(self, request, context):
        return pb.GetAlertRuleResponse(rule=rule_to_pb(await self._monitor.get_rule(request.rule_id)))

    async def ListAlertRules(self, request, context):
        rules, token = await self._monitor.list_rules(model_name=request.model_name, page_size=request.page_size,
                                                      page_token=request.page_token)
        return pb.ListAlertRulesResponse(rules=[rule_to_pb(r) for r in rules], next_page_token=token)

    async def UpdateAlertRule(self, request, context):
        paths = list(request.update_mask.paths)
        updated = await self._monitor.update_rule(request.rule.rule_id,
                                                  lambda current: _masked(current, request.rule, paths))
        return pb.UpdateAlertRuleResponse(rule=rule_to_pb(updated))

    async def DeleteAlertRule(self, request, context):
        await self._monitor.delete_rule(request.rule_id)
        return pb.DeleteAlertRuleResponse()

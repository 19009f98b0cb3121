"""Router messages <-> domain values, in one place: the servicer uses them both ways, and the
client library (ABTestingRouter) turns a served Experiment back into the very definition the
server assigns with (`definition_from_pb`), so both compute the same answer for every user."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import duration_pb2, json_format, timestamp_pb2
from mnbara.mlserving.router.v1 import router_pb2 as pb

from ...errors import InvalidArgument
from .domain.allocation import DEFAULT_INTERVAL_S, DEFAULT_MIN_EXPOSURES, Allocation, AllocationMode
from .domain.assignment import BUCKETS, BucketLayout, ExperimentDefinition, Variant, define_experiment
from .domain.canaries import CanaryInput
from .domain.canary import Canary, CanaryEvent, CanaryState, SideStats, Thresholds
from .domain.model import ChangeAction, Experiment, ExperimentChange, ExperimentDraft, ExperimentState, ShadowConfig
from .domain.statistics import MetricKind

_KIND_FROM_PB = {pb.OUTCOME_KIND_BINARY: MetricKind.BINARY, pb.OUTCOME_KIND_NUMERIC: MetricKind.NUMERIC}
_KIND_TO_PB = {kind: number for number, kind in _KIND_FROM_PB.items()}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _variants_from_pb(variants) -> tuple[Variant, ...]:
    return tuple(Variant(v.name, v.model_name, v.model_version, v.weight_bps, v.control, v.description)
                 for v in variants)


def _targeting_from_pb(experiment: pb.Experiment) -> dict | None:
    if not experiment.HasField("targeting"):
        return None
    return json_format.MessageToDict(experiment.targeting, preserving_proto_field_name=True)


def draft_from_pb(experiment: pb.Experiment) -> ExperimentDraft:
    shadow = None
    if experiment.HasField("shadow"):
        s = experiment.shadow
        shadow = ShadowConfig(s.model_name, s.model_version, s.sample_bps)
    return ExperimentDraft(
        name=experiment.name, variants=_variants_from_pb(experiment.variants), description=experiment.description,
        targeting=_targeting_from_pb(experiment),
        overrides=tuple((o.user_id, o.variant) for o in experiment.overrides),
        holdout_bps=experiment.holdout_bps, salt=experiment.salt,
        metrics=tuple((m.name, _KIND_FROM_PB.get(m.kind)) for m in experiment.metrics),
        shadow=shadow, priority=experiment.priority, allocation=_allocation_from_pb(experiment),
        revision=experiment.revision)


def _allocation_from_pb(experiment: pb.Experiment) -> Allocation:
    a = experiment.allocation
    if a.mode != pb.ALLOCATION_MODE_THOMPSON:
        if a.mode not in (pb.ALLOCATION_MODE_UNSPECIFIED, pb.ALLOCATION_MODE_FIXED):
            raise InvalidArgument("experiment.allocation.mode", "must be FIXED or THOMPSON")
        return Allocation()
    interval = a.interval.ToTimedelta().total_seconds() if a.HasField("interval") else DEFAULT_INTERVAL_S
    return Allocation(AllocationMode.THOMPSON, floor_bps=a.floor_bps, ceiling_bps=a.ceiling_bps or BUCKETS,
                      interval_s=interval, min_exposures=a.min_exposures or DEFAULT_MIN_EXPOSURES)


def _allocation_to_pb(experiment: Experiment) -> pb.Allocation:
    a = experiment.allocation
    if not a.adaptive:
        return pb.Allocation(mode=pb.ALLOCATION_MODE_FIXED)
    return pb.Allocation(mode=pb.ALLOCATION_MODE_THOMPSON, floor_bps=a.floor_bps, ceiling_bps=a.ceiling_bps,
                         interval=duration(a.interval_s), min_exposures=a.min_exposures,
                         last_change_time=timestamp(experiment.reweight_time))


def duration(seconds: float) -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=int(seconds), nanos=int(round(seconds % 1 * 1e9)))


def definition_from_pb(experiment: pb.Experiment) -> ExperimentDefinition:
    """The assignment definition of an experiment as the server sent it (buckets included)."""
    layout = BucketLayout.from_data({v.name: [[r.start, r.end] for r in v.buckets] for v in experiment.variants})
    return define_experiment(experiment.name, _variants_from_pb(experiment.variants), salt=experiment.salt,
                             targeting=_targeting_from_pb(experiment),
                             overrides=[(o.user_id, o.variant) for o in experiment.overrides],
                             holdout_bps=experiment.holdout_bps, layout=layout)


def experiment_to_pb(experiment: Experiment) -> pb.Experiment:
    d = experiment.definition
    ranges = d.layout.as_data()
    message = pb.Experiment(
        name=d.name, description=experiment.description,
        variants=[pb.Variant(name=v.name, model_name=v.model_name, model_version=v.model_version,
                             weight_bps=v.weight_bps, control=v.control, description=v.description,
                             buckets=[pb.BucketRange(start=s, end=e) for s, e in ranges.get(v.name, [])])
                  for v in d.variants],
        overrides=[pb.UserOverride(user_id=user, variant=variant) for user, variant in d.overrides],
        holdout_bps=d.holdout_bps, salt=d.salt,
        metrics=[pb.OutcomeMetric(name=m.name, kind=_KIND_TO_PB[m.kind]) for m in experiment.metrics],
        priority=experiment.priority, state=experiment.state.value, winning_variant=experiment.winning_variant,
        revision=experiment.revision, created_by=experiment.created_by,
        create_time=timestamp(experiment.create_time), update_time=timestamp(experiment.update_time),
        start_time=timestamp(experiment.start_time), stop_time=timestamp(experiment.stop_time),
        allocation=_allocation_to_pb(experiment))
    if not d.targeting.is_empty:
        rule = d.targeting.as_data()
        for condition in rule["conditions"]:
            condition["operator"] = "ATTRIBUTE_OPERATOR_" + condition["operator"]
        json_format.ParseDict(rule, message.targeting)
    if experiment.shadow is not None:
        s = experiment.shadow
        message.shadow.CopyFrom(pb.ShadowConfig(model_name=s.model_name, model_version=s.model_version,
                                                sample_bps=s.sample_bps))
    return message


def change_to_pb(change: ExperimentChange) -> pb.ExperimentChange:
    message = pb.ExperimentChange(
        experiment=change.experiment, revision=change.revision, action=_ACTION_TO_PB[change.action],
        actor=change.actor, change_time=timestamp(change.time), reason=change.reason, fields=change.fields,
        figures=[pb.AllocationFigure(variant=f.variant, exposures=f.exposures, mean=f.mean,
                                     probability_best=f.probability_best, weight_before_bps=f.weight_before_bps,
                                     weight_after_bps=f.weight_after_bps) for f in change.figures])
    if change.after is not None:
        message.experiment_after.CopyFrom(experiment_to_pb(change.after))
    return message


_ACTION_TO_PB = {action: pb.ExperimentChangeAction.Value(f"EXPERIMENT_CHANGE_ACTION_{action.name}")
                 for action in ChangeAction}


def states_from_pb(states) -> list[ExperimentState]:
    known = {s.value for s in ExperimentState}
    for index, state in enumerate(states):
        if state not in known:
            raise InvalidArgument(f"states[{index}]", "must be RUNNING, PAUSED or STOPPED")
    return [ExperimentState(s) for s in states]


# --- canaries ---------------------------------------------------------------------------------

def canary_input_from_pb(canary: pb.Canary) -> CanaryInput:
    t = canary.thresholds
    return CanaryInput(
        model_name=canary.model_name, canary_version=canary.canary_version, steps_bps=tuple(canary.steps_bps),
        step_interval_s=canary.step_interval.ToTimedelta().total_seconds(),
        min_requests_per_step=canary.min_requests_per_step,
        thresholds=Thresholds(t.max_error_rate_increase, t.max_p99_latency_ratio),
        stable_version=canary.stable_version, manual_promotion=canary.manual_promotion, salt=canary.salt)


def _side_to_pb(stats: SideStats) -> pb.CanarySideStats:
    return pb.CanarySideStats(request_count=stats.request_count, error_count=stats.error_count,
                              error_rate=stats.error_rate, latency_p99_ms=stats.latency_p99_ms)


def canary_to_pb(canary: Canary, stable: SideStats | None = None, candidate: SideStats | None = None) -> pb.Canary:
    message = pb.Canary(
        canary_id=canary.canary_id, model_name=canary.model_name, stable_version=canary.stable_version,
        canary_version=canary.canary_version, steps_bps=canary.steps_bps,
        step_interval=duration(canary.step_interval_s),
        min_requests_per_step=canary.min_requests_per_step,
        thresholds=pb.CanaryThresholds(max_error_rate_increase=canary.thresholds.max_error_rate_increase,
                                       max_p99_latency_ratio=canary.thresholds.max_p99_latency_ratio),
        manual_promotion=canary.manual_promotion, salt=canary.salt, state=canary.state.value,
        current_step=canary.current_step, current_weight_bps=canary.current_weight_bps,
        step_start_time=timestamp(canary.step_start_time), rollback_reason=canary.rollback_reason,
        created_by=canary.created_by, create_time=timestamp(canary.create_time),
        update_time=timestamp(canary.update_time), end_time=timestamp(canary.end_time),
        status_message=canary.status_message)
    if stable is not None:
        message.stable_stats.CopyFrom(_side_to_pb(stable))
    if candidate is not None:
        message.canary_stats.CopyFrom(_side_to_pb(candidate))
    return message


def canary_event_to_pb(event: CanaryEvent) -> pb.CanaryEvent:
    return pb.CanaryEvent(
        canary_id=event.canary_id, sequence=event.sequence, event_type=event.event_type.value,
        event_time=timestamp(event.time), from_weight_bps=event.from_weight_bps, to_weight_bps=event.to_weight_bps,
        step=event.step, reason=event.reason, actor=event.actor, automatic=event.automatic,
        stable_stats=_side_to_pb(event.stable_stats), canary_stats=_side_to_pb(event.canary_stats))


def canary_states_from_pb(states) -> list[CanaryState]:
    known = {s.value for s in CanaryState}
    for index, state in enumerate(states):
        if state not in known:
            raise InvalidArgument(f"states[{index}]", "must be a CanaryState other than UNSPECIFIED")
    return [CanaryState(s) for s in states]

"""Router messages <-> domain values, in one place: the servicer uses them both ways, and the
client library (ABTestingRouter) turns a served Experiment back into the very definition the
server assigns with (`definition_from_pb`), so both compute the same answer for every user."""

from __future__ import annotations

from datetime import datetime

from google.protobuf import json_format, timestamp_pb2
from mnbara.mlserving.router.v1 import router_pb2 as pb

from ...errors import InvalidArgument
from .domain.assignment import BucketLayout, ExperimentDefinition, Variant, define_experiment
from .domain.model import Experiment, ExperimentDraft, ExperimentState, ShadowConfig
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
        shadow=shadow, priority=experiment.priority, revision=experiment.revision)


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
        start_time=timestamp(experiment.start_time), stop_time=timestamp(experiment.stop_time))
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


def states_from_pb(states) -> list[ExperimentState]:
    known = {s.value for s in ExperimentState}
    for index, state in enumerate(states):
        if state not in known:
            raise InvalidArgument(f"states[{index}]", "must be RUNNING, PAUSED or STOPPED")
    return [ExperimentState(s) for s in states]

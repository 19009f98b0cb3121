"""The arithmetic of alert rules: aggregations, the population stability index, one evaluation of
a rule's condition, and the hysteresis that turns evaluations into firing and resolving.

Hysteresis: a quiet rule fires once its condition has held for `for_duration`; a firing one
resolves once the condition has not held for `for_duration` (0: at the first evaluation either
way). Too few values to tell change nothing, so a gap in the data neither fires nor resolves.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

import numpy as np

from .monitoring import (
    Aggregation,
    Alert,
    AlertRule,
    Comparison,
    Degradation,
    Direction,
    Drift,
    DriftReference,
    Evaluation,
    RuleState,
    Threshold,
)

_PSI_FLOOR = 1e-4  # a bin empty on one side would make the PSI infinite: count it as this share


def aggregate(values: Sequence[float], how: Aggregation) -> float:
    data = np.asarray(values, dtype=float)
    if how is Aggregation.COUNT:
        return float(len(data))
    if not len(data):
        return math.nan
    match how:
        case Aggregation.MEAN:
            return float(data.mean())
        case Aggregation.SUM:
            return float(data.sum())
        case Aggregation.MIN:
            return float(data.min())
        case Aggregation.MAX:
            return float(data.max())
        case Aggregation.P50:
            return float(np.percentile(data, 50))
        case Aggregation.P95:
            return float(np.percentile(data, 95))
        case Aggregation.P99:
            return float(np.percentile(data, 99))
    raise ValueError(how)


def psi(reference: Sequence[float], current: Sequence[float], bins: int) -> float:
    """Population stability index of `current` against `reference`, over bins at the reference's
    quantiles (sum over bins of (cur - ref) * ln(cur / ref), shares floored at 1e-4)."""
    ref, cur = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_share = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1) / len(ref)
    cur_share = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1) / len(cur)
    ref_share, cur_share = np.maximum(ref_share, _PSI_FLOOR), np.maximum(cur_share, _PSI_FLOOR)
    return float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))


_COMPARE = {Comparison.GREATER_THAN: lambda v, t: v > t, Comparison.GREATER_OR_EQUAL: lambda v, t: v >= t,
            Comparison.LESS_THAN: lambda v, t: v < t, Comparison.LESS_OR_EQUAL: lambda v, t: v <= t}


def evaluate(rule: AlertRule, current: Sequence[float], reference: Sequence[float] = ()) -> Evaluation:
    """Whether the rule's condition holds over `current` (the evaluation window's values) and, for
    a degradation or drift, `reference` (the baseline window's, the reference window's or the training
    sample's)."""
    need = max(1, rule.min_samples)
    if len(current) < need or (not isinstance(rule.condition, Threshold) and len(reference) < need):
        return Evaluation(None, samples=len(current), message=f"fewer than {need} values to evaluate")
    condition = rule.condition
    if isinstance(condition, Threshold):
        value = aggregate(current, rule.aggregation)
        holds = _COMPARE[condition.comparison](value, condition.threshold)
        return Evaluation(holds, value, condition.threshold, len(current),
                          f"{rule.aggregation.value} of {rule.metric_name} over {_span(rule)} is {value:.6g} "
                          f"({condition.comparison.value} {condition.threshold:.6g}: {'yes' if holds else 'no'})")
    if isinstance(condition, Degradation):
        return _degradation(rule, condition, current, reference)
    if isinstance(condition, Drift):
        value = psi(reference, current, condition.bins)
        holds = value > condition.psi_threshold
        against = f"the previous {condition.reference_window}" if condition.reference is DriftReference.WINDOW \
            else f"what {rule.model_name}'s latest retraining run trained on"
        return Evaluation(holds, value, condition.psi_threshold, len(current),
                          f"PSI of {condition.feature or rule.metric_name} over {_span(rule)} against {against} "
                          f"is {value:.4f} (threshold {condition.psi_threshold:.4g})")
    raise ValueError(condition)


def _degradation(rule: AlertRule, condition: Degradation, current, reference) -> Evaluation:
    value, baseline = aggregate(current, rule.aggregation), aggregate(reference, rule.aggregation)
    worse = baseline - value if condition.direction is Direction.DECREASE else value - baseline
    if abs(baseline) < 1e-12:
        holds = worse > 0  # no relative change from zero: any change for the worse counts
        change = math.inf if holds else 0.0
    else:
        change = worse / abs(baseline)
        holds = change > condition.max_relative_change
    return Evaluation(holds, value, baseline, len(current),
                      f"{rule.aggregation.value} of {rule.metric_name} over {_span(rule)} is {value:.6g}, "
                      f"{change:+.2%} worse than {baseline:.6g} over the previous {condition.baseline_window} "
                      f"(at most {condition.max_relative_change:.2%})")


def _span(rule: AlertRule) -> str:
    return f"the last {rule.window}"


class Change(enum.Enum):
    NONE = "none"  # nothing to write but the rule's state
    FIRE = "fire"  # open an alert
    UPDATE = "update"  # the firing alert's latest value
    RESOLVE = "resolve"  # close the firing alert


@dataclass(frozen=True)
class Decision:
    change: Change
    state: RuleState


def decide(rule: AlertRule, state: RuleState, evaluation: Evaluation, firing: Alert | None,
           now: datetime) -> Decision:
    """What one evaluation does to a rule, given whether it has an alert firing."""
    if evaluation.holds is None:
        return Decision(Change.UPDATE if firing else Change.NONE, state)
    if firing is None:
        if not evaluation.holds:
            return Decision(Change.NONE, RuleState(rule.rule_id, None))
        since = state.pending_since or now
        if now - since >= rule.for_duration:
            return Decision(Change.FIRE, RuleState(rule.rule_id, None))
        return Decision(Change.NONE, RuleState(rule.rule_id, since))
    if evaluation.holds:
        return Decision(Change.UPDATE, RuleState(rule.rule_id, None))
    since = state.pending_since or now
    if now - since >= rule.for_duration:
        return Decision(Change.RESOLVE, RuleState(rule.rule_id, None))
    return Decision(Change.UPDATE, RuleState(rule.rule_id, since))

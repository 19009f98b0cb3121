"""The lifecycle state machine and the promotion gates.

    Development -> Staging              submit for validation
    Staging     -> Production           promote (archives the previous Production version)
    Staging     -> Development          send back
    Production  -> Staging              demote
    Archived    -> Staging              restore
    any stage   -> Archived             retire

Everything else is FAILED_PRECONDITION (INVALID_TRANSITION), moving to the stage a version
is already in included.
"""

from __future__ import annotations

import math
from typing import Iterable

from ....errors import FailedPrecondition, quoted
from .errors import ErrorReason
from .model import Comparison, GateResult, MetricGate, Stage

ALLOWED: dict[Stage, frozenset[Stage]] = {
    Stage.DEVELOPMENT: frozenset({Stage.STAGING, Stage.ARCHIVED}),
    Stage.STAGING: frozenset({Stage.PRODUCTION, Stage.DEVELOPMENT, Stage.ARCHIVED}),
    Stage.PRODUCTION: frozenset({Stage.STAGING, Stage.ARCHIVED}),
    Stage.ARCHIVED: frozenset({Stage.STAGING}),
}
GATED_STAGES = frozenset({Stage.STAGING, Stage.PRODUCTION})


def check_transition(version: str, current: Stage, target: Stage) -> None:
    if target not in ALLOWED[current]:
        allowed = ", ".join(sorted(s.name for s in ALLOWED[current]))
        raise FailedPrecondition(
            f"version {quoted(version)} is in {current.name}; from there it may move to {allowed}, "
            f"not {target.name}", reason=ErrorReason.INVALID_TRANSITION,
            metadata={"version": version, "from_stage": current.name, "to_stage": target.name})


def _passes(gate: MetricGate, value: float) -> bool:
    if math.isnan(value):
        return False
    match gate.comparison:
        case Comparison.GREATER_THAN:
            return value > gate.threshold
        case Comparison.GREATER_OR_EQUAL:
            return value >= gate.threshold
        case Comparison.LESS_THAN:
            return value < gate.threshold
        case Comparison.LESS_OR_EQUAL:
            return value <= gate.threshold
    return False


def evaluate_gates(gates: Iterable[MetricGate], target: Stage, metrics: dict[str, float]) -> tuple[GateResult, ...]:
    """Every gate guarding `target`, checked against the version's metrics (a missing metric fails)."""
    results = []
    for gate in gates:
        if gate.target_stage != target:
            continue
        actual = metrics.get(gate.metric)
        results.append(GateResult(gate, actual, actual is not None and _passes(gate, actual)))
    return tuple(results)


SYMBOLS = {Comparison.GREATER_THAN: ">", Comparison.GREATER_OR_EQUAL: ">=", Comparison.LESS_THAN: "<",
           Comparison.LESS_OR_EQUAL: "<="}


def gate_failure(version: str, target: Stage, results: tuple[GateResult, ...]) -> FailedPrecondition | None:
    """The error naming each failed gate's metric, or None when every gate passed."""
    failed = [r for r in results if not r.passed]
    if not failed:
        return None
    parts = [f"{r.gate.metric} = {'missing' if r.actual is None else r.actual} "
             f"(needs {SYMBOLS[r.gate.comparison]} {r.gate.threshold})" for r in failed]
    return FailedPrecondition(
        f"version {quoted(version)} fails the {target.name} gate: {'; '.join(parts)}; "
        "set override with a reason to promote anyway", reason=ErrorReason.GATE_FAILED,
        metadata={"version": version, "metric": failed[0].gate.metric,
                  "failed_metrics": ",".join(r.gate.metric for r in failed)})

"""The model monitor's vocabulary: metric values, alert rules, alerts, and the ports they are kept
behind. The rules' arithmetic is in alerting.py; recording and the evaluation rounds in monitor.py.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol, Sequence


class MetricValue(NamedTuple):
    """One recorded value of a model's metric. (A named tuple: a batch makes ten thousand.)"""

    model_name: str
    metric_name: str
    value: float  # finite
    time: datetime | None  # None: when it is recorded
    model_version: str = ""  # "" when not version-specific
    labels: dict[str, str] = {}  # noqa: RUF012 - never mutated
    event_id: str = ""  # idempotency key per model and metric; "" when not deduplicated


class Comparison(enum.Enum):
    GREATER_THAN = ">"
    GREATER_OR_EQUAL = ">="
    LESS_THAN = "<"
    LESS_OR_EQUAL = "<="


class Aggregation(enum.Enum):
    MEAN = "mean"
    SUM = "sum"
    COUNT = "count"
    MIN = "min"
    MAX = "max"
    P50 = "p50"
    P95 = "p95"
    P99 = "p99"


class Direction(enum.Enum):
    DECREASE = "decrease"  # a decrease is worse (accuracy, AUC)
    INCREASE = "increase"  # an increase is worse (latency, error rate)


@dataclass(frozen=True)
class Threshold:
    comparison: Comparison
    threshold: float


@dataclass(frozen=True)
class Degradation:
    baseline_window: timedelta  # ends where the evaluation window starts
    max_relative_change: float  # e.g. 0.05: worse than the baseline by more than 5% fires
    direction: Direction


class DriftReference(enum.Enum):
    WINDOW = "window"  # the metric's own values in the reference window
    TRAINING = "training"  # what the model's latest successful retraining run trained on


@dataclass(frozen=True)
class Drift:
    reference_window: timedelta  # ends where the evaluation window starts (WINDOW only)
    bins: int  # histogram bins, at the reference's quantiles
    psi_threshold: float
    reference: DriftReference = DriftReference.WINDOW
    # TRAINING only: the feature watched, "view:feature" (a numeric scalar feature of a declared view),
    # its source rows of the evaluation window against the run's training sample of it.
    feature: str = ""


Condition = Threshold | Degradation | Drift


class Severity(enum.Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass
class AlertRule:
    rule_id: str
    name: str  # unique
    model_name: str
    metric_name: str
    condition: Condition
    create_time: datetime
    update_time: datetime
    description: str = ""
    model_version: str = ""  # "" watches every version's values
    label_filter: dict[str, str] = field(default_factory=dict)
    window: timedelta = timedelta(minutes=5)
    aggregation: Aggregation = Aggregation.MEAN
    for_duration: timedelta = timedelta(0)  # how long the condition holds (or stops holding) before a change
    min_samples: int = 1
    severity: Severity = Severity.WARNING
    webhook_url: str = ""
    trigger_retraining: bool = False
    retraining_parameters: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True


class AlertState(enum.Enum):
    FIRING = "FIRING"
    RESOLVED = "RESOLVED"


@dataclass
class Alert:
    alert_id: str
    rule_id: str
    rule_name: str
    model_name: str
    metric_name: str
    state: AlertState
    severity: Severity
    value: float  # the aggregate, or the PSI, that fired it (updated while it fires)
    reference_value: float  # the threshold, the baseline's aggregate, or the PSI threshold
    message: str
    fire_time: datetime
    last_evaluation_time: datetime
    model_version: str = ""
    resolve_time: datetime | None = None
    retraining_run_id: str = ""


@dataclass(frozen=True)
class Evaluation:
    """One look at a rule: whether its condition holds now, and the numbers behind it. `holds`
    None: too few values to tell (the rule's state is left as it is)."""

    holds: bool | None
    value: float = float("nan")
    reference_value: float = float("nan")
    samples: int = 0
    message: str = ""


@dataclass
class RuleState:
    """What the evaluator remembers of a rule between rounds (hysteresis)."""

    rule_id: str
    pending_since: datetime | None = None  # the condition's current streak (holding while quiet,
    # or not holding while firing) began then; None: no streak


# ----- ports -----

class MetricStore(Protocol):
    """Recorded values in PostgreSQL; StateStoreUnavailable when it cannot be reached."""

    async def record(self, values: Sequence[MetricValue]) -> tuple[int, int]:
        """Stores the values; (newly recorded, duplicates of an event id already recorded for the
        same model and metric, in this call or before)."""

    async def values(self, *, model_name: str, metric_name: str, model_version: str, label_filter: dict[str, str],
                     start: datetime, end: datetime, limit: int) -> list[float]:
        """The values recorded for start <= time < end (every version's when model_version is ""),
        carrying all of label_filter's labels; at most `limit`, the newest."""

    async def delete_before(self, cutoff: datetime) -> int:
        """Deletes the values recorded before `cutoff` (retention); how many."""


class AlertStore(Protocol):
    """Rules, their evaluation state and alerts in PostgreSQL."""

    async def create_rule(self, rule: AlertRule) -> None:
        """AlreadyExists (ALERT_RULE_ALREADY_EXISTS) when the name is taken."""

    async def get_rule(self, rule_id: str) -> AlertRule | None: ...
    async def list_rules(self, *, model_name: str, enabled_only: bool, limit: int, after_seq: int
                         ) -> tuple[list[AlertRule], int | None]: ...
    async def update_rule(self, rule: AlertRule) -> bool: ...
    async def delete_rule(self, rule_id: str, now: datetime) -> bool:
        """Deletes the rule and resolves its firing alert."""

    async def rule_state(self, rule_id: str) -> RuleState: ...
    async def save_rule_state(self, state: RuleState) -> None: ...

    async def firing_alert(self, rule_id: str) -> Alert | None: ...
    async def open_alert(self, alert: Alert) -> Alert:
        """Stores a FIRING alert; the rule's alert already firing when there is one (no duplicate)."""

    async def update_alert(self, alert: Alert) -> bool:
        """Writes a firing alert's new state; False (nothing written) once it has resolved: a
        resolved alert is final, so replicas evaluating at once resolve (and notify) it once."""
    async def list_alerts(self, *, model_name: str, states: Sequence[AlertState], rule_id: str,
                          min_severity: Severity | None, limit: int, after_seq: int) -> tuple[list[Alert], int | None]: ...


class AlertNotifier(Protocol):
    """Where alerts go when they fire or resolve (webhooks); never raises (it retries, then logs)."""

    async def notify(self, rule: AlertRule, alert: Alert) -> None: ...

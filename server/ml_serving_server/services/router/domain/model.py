"""What the Router keeps: experiments as stored, their change history, and the measurements
it records (exposures, request samples, outcome events). Plain data, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime

from .allocation import Allocation, VariantFigures
from .assignment import ExperimentDefinition
from .statistics import Counts, MetricKind

__all__ = [
    "ChangeAction",
    "Exposure",
    "Experiment",
    "ExperimentChange",
    "ExperimentState",
    "OutcomeEvent",
    "OutcomeResult",
    "OutcomeMetric",
    "RequestSample",
    "RequestStats",
    "ShadowConfig",
    "VariantCounts",
    "experiment_scope",
]


class ExperimentState(enum.Enum):
    """Values are the proto's ExperimentState numbers."""

    RUNNING = 1
    PAUSED = 2
    STOPPED = 3


@dataclass(frozen=True)
class OutcomeMetric:
    name: str
    kind: MetricKind


@dataclass(frozen=True)
class ShadowConfig:
    """A copy of `sample_bps` of the Predict calls goes to this version; its answer is dropped."""

    model_name: str
    model_version: str
    sample_bps: int


@dataclass(frozen=True)
class Experiment:
    """An experiment as stored: the assignment definition plus everything around it."""

    definition: ExperimentDefinition
    metrics: tuple[OutcomeMetric, ...]
    state: ExperimentState = ExperimentState.RUNNING
    description: str = ""
    shadow: ShadowConfig | None = None
    priority: int = 0
    allocation: Allocation = Allocation()
    reweight_time: datetime | None = None  # the adaptive allocation's last weight change
    winning_variant: str = ""
    revision: int = 1
    created_by: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None
    start_time: datetime | None = None
    stop_time: datetime | None = None

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def model_name(self) -> str:
        """All variants serve versions of this one model."""
        return self.definition.variants[0].model_name

    @property
    def active(self) -> bool:
        return self.state is ExperimentState.RUNNING

    def metric(self, name: str) -> OutcomeMetric | None:
        """The named metric; "" is the primary (first) one."""
        if not name:
            return self.metrics[0]
        return next((m for m in self.metrics if m.name == name), None)

    def with_changes(self, **changes) -> Experiment:
        return replace(self, **changes)


class ChangeAction(enum.Enum):
    CREATED = "created"
    UPDATED = "updated"
    PAUSED = "paused"
    RESUMED = "resumed"
    STOPPED = "stopped"
    REWEIGHTED = "reweighted"  # by the adaptive allocation


@dataclass(frozen=True)
class ExperimentChange:
    """One entry of an experiment's history: who did what, why, and the experiment after it."""

    experiment: str
    revision: int  # the experiment's revision after the change
    action: ChangeAction
    actor: str
    time: datetime
    reason: str = ""
    fields: tuple[str, ...] = ()  # for UPDATED: the update mask's paths
    after: Experiment | None = None
    figures: tuple[VariantFigures, ...] = ()  # for REWEIGHTED: what the new weights were based on


def experiment_scope(name: str) -> str:
    """The measurement scope of an experiment (canaries get scopes of their own)."""
    return f"experiment:{name}"


@dataclass(frozen=True)
class Exposure:
    """A user served by a variant of an experiment (or held out: variant HOLDOUT)."""

    experiment: str
    variant: str
    user_id: str

    HOLDOUT = "~holdout"  # not a valid variant name, so never one of the variants


@dataclass(frozen=True)
class RequestSample:
    """One Predict call as a variant served it: model latency and whether it failed."""

    scope: str  # experiment_scope(name), or a canary's
    variant: str
    latency_ms: float
    error: bool
    shadow: bool = False


@dataclass(frozen=True)
class RequestStats:
    """A variant's Predict calls: counts and the latency histogram's quantiles."""

    request_count: int = 0
    error_count: int = 0
    latency_p50_ms: float = 0.0
    latency_p99_ms: float = 0.0


@dataclass(frozen=True)
class OutcomeEvent:
    """An outcome attributed to a variant: `value` is 1.0 / 0.0 for binary metrics."""

    experiment: str
    event_id: str
    user_id: str
    variant: str
    metric: str
    kind: MetricKind
    value: float
    time: datetime | None = None


class OutcomeResult(enum.Enum):
    COUNTED = "counted"  # new, and the user was exposed to the variant
    NOT_COUNTED = "not_counted"  # new, but the user was never exposed to that variant
    DUPLICATE = "duplicate"  # the event id was recorded before: nothing changed


@dataclass(frozen=True)
class VariantCounts:
    """What results need of one variant for one metric."""

    counts: Counts  # n = distinct users exposed
    outcome_events: int = 0  # numeric: events counted; binary: users converted
    requests: RequestStats = field(default_factory=RequestStats)


@dataclass(frozen=True)
class ExperimentDraft:
    """An experiment as a caller describes it (unchecked): what Create and Update take.
    `targeting` is in TargetingRule's data form (see targeting.parse_targeting)."""

    name: str
    variants: tuple = ()  # assignment.Variant
    description: str = ""
    targeting: object = None
    overrides: tuple[tuple[str, str], ...] = ()
    holdout_bps: int = 0
    salt: str = ""
    metrics: tuple[tuple[str, MetricKind | None], ...] = ()  # (name, kind); None: kind unset
    shadow: ShadowConfig | None = None
    priority: int = 0
    allocation: Allocation = Allocation()
    revision: int = 0  # for updates: 0, or the revision the caller read


@dataclass(frozen=True)
class RoutedAssignment:
    """The version a user is served, and why (the proto's Assignment)."""

    experiment: str
    variant: str
    model_name: str
    model_version: str
    bucket: int
    reason: int  # the proto's AssignmentReason number (assignment.AssignmentReason or DEFAULT)
    canary_id: str = ""


@dataclass(frozen=True)
class OutcomeInput:
    """One outcome as a caller sends it (unchecked)."""

    event_id: str
    experiment: str
    user_id: str
    variant: str = ""
    metric: str = ""
    converted: bool | None = None
    value: float | None = None
    time: datetime | None = None

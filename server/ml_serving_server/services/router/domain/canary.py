"""Canaries: a candidate version against the stable one in steps, advanced, promoted or rolled
back by the Router on its own. Plain Python: the state, its checks, and `decide`, a pure
function of the canary, its measurements and the time.

Traffic. A user's bucket under the canary's salt (assignment.hash_user) below the current
weight in basis points gets the canary version, everyone else the stable one: raising the
weight only moves users from stable to canary, never back.

Measurements. Every Predict served under a canary is counted twice: in the canary's
cumulative scope (`canary_scope(id)`) and in its current step's (`step_scope(id, step)`).
The rollback tests use the cumulative figures (more data, and the always-valid test may be
read after every tick); a step advances only on its own figures (its interval passed and at
least min_requests_per_step canary requests on it).

Decisions, in order (see `decide`):
  1. Breach, while RUNNING or PAUSED: the canary's error rate exceeds stable's by more than
     max_error_rate_increase with always-valid confidence (statistics.canary_check, at least
     MIN_REQUESTS_TO_JUDGE requests per side), or its p99 latency exceeds stable's times
     max_p99_latency_ratio with at least MIN_REQUESTS_TO_JUDGE requests per side: ROLLBACK.
  2. PAUSED or AWAITING_PROMOTION: HOLD.
  3. The step's interval has not passed, or its canary requests are below the minimum: HOLD,
     saying so. Too little traffic never counts as a pass.
  4. Otherwise ADVANCE to the next step, or after the last one FINISH (promote, or wait for
     PromoteCanary when manual_promotion is set).
Failures of the infrastructure (TorchServe unreachable) are not counted against either side
(service.py records only the variant's own failures), so an outage holds the step.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from ....errors import InvalidArgument
from .errors import ErrorReason
from .statistics import DEFAULT_CANARY_ALPHA, canary_check

BUCKETS = 10_000
MAX_STEPS = 20
MIN_STEP_INTERVAL_S = 1.0
MAX_STEP_INTERVAL_S = 7 * 86_400.0
MAX_MIN_REQUESTS = 10_000_000
MIN_REQUESTS_TO_JUDGE = 50
"""Requests per side below which no threshold is judged breached (statistics' default)."""
VERSION = re.compile(r"[1-9][0-9]{0,9}")


class CanaryState(enum.Enum):
    """Values are the proto's CanaryState numbers."""

    RUNNING = 1
    PAUSED = 2
    AWAITING_PROMOTION = 3
    PROMOTED = 4
    ROLLED_BACK = 5


ACTIVE_STATES = frozenset({CanaryState.RUNNING, CanaryState.PAUSED, CanaryState.AWAITING_PROMOTION})


class CanaryEventType(enum.Enum):
    """Values are the proto's CanaryEventType numbers."""

    STARTED = 1
    ADVANCED = 2
    PAUSED = 3
    RESUMED = 4
    AWAITING_PROMOTION = 5
    PROMOTED = 6
    PROMOTION_FAILED = 7
    ROLLED_BACK = 8


@dataclass(frozen=True)
class Thresholds:
    max_error_rate_increase: float
    max_p99_latency_ratio: float = 0.0  # 0: no latency check


@dataclass(frozen=True)
class SideStats:
    """One side's Predict calls (a RequestStats in the canary's terms)."""

    request_count: int = 0
    error_count: int = 0
    latency_p99_ms: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.error_count / self.request_count if self.request_count else 0.0


@dataclass(frozen=True)
class Canary:
    canary_id: str
    model_name: str
    stable_version: str
    canary_version: str
    steps_bps: tuple[int, ...]
    step_interval_s: float
    min_requests_per_step: int
    thresholds: Thresholds
    salt: str
    manual_promotion: bool = False
    state: CanaryState = CanaryState.RUNNING
    current_step: int = 0
    step_start_time: datetime | None = None
    rollback_reason: str = ""
    status_message: str = ""
    created_by: str = ""
    request_id: str = ""
    revision: int = 1
    create_time: datetime | None = None
    update_time: datetime | None = None
    end_time: datetime | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def current_weight_bps(self) -> int:
        """The canary's share now: 0 once rolled back, everything once promoted."""
        if self.state is CanaryState.ROLLED_BACK:
            return 0
        if self.state is CanaryState.PROMOTED:
            return BUCKETS
        return self.steps_bps[self.current_step] if self.current_step >= 0 else 0

    def with_changes(self, **changes) -> Canary:
        return replace(self, **changes)


@dataclass(frozen=True)
class CanaryEvent:
    canary_id: str
    event_type: CanaryEventType
    time: datetime
    from_weight_bps: int
    to_weight_bps: int
    step: int
    reason: str = ""
    actor: str = "router"
    automatic: bool = False
    stable_stats: SideStats = field(default_factory=SideStats)
    canary_stats: SideStats = field(default_factory=SideStats)
    sequence: int = 0  # assigned by the store


def canary_scope(canary_id: str) -> str:
    return f"canary:{canary_id}"


def step_scope(canary_id: str, step: int) -> str:
    return f"canary:{canary_id}:step:{step}"


# ----- checks -----

def check_plan(steps_bps, step_interval_s: float, min_requests_per_step: int, thresholds: Thresholds,
               field: str = "canary") -> tuple[int, ...]:
    """The steps, checked with the rest of the plan; InvalidArgument names the field."""
    steps = tuple(steps_bps)
    if not 1 <= len(steps) <= MAX_STEPS:
        raise InvalidArgument(f"{field}.steps_bps", f"must hold 1 to {MAX_STEPS} steps, got {len(steps)}",
                              reason=ErrorReason.INVALID_STEPS)
    for index, (low, high) in enumerate(zip((0,) + steps, steps)):
        if not low < high <= BUCKETS:
            raise InvalidArgument(f"{field}.steps_bps[{index}]", "steps must increase strictly within (0, 10000], "
                                                                  f"got {high} after {low}",
                                  reason=ErrorReason.INVALID_STEPS)
    if not MIN_STEP_INTERVAL_S <= step_interval_s <= MAX_STEP_INTERVAL_S:
        raise InvalidArgument(f"{field}.step_interval", f"must be {MIN_STEP_INTERVAL_S:g} s to 7 days",
                              reason=ErrorReason.INVALID_STEPS)
    if not 1 <= min_requests_per_step <= MAX_MIN_REQUESTS:
        raise InvalidArgument(f"{field}.min_requests_per_step", f"must be 1 to {MAX_MIN_REQUESTS}",
                              reason=ErrorReason.INVALID_STEPS)
    increase, ratio = thresholds.max_error_rate_increase, thresholds.max_p99_latency_ratio
    if not (math.isfinite(increase) and 0 <= increase < 1):
        raise InvalidArgument(f"{field}.thresholds.max_error_rate_increase", "must be at least 0 and below 1",
                              reason=ErrorReason.INVALID_THRESHOLDS)
    if not (math.isfinite(ratio) and (ratio == 0 or 1 <= ratio <= 1000)):
        raise InvalidArgument(f"{field}.thresholds.max_p99_latency_ratio", "must be 0 (no check) or 1 to 1000",
                              reason=ErrorReason.INVALID_THRESHOLDS)
    return steps


def check_version(value: str, field: str) -> str:
    if not VERSION.fullmatch(value):
        raise InvalidArgument(field, "must be a registry version number")
    return value


# ----- decisions -----

class Action(enum.Enum):
    HOLD = "hold"
    ADVANCE = "advance"
    FINISH = "finish"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def breach(stable: SideStats, canary: SideStats, thresholds: Thresholds,
           alpha: float = DEFAULT_CANARY_ALPHA) -> str:
    """Why the canary is worse than allowed, or "" while it is not (or too little is known)."""
    check = canary_check(stable.request_count, stable.error_count, canary.request_count, canary.error_count,
                         max_increase=thresholds.max_error_rate_increase, alpha=alpha,
                         min_requests=MIN_REQUESTS_TO_JUDGE)
    if check.breached:
        return (f"error rate {check.canary_error_rate:.4f} against stable {check.stable_error_rate:.4f} exceeds the "
                f"allowed increase of {thresholds.max_error_rate_increase:g} (always-valid p = {check.p_value:.2g} "
                f"over {canary.request_count} canary and {stable.request_count} stable requests)")
    ratio = thresholds.max_p99_latency_ratio
    enough = min(stable.request_count, canary.request_count) >= MIN_REQUESTS_TO_JUDGE
    if ratio and enough and stable.latency_p99_ms > 0 and canary.latency_p99_ms > ratio * stable.latency_p99_ms:
        return (f"p99 latency {canary.latency_p99_ms:.1f} ms exceeds {ratio:g} times stable's "
                f"{stable.latency_p99_ms:.1f} ms (over {canary.request_count} canary and {stable.request_count} "
                "stable requests)")
    return ""


_HELD = {CanaryState.PAUSED: "paused", CanaryState.AWAITING_PROMOTION: "waiting for PromoteCanary"}


def decide(canary: Canary, stable: SideStats, candidate: SideStats, step_candidate: SideStats, now: datetime,
           alpha: float = DEFAULT_CANARY_ALPHA) -> Decision:
    """What to do now: `stable` and `candidate` are the cumulative figures, `step_candidate`
    the canary side's figures on the current step."""
    if canary.state in (CanaryState.RUNNING, CanaryState.PAUSED):
        why = breach(stable, candidate, canary.thresholds, alpha)
        if why:
            return Decision(Action.ROLLBACK, why)
    if canary.state is not CanaryState.RUNNING:
        return Decision(Action.HOLD, _HELD.get(canary.state, ""))
    step = canary.current_step + 1
    of = f"step {step} of {len(canary.steps_bps)} ({canary.current_weight_bps} bps)"
    due = (canary.step_start_time or now) + timedelta(seconds=canary.step_interval_s)
    if now < due:
        return Decision(Action.HOLD, f"{of}: holding until {due.isoformat(timespec='seconds')}")
    if step_candidate.request_count < canary.min_requests_per_step:
        return Decision(Action.HOLD, f"{of}: waiting for traffic, {step_candidate.request_count} of "
                                     f"{canary.min_requests_per_step} canary requests on this step")
    if step < len(canary.steps_bps):
        return Decision(Action.ADVANCE, f"{of} passed: {step_candidate.request_count} canary requests, error rate "
                                        f"{candidate.error_rate:.4f} against stable {stable.error_rate:.4f}")
    return Decision(Action.FINISH, f"last step passed: {candidate.request_count} canary requests, error rate "
                                   f"{candidate.error_rate:.4f} against stable {stable.error_rate:.4f}")

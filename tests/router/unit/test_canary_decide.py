"""canary.decide and the plan's checks: pure decisions on made-up measurements."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from ml_serving_server.errors import InvalidArgument
from ml_serving_server.services.router.domain.canary import (
    Action,
    Canary,
    CanaryState,
    SideStats,
    Thresholds,
    breach,
    check_plan,
    decide,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
QUIET = SideStats(0, 0)


def make(**changes) -> Canary:
    base = Canary("c1", "m", "1", "2", (1000, 5000, 10000), 60.0, 100, Thresholds(0.01), "salt",
                  step_start_time=T0)
    return base.with_changes(**changes)


def test_within_the_interval_it_holds_and_says_until_when():
    decision = decide(make(), SideStats(900, 0), SideStats(100, 0), SideStats(100, 0), T0 + timedelta(seconds=30))
    assert decision.action is Action.HOLD and "step 1 of 3 (1000 bps)" in decision.reason


def test_too_little_traffic_holds_even_after_the_interval():
    decision = decide(make(), SideStats(500, 0), SideStats(40, 0), SideStats(40, 0), T0 + timedelta(minutes=5))
    assert decision.action is Action.HOLD and "waiting for traffic, 40 of 100" in decision.reason


def test_enough_healthy_traffic_after_the_interval_advances_then_finishes():
    later = T0 + timedelta(seconds=61)
    assert decide(make(), SideStats(900, 1), SideStats(100, 0), SideStats(100, 0), later).action is Action.ADVANCE
    assert decide(make(current_step=2), SideStats(900, 1), SideStats(300, 0), SideStats(100, 0),
                  later).action is Action.FINISH


def test_a_clear_breach_rolls_back_at_once_whatever_the_step_clock_says():
    decision = decide(make(), SideStats(900, 0), SideStats(100, 30), SideStats(100, 30), T0)
    assert decision.action is Action.ROLLBACK and "error rate 0.3000" in decision.reason


def test_a_breach_still_rolls_back_a_paused_canary_but_a_paused_one_never_advances():
    assert decide(make(state=CanaryState.PAUSED), SideStats(900, 0), SideStats(100, 30), SideStats(100, 30),
                  T0).action is Action.ROLLBACK
    held = decide(make(state=CanaryState.PAUSED), SideStats(900, 0), SideStats(100, 0), SideStats(100, 0),
                  T0 + timedelta(hours=1))
    assert (held.action, held.reason) == (Action.HOLD, "paused")


def test_noise_within_the_threshold_is_no_breach():
    assert breach(SideStats(5000, 50), SideStats(1000, 12), Thresholds(0.01)) == ""


def test_too_few_requests_are_never_judged():
    assert breach(SideStats(40, 0), SideStats(40, 40), Thresholds(0.0)) == ""


def test_latency_over_the_ratio_is_a_breach_once_both_sides_have_enough():
    slow = SideStats(200, 0, latency_p99_ms=90.0)
    assert "p99 latency" in breach(SideStats(800, 0, latency_p99_ms=30.0), slow, Thresholds(0.01, 2.0))
    assert breach(SideStats(800, 0, latency_p99_ms=30.0), slow, Thresholds(0.01, 0.0)) == ""  # no latency check
    assert breach(SideStats(800, 0, latency_p99_ms=30.0), SideStats(10, 0, latency_p99_ms=90.0),
                  Thresholds(0.01, 2.0)) == ""


def test_weights_follow_the_state():
    assert make(current_step=1).current_weight_bps == 5000
    assert make(state=CanaryState.ROLLED_BACK).current_weight_bps == 0
    assert make(state=CanaryState.PROMOTED).current_weight_bps == 10000


@pytest.mark.parametrize("steps, interval, minimum, thresholds, field", [
    ((), 60, 10, Thresholds(0.01), "canary.steps_bps"),
    ((5000, 5000), 60, 10, Thresholds(0.01), "canary.steps_bps[1]"),
    ((0, 5000), 60, 10, Thresholds(0.01), "canary.steps_bps[0]"),
    ((5000, 10001), 60, 10, Thresholds(0.01), "canary.steps_bps[1]"),
    ((5000,), 0.5, 10, Thresholds(0.01), "canary.step_interval"),
    ((5000,), 60, 0, Thresholds(0.01), "canary.min_requests_per_step"),
    ((5000,), 60, 10, Thresholds(-0.1), "canary.thresholds.max_error_rate_increase"),
    ((5000,), 60, 10, Thresholds(float("nan")), "canary.thresholds.max_error_rate_increase"),
    ((5000,), 60, 10, Thresholds(0.01, 0.5), "canary.thresholds.max_p99_latency_ratio"),
])
def test_a_bad_plan_names_its_field(steps, interval, minimum, thresholds, field):
    with pytest.raises(InvalidArgument) as caught:
        check_plan(steps, interval, minimum, thresholds)
    assert caught.value.field == field


def test_a_good_plan_passes():
    assert check_plan([500, 2500, 10000], 30, 200, Thresholds(0.01, 1.5)) == (500, 2500, 10000)


def test_a_canary_waiting_for_promotion_holds_and_keeps_saying_why():
    decision = decide(make(state=CanaryState.AWAITING_PROMOTION, current_step=2), SideStats(900, 0),
                      SideStats(300, 0), SideStats(100, 0), T0 + timedelta(hours=1))
    assert (decision.action, decision.reason) == (Action.HOLD, "waiting for PromoteCanary")

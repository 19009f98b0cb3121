"""The monitor's rules, stores in memory: recorded values checked whole, aggregations and the PSI,
rule checks, and rounds that fire (after for_duration), update, resolve (with the same
hysteresis), notify once, and queue one retraining run per model however many alerts fire; drift
of a feature's source values against what the model's latest retraining run trained on."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from datetime import timedelta

import pytest

from ml_serving_server.errors import AlreadyExists, InvalidArgument
from ml_serving_server.services.pipeline.domain.alerting import aggregate, psi
from ml_serving_server.services.pipeline.domain.monitor import Monitor
from ml_serving_server.services.pipeline.domain.monitoring import (
    Aggregation,
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
from ml_serving_server.services.pipeline.domain.retraining import Trigger
from ml_serving_server.services.pipeline.domain.runs import RetrainingRuns
from ml_serving_server.services.pipeline.domain.schema import FeatureSchema

from ..fakes import T0, FakeAlertStore, FakeDistributions, FakeMetricStore, FakeNotifier, FakeRunStore, FakeSource, view
from .test_retraining import Clock, Trainer


def make():
    clock = Clock()
    metrics, alerts, run_store, notifier = FakeMetricStore(), FakeAlertStore(), FakeRunStore(), FakeNotifier()
    runs = RetrainingRuns(run_store, {"rec": Trainer()}, max_attempts=2, worker_lost_after=timedelta(seconds=10),
                          clock=clock)
    return Monitor(metrics, alerts, runs, notifier, clock=clock), clock, metrics, alerts, run_store, notifier


def rule(condition=None, **fields) -> AlertRule:
    return AlertRule(rule_id="", name=fields.pop("name", "auc-low"), model_name="rec",
                     metric_name=fields.pop("metric_name", "auc"),
                     condition=condition or Threshold(Comparison.LESS_THAN, 0.7), create_time=T0, update_time=T0,
                     **fields)


async def rec(monitor, values, **options):
    """Monitor.record of values written as dicts (the fields of MetricValue)."""
    return await monitor.record([MetricValue(v.get("model_name", ""), v.get("metric_name", ""), v.get("value"),
                                             v.get("time"), v.get("model_version", ""), v.get("labels") or {},
                                             v.get("event_id", "")) for v in values], **options)


async def record(monitor, clock, value, n=1, metric="auc", **extra):
    await rec(monitor, [{"model_name": "rec", "metric_name": metric, "value": value, "time": clock.now, **extra}
                          for _ in range(n)], batch=True)


# ----- arithmetic -----

def test_aggregations():
    values = [float(v) for v in range(1, 101)]
    assert aggregate(values, Aggregation.MEAN) == 50.5 and aggregate(values, Aggregation.SUM) == 5050
    assert aggregate(values, Aggregation.COUNT) == 100 and aggregate([], Aggregation.COUNT) == 0
    assert aggregate(values, Aggregation.MIN) == 1 and aggregate(values, Aggregation.MAX) == 100
    assert aggregate(values, Aggregation.P50) == 50.5 and 95 <= aggregate(values, Aggregation.P95) <= 96
    assert math.isnan(aggregate([], Aggregation.MEAN))


def test_psi_is_near_zero_for_one_distribution_and_large_for_a_shifted_one():
    rng = random.Random(3)
    reference = [rng.gauss(0, 1) for _ in range(5000)]
    same = [rng.gauss(0, 1) for _ in range(5000)]
    shifted = [rng.gauss(1, 1) for _ in range(5000)]
    assert psi(reference, same, 10) < 0.02
    assert psi(reference, shifted, 10) > 0.25
    assert psi([1.0] * 100, [1.0] * 100, 10) == pytest.approx(0.0)  # one value only: no bins to differ


# ----- values -----

async def test_a_batch_is_checked_whole_and_an_offending_value_named():
    monitor, clock, metrics, *_ = make()
    good = {"model_name": "rec", "metric_name": "auc", "value": 0.8}
    for bad, field, reason in (({"value": math.nan}, "value", "INVALID_METRIC_VALUE"),
                               ({"value": math.inf}, "value", "INVALID_METRIC_VALUE"),
                               ({"value": True}, "value", "INVALID_METRIC_VALUE"),
                               ({"metric_name": ""}, "metric_name", "INVALID_FIELD"),
                               ({"labels": {f"k{i}": "v" for i in range(17)}}, "labels", "INVALID_FIELD"),
                               ({"time": clock.now + timedelta(hours=1)}, "time", "INVALID_FIELD")):
        with pytest.raises(InvalidArgument) as caught:
            await rec(monitor, [good, good, {**good, **bad}], batch=True)
        assert (caught.value.field, caught.value.reason.name) == (f"metrics[2].{field}", reason)
        assert caught.value.metadata["index"] == "2"
    assert not metrics.values_
    with pytest.raises(InvalidArgument, match="metrics"):
        await rec(monitor, [], batch=True)


async def test_event_ids_make_recording_idempotent():
    monitor, clock, metrics, *_ = make()
    value = {"model_name": "rec", "metric_name": "auc", "value": 0.8, "event_id": "e1"}
    assert await rec(monitor, [value]) == (1, 0)
    assert await rec(monitor, [value, {**value, "event_id": "e2"}], batch=True) == (1, 1)


# ----- rules -----

@pytest.mark.parametrize("fields, field, reason", [
    ({"name": "bad name!"}, "rule.name", "INVALID_FIELD"),
    ({"condition": Threshold(Comparison.LESS_THAN, math.nan)}, "rule.threshold.threshold", "INVALID_CONDITION"),
    ({"condition": Degradation(timedelta(0), 0.1, Direction.DECREASE)}, "rule.degradation.baseline_window",
     "INVALID_CONDITION"),
    ({"condition": Drift(timedelta(days=1), 1, 0.2)}, "rule.drift.bins", "INVALID_CONDITION"),
    ({"window": timedelta(days=31)}, "rule.window", "INVALID_FIELD"),
    ({"webhook_url": "ftp://example.org/hook"}, "rule.webhook_url", "INVALID_WEBHOOK_URL"),
    ({"webhook_url": "http://user:pw@example.org/hook"}, "rule.webhook_url", "INVALID_WEBHOOK_URL"),
    ({"trigger_retraining": True, "retraining_parameters": {"epochs": 0}},
     "rule.retraining_parameters.epochs", "INVALID_FIELD"),
])
async def test_a_bad_rule_names_its_field(fields, field, reason):
    monitor, *_ = make()
    with pytest.raises(InvalidArgument) as caught:
        await monitor.create_rule(rule(**fields))
    assert (caught.value.field, caught.value.reason.name) == (field, reason)


async def test_rule_names_are_unique():
    monitor, *_ = make()
    await monitor.create_rule(rule())
    with pytest.raises(AlreadyExists):
        await monitor.create_rule(rule())


# ----- rounds -----

async def test_a_threshold_fires_after_its_for_duration_and_resolves_with_the_same_hysteresis():
    monitor, clock, metrics, alerts, runs, notifier = make()
    created = await monitor.create_rule(rule(for_duration=timedelta(minutes=2), window=timedelta(seconds=30)))
    await record(monitor, clock, 0.6)
    assert await monitor.evaluate_round() == 0 and not alerts.alerts  # holds, not yet long enough
    clock.now += timedelta(minutes=2)
    await record(monitor, clock, 0.6)
    assert await monitor.evaluate_round() == 1
    [alert] = alerts.alerts
    assert alert.state is AlertState.FIRING and alert.value == 0.6 and alert.reference_value == 0.7
    assert alert.severity is Severity.WARNING and alert.rule_id == created.rule_id and "0.6" in alert.message
    clock.now += timedelta(minutes=1)
    await record(monitor, clock, 0.55)
    assert await monitor.evaluate_round() == 0 and alerts.alerts[0].value == 0.55  # still firing: updated
    clock.now += timedelta(minutes=1)
    await record(monitor, clock, 0.9)
    assert await monitor.evaluate_round() == 0  # healthy, not yet for long enough
    clock.now += timedelta(minutes=2)
    await record(monitor, clock, 0.9)
    assert await monitor.evaluate_round() == 1
    assert alerts.alerts[0].state is AlertState.RESOLVED and alerts.alerts[0].resolve_time == clock.now
    assert [state for _, _, state in notifier.sent] == [AlertState.FIRING, AlertState.RESOLVED]


async def test_a_gap_in_the_data_neither_fires_nor_resolves():
    monitor, clock, metrics, alerts, *_ = make()
    await monitor.create_rule(rule(min_samples=3))
    await record(monitor, clock, 0.1, n=2)
    assert await monitor.evaluate_round() == 0 and not alerts.alerts
    await record(monitor, clock, 0.1)
    assert await monitor.evaluate_round() == 1
    clock.now += timedelta(hours=1)  # no values at all
    assert await monitor.evaluate_round() == 0 and alerts.alerts[0].state is AlertState.FIRING


async def test_a_relative_degradation_compares_with_the_baseline_window():
    monitor, clock, metrics, alerts, *_ = make()
    await monitor.create_rule(rule(Degradation(timedelta(hours=1), 0.05, Direction.INCREASE), name="latency",
                                   metric_name="latency_ms", window=timedelta(seconds=30)))
    for minute in range(60):
        clock.now = T0 + timedelta(minutes=minute)
        await record(monitor, clock, 100.0, metric="latency_ms")
    clock.now = T0 + timedelta(minutes=61)
    await record(monitor, clock, 104.0, metric="latency_ms")
    assert await monitor.evaluate_round() == 0  # 4% worse: within 5%
    await record(monitor, clock, 130.0, metric="latency_ms")
    assert await monitor.evaluate_round() == 1
    [alert] = alerts.alerts
    assert alert.reference_value == 100.0 and alert.value == 117.0 and "17.00%" in alert.message


async def test_a_firing_rule_that_retrains_queues_one_run_and_records_the_alert():
    monitor, clock, metrics, alerts, runs, notifier = make()
    await monitor.create_rule(rule(trigger_retraining=True, retraining_parameters={"epochs": 2}))
    await monitor.create_rule(rule(name="auc-very-low", condition=Threshold(Comparison.LESS_THAN, 0.65),
                                   trigger_retraining=True))
    await record(monitor, clock, 0.5)
    assert await monitor.evaluate_round() == 2
    [run] = runs.runs.values()  # two alerts, one run: one per model queued or running
    first = next(a for a in alerts.alerts if a.rule_name == "auc-low")
    assert run.trigger is Trigger.ALERT and run.alert_id == first.alert_id and run.parameters == {"epochs": 2}
    assert first.retraining_run_id == run.run_id and "auc-low" in run.reason


async def test_deleting_a_rule_resolves_its_alert_and_listing_shows_firing_by_default():
    monitor, clock, metrics, alerts, *_ = make()
    created = await monitor.create_rule(rule())
    await record(monitor, clock, 0.1)
    await monitor.evaluate_round()
    [firing], _ = await monitor.list_alerts()
    assert firing.state is AlertState.FIRING
    await monitor.delete_rule(created.rule_id)
    assert (await monitor.list_alerts())[0] == []
    [resolved], _ = await monitor.list_alerts(states=[AlertState.RESOLVED])
    assert resolved.alert_id == firing.alert_id
    assert (await monitor.list_alerts(min_severity=Severity.CRITICAL, states=[AlertState.RESOLVED]))[0] == []


async def test_a_drift_rule_fires_on_a_shifted_distribution_only():
    monitor, clock, metrics, alerts, *_ = make()
    await monitor.create_rule(rule(Drift(timedelta(hours=1), 10, 0.2), name="score-drift",
                                   metric_name="score", window=timedelta(minutes=10), min_samples=200))
    rng = random.Random(5)
    for minute in range(70):
        clock.now = T0 + timedelta(minutes=minute)
        await rec(monitor, [{"model_name": "rec", "metric_name": "score", "value": rng.gauss(0, 1),
                               "time": clock.now} for _ in range(40)], batch=True)
    assert await monitor.evaluate_round() == 0  # the same distribution
    for second in range(400):
        await rec(monitor, [{"model_name": "rec", "metric_name": "score", "value": rng.gauss(1.5, 1),
                               "time": clock.now - timedelta(seconds=second % 300)}], batch=True)
    assert await monitor.evaluate_round() == 1
    assert alerts.alerts[0].value > 0.2


async def test_changing_what_a_rule_watches_resolves_its_alert_but_not_its_wording():
    monitor, clock, metrics, alerts, runs, notifier = make()
    created = await monitor.create_rule(rule())
    await record(monitor, clock, 0.1)
    await monitor.evaluate_round()
    await monitor.update_rule(created.rule_id, lambda r: replace(r, description="reworded", webhook_url=""))
    assert alerts.alerts[0].state is AlertState.FIRING
    await monitor.update_rule(created.rule_id, lambda r: replace(r, condition=Threshold(Comparison.LESS_THAN, 0.05)))
    assert alerts.alerts[0].state is AlertState.RESOLVED and "rule changed" in alerts.alerts[0].message
    assert notifier.sent[-1][2] is AlertState.RESOLVED


# ----- drift against training -----

def training_drift(feature="scores:score", **fields) -> AlertRule:
    return rule(Drift(timedelta(days=7), 10, 0.2, DriftReference.TRAINING, feature), name="score-drift",
                metric_name="score", window=timedelta(minutes=10), min_samples=200, **fields)


def make_with_features():
    """A monitor watching the features of the fake view `scores` (score: float, tags: string list)."""
    clock, source, distributions = Clock(), FakeSource(), FakeDistributions()
    metrics, alerts, notifier = FakeMetricStore(), FakeAlertStore(), FakeNotifier()
    runs = RetrainingRuns(FakeRunStore(), {"rec": Trainer()}, max_attempts=2, worker_lost_after=timedelta(seconds=10),
                          clock=clock)
    monitor = Monitor(metrics, alerts, runs, notifier, schema=FeatureSchema((view(),)), source=source,
                      distributions=distributions, clock=clock)
    return monitor, clock, source, distributions, alerts


def put_scores(source, clock, rng, mean, n, first_key, age=timedelta(0)):
    for key in range(first_key, first_key + n):
        source.put("scores", key, clock.now - age - timedelta(seconds=key % 300), score=rng.gauss(mean, 1), tags=[])


async def test_a_drift_against_training_fires_on_shifted_feature_values_only():
    monitor, clock, source, distributions, alerts = make_with_features()
    rng = random.Random(11)
    await distributions.save("rec", "3", "run-1", {"scores:score": [rng.gauss(0, 1) for _ in range(5000)]}, T0)
    await distributions.save("other", "1", "run-2", {"scores:score": [rng.gauss(1.5, 1) for _ in range(5000)]}, T0)
    await monitor.create_rule(training_drift())
    put_scores(source, clock, rng, 0, 400, first_key=0)
    put_scores(source, clock, rng, 3, 400, first_key=1000, age=timedelta(hours=1))  # before the window
    assert await monitor.evaluate_round() == 0 and not alerts.alerts  # as trained on
    clock.now += timedelta(minutes=11)  # the unshifted rows leave the window
    put_scores(source, clock, rng, 1.5, 400, first_key=2000)
    assert await monitor.evaluate_round() == 1
    [alert] = alerts.alerts
    assert alert.state is AlertState.FIRING and alert.value > 0.2 and alert.reference_value == 0.2
    assert "PSI of scores:score" in alert.message and "latest retraining run" in alert.message


async def test_without_a_training_sample_a_drift_against_training_changes_nothing():
    monitor, clock, source, distributions, alerts = make_with_features()
    rng = random.Random(12)
    created = await monitor.create_rule(training_drift())
    put_scores(source, clock, rng, 3, 400, first_key=0)
    assert await monitor.evaluate_round() == 0 and not alerts.alerts  # no run kept a sample: too few values
    assert (await alerts.rule_state(created.rule_id)).pending_since is None
    await distributions.save("rec", "1", "run-1", {"scores:score": [rng.gauss(0, 1) for _ in range(150)]}, T0)
    assert await monitor.evaluate_round() == 0  # min_samples applies to the training sample too
    await distributions.save("rec", "2", "run-2", {"scores:score": [rng.gauss(0, 1) for _ in range(5000)]}, T0)
    source.down = True
    assert await monitor.evaluate_round() == 0  # the source down: not evaluated, the next round looks again
    source.down = False
    assert await monitor.evaluate_round() == 1


@pytest.mark.parametrize("condition, words", [
    (Drift(timedelta(days=7), 10, 0.2, DriftReference.TRAINING, "nope:score"), "no feature view named 'nope'"),
    (Drift(timedelta(days=7), 10, 0.2, DriftReference.TRAINING, "scores:nope"), "has no feature 'nope'"),
    (Drift(timedelta(days=7), 10, 0.2, DriftReference.TRAINING, "scores:tags"), "string_list feature"),
    (Drift(timedelta(days=7), 10, 0.2, DriftReference.TRAINING, "score"), 'must be "view:feature"'),
    (Drift(timedelta(days=7), 10, 0.2, DriftReference.TRAINING, ""), 'must be "view:feature"'),
    (Drift(timedelta(days=7), 10, 0.2, DriftReference.WINDOW, "scores:score"), "only for a drift against training"),
], ids=["unknown view", "unknown feature", "list feature", "no view", "empty", "window with a feature"])
async def test_a_drift_feature_is_checked_naming_it(condition, words):
    monitor, *_ = make_with_features()
    with pytest.raises(InvalidArgument) as caught:
        await monitor.create_rule(rule(condition))
    assert (caught.value.field, caught.value.reason.name) == ("rule.drift.feature", "INVALID_CONDITION")
    assert words in caught.value.message


async def test_a_drift_against_training_ignores_the_reference_window_and_needs_the_feature_store():
    monitor, *_ = make_with_features()
    created = await monitor.create_rule(rule(Drift(timedelta(0), 10, 0.2, DriftReference.TRAINING, "scores:score")))
    assert created.condition.reference is DriftReference.TRAINING
    bare, *_ = make()  # a monitor given no feature schema watches no feature
    with pytest.raises(InvalidArgument) as caught:
        await bare.create_rule(rule(Drift(timedelta(days=7), 10, 0.2, DriftReference.TRAINING, "scores:score")))
    assert caught.value.field == "rule.drift.feature"


async def test_retention_forgets_values_older_than_it_keeps():
    monitor, clock, metrics, *_ = make()
    await record(monitor, clock, 0.5, n=3)
    clock.now += timedelta(days=31)
    await record(monitor, clock, 0.6, n=2)
    assert await monitor.forget_before(timedelta(days=30)) == 3
    assert [v.value for v in metrics.values_] == [0.6, 0.6]


async def test_replicas_resolving_one_alert_at_once_notify_once():
    monitor, clock, metrics, alerts, runs, notifier = make()
    created = await monitor.create_rule(rule())
    await record(monitor, clock, 0.1)
    await monitor.evaluate_round()
    clock.now += timedelta(minutes=10)
    await record(monitor, clock, 0.9)
    stale = await alerts.firing_alert(created.rule_id)  # another replica read it as firing
    assert await monitor.evaluate_round() == 1
    assert not await alerts.update_alert(stale)  # its write comes too late: a resolved alert is final
    assert alerts.alerts[0].state is AlertState.RESOLVED
    assert [state for _, _, state in notifier.sent] == [AlertState.FIRING, AlertState.RESOLVED]

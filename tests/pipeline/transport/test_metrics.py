"""The Pipeline's domain metrics through a real server, PostgreSQL and Redis: feature values read
by source, a view's materialisation lag, retraining runs ended and queued (read from PostgreSQL
by the server's periodic task), and alert transitions."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from google.protobuf import duration_pb2
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb
from prometheus_client import REGISTRY

from ml_serving_server.runtime import metric_labels
from ml_serving_tools.devauth import mint_token

from .conftest import pipeline_server, stub_to

MODEL = "recommendation-model"  # the trainer PIPELINE_TRAINERS names by default


@pytest.fixture(autouse=True)
def fresh_label_bounds(monkeypatch):
    """The session's other tests may have used up the names a label admits: these start afresh."""
    monkeypatch.setattr(metric_labels, "BOUNDS", metric_labels.LabelBounds())


@pytest.fixture(scope="module")
async def stub(features_dir, redis_url, key_prefix, database_url, dev_keys):
    """A server of its own (an empty online store), reading its gauges five times a second."""
    async with pipeline_server(features_dir, redis_url, f"{key_prefix}:{uuid.uuid4().hex[:6]}", database_url,
                               dev_keys, monitor_evaluation_seconds=0.2) as server, \
            stub_to(server, mint_token(dev_keys, subject="metrics-tests")) as stub:
        yield stub


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def eventually(check, timeout_s: float = 10.0):
    """Wait for `check()` to hold (a gauge read by the periodic task); its last answer."""
    deadline = time.monotonic() + timeout_s
    while not (answer := check()):
        if time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.05)
    return answer


async def test_feature_values_read_count_by_source(stub):
    sources = ("online_store", "read_through", "not_found")
    before = {s: value("mlserving_pipeline_feature_reads_total", view="profile", source=s) for s in sources}
    for _ in range(2):  # the second read finds user 7 in the online store; user 99999 nowhere, twice
        await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="profile", entity_ids=["7", "99999"]))
    await stub.GetFeatures(pb.GetFeaturesRequest(feature_view="profile", entity_ids=["7"], feature_names=["score"]))
    delta = {s: value("mlserving_pipeline_feature_reads_total", view="profile", source=s) - before[s] for s in sources}
    assert delta == {"online_store": 5 + 1, "read_through": 5, "not_found": 10}


async def test_materialization_lag_follows_the_last_materialisation(stub):
    (job,) = (await stub.MaterializeFeatures(pb.MaterializeFeaturesRequest(
        feature_views=["handles"], mode=pb.MATERIALIZATION_MODE_FULL, wait=True))).jobs
    assert job.state == pb.JOB_STATE_SUCCEEDED

    def lag() -> float | None:
        return REGISTRY.get_sample_value("mlserving_pipeline_materialization_lag_seconds", {"view": "handles"})

    assert await eventually(lambda: lag() is not None and lag() < 5.0), f"lag {lag()}"
    await asyncio.sleep(0.5)
    assert lag() >= 0.4  # it grows between materialisations, read at scrape time


async def test_retraining_runs_ended_and_queued(stub):
    def queued() -> float:
        return value("mlserving_pipeline_retraining_queue_depth")

    def cancelled() -> tuple[float, float]:
        return (value("mlserving_pipeline_retraining_runs_total", state="cancelled"),
                value("mlserving_pipeline_retraining_run_seconds_count", state="cancelled"))

    await eventually(lambda: REGISTRY.get_sample_value("mlserving_pipeline_retraining_queue_depth") is not None)
    depth, ended = queued(), cancelled()
    seconds_before = value("mlserving_pipeline_retraining_run_seconds_sum", state="cancelled")
    started = time.monotonic()
    run = (await stub.TriggerRetraining(pb.TriggerRetrainingRequest(model_name=MODEL, reason="metrics"))).run
    assert await eventually(lambda: queued() == depth + 1), queued()
    await stub.CancelRetrainingRun(pb.CancelRetrainingRunRequest(run_id=run.run_id))
    assert await eventually(lambda: cancelled() == (ended[0] + 1, ended[1] + 1)), cancelled()
    assert queued() == depth
    # its duration, queued to cancelled, lies within the test's own time (a loaded machine can
    # take seconds between the two calls, so no tighter bucket is asserted)
    took = value("mlserving_pipeline_retraining_run_seconds_sum", state="cancelled") - seconds_before
    assert 0 <= took <= time.monotonic() - started + 1.0, took


def seconds(n: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(n * 1e9))
    return out


async def test_alert_transitions_count_once_each(stub):
    metric_name = f"metrics_{uuid.uuid4().hex[:8]}"

    def transitions() -> tuple[float, float]:  # severity info: no other test's rule has it
        return (value("mlserving_pipeline_alert_transitions_total", state="firing", severity="info"),
                value("mlserving_pipeline_alert_transitions_total", state="resolved", severity="info"))

    before = transitions()
    rule = (await stub.CreateAlertRule(pb.CreateAlertRuleRequest(rule=pb.AlertRule(
        name=f"metrics-{uuid.uuid4().hex[:6]}", model_name=MODEL, metric_name=metric_name, window=seconds(1.0),
        threshold=pb.ThresholdCondition(comparison=pb.COMPARISON_LESS_THAN, threshold=0.7), enabled=True,
        severity=pb.ALERT_SEVERITY_INFO)))).rule
    try:
        for value_now, expected in ((0.5, (before[0] + 1, before[1])), (0.95, (before[0] + 1, before[1] + 1))):
            deadline = time.monotonic() + 10
            while transitions() != expected and time.monotonic() < deadline:
                await stub.RecordMetric(pb.RecordMetricRequest(model_name=MODEL, metric_name=metric_name,
                                                               value=value_now))
                await asyncio.sleep(0.1)
            assert transitions() == expected
        await asyncio.sleep(0.5)  # rounds after the resolution count nothing more
        assert transitions() == (before[0] + 1, before[1] + 1)
    finally:
        await stub.DeleteAlertRule(pb.DeleteAlertRuleRequest(rule_id=rule.rule_id))

"""The model monitor over gRPC against a real PostgreSQL, with tokens checked: recording (single,
batched, idempotent, a bad batch refused whole), alert rules kept, alerts firing and resolving
through the server's own evaluation loop, the retraining run a firing rule queues, webhooks
received by a real HTTP server on loopback, and PostgreSQL down."""

from __future__ import annotations

import asyncio
import http.server
import json
import math
import threading
import uuid
from urllib.parse import urlsplit

import grpc
import pytest
from google.protobuf import duration_pb2, field_mask_pb2
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb

from ml_serving_tools.devauth import mint_token

from ...registry.faults import CuttableProxy
from ...support import error_info
from .conftest import pipeline_server, stub_to
from .test_dependencies_down import _via, failed

MODEL = "recommendation-model"


class Receiver:
    """An HTTP server on loopback that keeps the JSON bodies POSTed to it."""

    def __init__(self):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
async def monitor_stub(features_dir, redis_url, key_prefix, database_url, dev_keys):
    """A server evaluating its rules five times a second."""
    async with pipeline_server(features_dir, redis_url, f"{key_prefix}:{uuid.uuid4().hex[:6]}", database_url,
                               dev_keys, monitor_evaluation_seconds=0.2) as server, \
            stub_to(server, mint_token(dev_keys, subject="monitor-tests")) as stub:
        yield stub


def metric(value, name=None, **fields) -> pb.RecordMetricRequest:
    return pb.RecordMetricRequest(model_name=fields.pop("model_name", MODEL), metric_name=name or "auc",
                                  value=value, **fields)


def seconds(n: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(n * 1e9))
    return out


async def wait_for(check, timeout=10.0):
    """`check()`'s first truthy answer, looking every 0.1 s for at most `timeout` seconds."""
    for _ in range(int(timeout / 0.1)):
        answer = await check()
        if answer:
            return answer
        await asyncio.sleep(0.1)
    raise AssertionError("not within the time allowed")


async def test_recording_is_idempotent_by_event_id(monitor_stub):
    event = uuid.uuid4().hex
    first = await monitor_stub.RecordMetric(metric(0.8, event_id=event))
    again = await monitor_stub.RecordMetric(metric(0.8, event_id=event))
    assert not first.duplicate and again.duplicate
    batch = await monitor_stub.BatchRecordMetrics(pb.BatchRecordMetricsRequest(
        metrics=[metric(0.7, event_id=event), metric(0.7, event_id=uuid.uuid4().hex), metric(0.7)]))
    assert (batch.applied_count, batch.duplicate_count) == (2, 1)


async def test_a_bad_batch_is_refused_whole_naming_the_value(monitor_stub):
    ids = [uuid.uuid4().hex for _ in range(3)]
    bad = [metric(0.5, event_id=ids[0]), metric(0.5, event_id=ids[1]), metric(math.nan, event_id=ids[2])]
    error = await failed(monitor_stub.BatchRecordMetrics(pb.BatchRecordMetricsRequest(metrics=bad)))
    info = error_info(error)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.reason, info.metadata["field"], info.metadata["index"]) == (
        "INVALID_METRIC_VALUE", "metrics[2].value", "2")
    fixed = await monitor_stub.BatchRecordMetrics(pb.BatchRecordMetricsRequest(
        metrics=[*bad[:2], metric(0.5, event_id=ids[2])]))
    assert fixed.applied_count == 3  # nothing of the refused batch had been kept
    error = await failed(monitor_stub.BatchRecordMetrics(pb.BatchRecordMetricsRequest(
        metrics=[metric(1.0)] * 10_001)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(error).metadata["field"] == "metrics"


async def test_a_rule_is_created_read_updated_listed_and_deleted(monitor_stub):
    name = f"auc-{uuid.uuid4().hex[:8]}"
    rule = pb.AlertRule(name=name, model_name=MODEL, metric_name="auc", window=seconds(60), enabled=True,
                        threshold=pb.ThresholdCondition(comparison=pb.COMPARISON_LESS_THAN, threshold=0.7))
    created = (await monitor_stub.CreateAlertRule(pb.CreateAlertRuleRequest(rule=rule))).rule
    assert created.rule_id and created.threshold.threshold == 0.7 and created.aggregation == pb.AGGREGATION_MEAN
    assert created.severity == pb.ALERT_SEVERITY_WARNING and created.create_time.seconds > 0
    got = (await monitor_stub.GetAlertRule(pb.GetAlertRuleRequest(rule_id=created.rule_id))).rule
    assert got == created
    error = await failed(monitor_stub.CreateAlertRule(pb.CreateAlertRuleRequest(rule=rule)))
    assert (error.code(), error_info(error).reason) == (grpc.StatusCode.ALREADY_EXISTS, "ALERT_RULE_ALREADY_EXISTS")
    change = pb.AlertRule(rule_id=created.rule_id, degradation=pb.RelativeDegradationCondition(
        baseline_window=seconds(3600), max_relative_change=0.1), severity=pb.ALERT_SEVERITY_CRITICAL)
    updated = (await monitor_stub.UpdateAlertRule(pb.UpdateAlertRuleRequest(
        rule=change, update_mask=field_mask_pb2.FieldMask(paths=["degradation", "severity"])))).rule
    assert updated.WhichOneof("condition") == "degradation" and updated.severity == pb.ALERT_SEVERITY_CRITICAL
    assert updated.name == name and updated.window.seconds == 60  # untouched
    listed = await monitor_stub.ListAlertRules(pb.ListAlertRulesRequest(model_name=MODEL, page_size=1000))
    assert created.rule_id in [r.rule_id for r in listed.rules]
    await monitor_stub.DeleteAlertRule(pb.DeleteAlertRuleRequest(rule_id=created.rule_id))
    error = await failed(monitor_stub.GetAlertRule(pb.GetAlertRuleRequest(rule_id=created.rule_id)))
    assert (error.code(), error_info(error).reason) == (grpc.StatusCode.NOT_FOUND, "ALERT_RULE_NOT_FOUND")


@pytest.mark.parametrize("fields, field, reason", [
    ({}, "rule.condition", "INVALID_CONDITION"),
    ({"threshold": pb.ThresholdCondition(threshold=0.5)}, "rule.threshold.comparison", "INVALID_FIELD"),
    ({"drift": pb.DriftCondition(bins=500)}, "rule.drift.bins", "INVALID_CONDITION"),
    ({"threshold": pb.ThresholdCondition(comparison=pb.COMPARISON_LESS_THAN), "webhook_url": "file:///etc/passwd"},
     "rule.webhook_url", "INVALID_WEBHOOK_URL"),
    ({"threshold": pb.ThresholdCondition(comparison=pb.COMPARISON_LESS_THAN), "name": "no spaces please"},
     "rule.name", "INVALID_FIELD"),
])
async def test_a_bad_rule_is_invalid_naming_its_field(monitor_stub, fields, field, reason):
    rule = pb.AlertRule(**{"name": f"r-{uuid.uuid4().hex[:6]}", "model_name": MODEL, "metric_name": "auc", **fields})
    error = await failed(monitor_stub.CreateAlertRule(pb.CreateAlertRuleRequest(rule=rule)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error_info(error).metadata["field"], error_info(error).reason) == (field, reason)


async def test_an_alert_fires_queues_retraining_notifies_and_resolves(monitor_stub):
    receiver = Receiver()
    metric_name = f"acc_{uuid.uuid4().hex[:8]}"
    try:
        rule = (await monitor_stub.CreateAlertRule(pb.CreateAlertRuleRequest(rule=pb.AlertRule(
            name=f"acc-low-{uuid.uuid4().hex[:6]}", model_name=MODEL, metric_name=metric_name, window=seconds(1.5),
            threshold=pb.ThresholdCondition(comparison=pb.COMPARISON_LESS_THAN, threshold=0.7), enabled=True,
            severity=pb.ALERT_SEVERITY_CRITICAL, webhook_url=receiver.url, trigger_retraining=True)))).rule

        async def firing():
            await monitor_stub.RecordMetric(metric(0.5, metric_name))
            page = await monitor_stub.ListAlerts(pb.ListAlertsRequest(rule_id=rule.rule_id))
            return page.alerts[0] if page.alerts else None

        alert = await wait_for(firing)
        assert (alert.state, alert.severity, alert.reference_value) == (
            pb.ALERT_STATE_FIRING, pb.ALERT_SEVERITY_CRITICAL, 0.7)
        assert alert.value < 0.7 and alert.fire_time.seconds > 0

        async def with_run():
            page = await monitor_stub.ListAlerts(pb.ListAlertsRequest(rule_id=rule.rule_id))
            return page.alerts[0].retraining_run_id if page.alerts else None

        run_id = await wait_for(with_run)
        run = (await monitor_stub.GetRetrainingStatus(pb.GetRetrainingStatusRequest(run_id=run_id))).run
        assert run.trigger == pb.RUN_TRIGGER_ALERT and run.alert_id == alert.alert_id

        async def resolved():
            await monitor_stub.RecordMetric(metric(0.95, metric_name))
            page = await monitor_stub.ListAlerts(pb.ListAlertsRequest(rule_id=rule.rule_id,
                                                                      states=[pb.ALERT_STATE_RESOLVED]))
            return page.alerts[0] if page.alerts else None

        done = await wait_for(resolved)
        assert done.alert_id == alert.alert_id and done.resolve_time.seconds > 0
        assert not (await monitor_stub.ListAlerts(pb.ListAlertsRequest(rule_id=rule.rule_id))).alerts
        await wait_for(lambda: asyncio.sleep(0, result=len(receiver.received) >= 2))
        assert [body["event"] for body in receiver.received] == ["alert.firing", "alert.resolved"]
        assert receiver.received[0]["alert"]["alertId"] == alert.alert_id
        await monitor_stub.CancelRetrainingRun(pb.CancelRetrainingRunRequest(run_id=run_id))  # no worker here
        await monitor_stub.DeleteAlertRule(pb.DeleteAlertRuleRequest(rule_id=rule.rule_id))
    finally:
        receiver.close()


async def test_rules_need_pipeline_admin_and_recording_pipeline_write(server, dev_keys):
    async with stub_to(server, mint_token(dev_keys, ["pipeline.read"], subject="reader")) as reader:
        for call in (reader.RecordMetric(metric(0.5)),
                     reader.CreateAlertRule(pb.CreateAlertRuleRequest(rule=pb.AlertRule(name="x")))):
            assert (await failed(call)).code() == grpc.StatusCode.PERMISSION_DENIED
        assert await reader.ListAlerts(pb.ListAlertsRequest()) is not None


async def test_postgresql_down_is_unavailable(features_dir, redis_url, key_prefix, database_url, dev_keys):
    proxy = await CuttableProxy("127.0.0.1", urlsplit(database_url).port or 5432).start()
    try:
        async with pipeline_server(features_dir, redis_url, f"{key_prefix}:{uuid.uuid4().hex[:6]}",
                                   _via(database_url, proxy.port), dev_keys, database_timeout_seconds=1.0) as server, \
                stub_to(server, mint_token(dev_keys)) as stub:
            proxy.cut_after(0)
            for call in (stub.RecordMetric(metric(0.5)), stub.ListAlerts(pb.ListAlertsRequest())):
                error = await failed(call)
                assert (error.code(), error_info(error).reason) == (grpc.StatusCode.UNAVAILABLE,
                                                                    "STATE_STORE_UNAVAILABLE")
            proxy.revive()
            assert not (await stub.RecordMetric(metric(0.5))).duplicate
    finally:
        await proxy.stop()

"""The monitor's loop through the real Envoy in front of a real mesh process, on the seed's paths:
a rule created over REST, degrading values recorded (`POST /api/v1/ml/monitoring/record`) until
its alert fires (`GET /api/v1/ml/monitoring/alerts`), the retraining run it queued read back
(`GET /api/v1/ml/retraining/status/{run_id}`), then healthy values until the alert resolves."""

from __future__ import annotations

import time
import uuid

from ...support import call

RECORD, ALERTS, RULES = "/api/v1/ml/monitoring/record", "/api/v1/ml/monitoring/alerts", "/api/v1/ml/monitoring/rules"
MODEL = "recommendation-model"


def until(check, timeout=15.0):
    """`check()`'s first truthy answer, asked every 0.2 s for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = check()
        if answer:
            return answer
        time.sleep(0.2)
    raise AssertionError("not within the time allowed")


def test_degrading_values_fire_an_alert_that_queues_retraining_and_healthy_ones_resolve_it(stack):
    metric = f"ctr_{uuid.uuid4().hex[:8]}"
    created = call(stack.front_door, "POST", RULES, token=stack.token, body={
        "name": f"ctr-low-{uuid.uuid4().hex[:6]}", "modelName": MODEL, "metricName": metric, "window": "2s",
        "threshold": {"comparison": "COMPARISON_LESS_THAN", "threshold": 0.05}, "severity": "ALERT_SEVERITY_CRITICAL",
        "triggerRetraining": True, "retrainingParameters": {"epochs": 1}, "enabled": True})
    assert created.status == 200, created.body
    rule = created.json()["rule"]

    def record(value: float) -> None:
        reply = call(stack.front_door, "POST", RECORD, token=stack.token,
                     body={"modelName": MODEL, "metricName": metric, "value": value, "labels": {"source": "e2e"}})
        assert reply.status == 200, reply.body

    def alerts(*states: str) -> list[dict]:
        query = f"?ruleId={rule['ruleId']}" + "".join(f"&states={s}" for s in states)
        reply = call(stack.front_door, "GET", ALERTS + query, token=stack.token)
        assert reply.status == 200, reply.body
        return reply.json().get("alerts", [])

    try:
        def fired():
            record(0.01)
            return next((a for a in alerts() if a.get("retrainingRunId")), None)

        alert = until(fired)
        assert alert["state"] == "ALERT_STATE_FIRING" and alert["severity"] == "ALERT_SEVERITY_CRITICAL"
        assert alert["value"] < 0.05 and alert["referenceValue"] == 0.05 and alert["fireTime"]
        status = call(stack.front_door, "GET", f"/api/v1/ml/retraining/status/{alert['retrainingRunId']}",
                      token=stack.token)
        assert status.status == 200, status.body
        run = status.json()["run"]
        assert run["trigger"] == "RUN_TRIGGER_ALERT" and run["modelName"] == MODEL
        assert run["state"] in ("RUN_STATE_QUEUED", "RUN_STATE_RUNNING", "RUN_STATE_SUCCEEDED")

        def resolved():
            record(0.2)
            return next((a for a in alerts("ALERT_STATE_RESOLVED") if a["alertId"] == alert["alertId"]), None)

        done = until(resolved)
        assert done["resolveTime"] and not alerts()  # nothing firing for the rule any more
        call(stack.front_door, "POST", f"/api/v1/ml/retraining/runs/{alert['retrainingRunId']}:cancel",
             token=stack.token, body={})  # no worker here: the queued run is not left behind
    finally:
        call(stack.front_door, "DELETE", f"{RULES}/{rule['ruleId']}", token=stack.token)


def test_bad_values_and_rules_are_refused_naming_the_field(stack):
    reply = call(stack.front_door, "POST", RECORD + ":batch", token=stack.token, body={"metrics": [
        {"modelName": MODEL, "metricName": "auc", "value": 0.5},
        {"modelName": MODEL, "metricName": "", "value": 0.5}]})
    assert reply.status == 400, reply.body
    assert reply.json()["details"][0]["metadata"]["field"] == "metrics[1].metric_name"
    reply = call(stack.front_door, "POST", RULES, token=stack.token, body={
        "name": "x", "modelName": MODEL, "metricName": "auc",
        "drift": {"bins": 1000}})
    assert reply.status == 400 and reply.json()["details"][0]["metadata"]["field"] == "rule.drift.bins", reply.body
    reply = call(stack.front_door, "POST", RULES, token=stack.mint(["pipeline.read", "pipeline.write"]), body={
        "name": "y", "modelName": MODEL, "metricName": "auc", "threshold": {"comparison": "COMPARISON_LESS_THAN"}})
    assert reply.status == 403, reply.body

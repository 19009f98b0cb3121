"""The dashboard: the committed JSON is what the generator writes, its Grafana structure (uid,
title, datasource variable, panels on the grid) holds, and every query reads known metrics."""

from __future__ import annotations

import json

from ml_serving_tools import dashboard as generator

from .catalog import known_names
from .promql import metric_names


def committed() -> dict:
    return json.loads(generator.OUTPUT.read_text())


def test_the_committed_json_is_the_generated_one():
    assert generator.OUTPUT.read_text() == generator.render(), "run `python -m ml_serving_tools.dashboard`"
    assert generator.main(["--check"]) == 0


def test_identity_schema_and_datasource_variable():
    board = committed()
    assert board["uid"] == board["title"] == "ml-serving-dashboard"
    assert 36 <= board["schemaVersion"] <= 41
    (variable,) = board["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == ("datasource", "datasource", "prometheus")
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_a_row_per_service_with_the_golden_signals():
    rows = [p["title"] for p in committed()["panels"] if p["type"] == "row"]
    assert rows == ["Overview", "Registry", "Inference", "Router", "Bandit", "Pipeline", "TorchServe", "Envoy"]
    titles = {p["title"] for p in committed()["panels"]}
    for service in ("Registry", "Inference", "Router", "Bandit", "Pipeline"):
        for signal in ("RPC rate by method", "error ratio", "latency p50 / p95 / p99", "CPU of its processes",
                       "resident memory", "dependencies up"):
            assert f"{service}: {signal}" in titles


def test_panels_are_timeseries_on_the_grid_without_overlap():
    taken = set()
    ids = [p["id"] for p in committed()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in committed()["panels"]:
        assert panel["type"] in ("row", "timeseries")
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & taken, panel["title"]
        taken |= cells
        if panel["type"] == "timeseries":
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])


def test_queries_read_only_known_metrics():
    unknown = {(row, title): metric_names(expr) - known_names()
               for row, title, expr in generator.panel_queries(committed())}
    assert {key: names for key, names in unknown.items() if names} == {}


def test_the_name_extraction_sees_through_matchers_and_grouping():
    expr = ('sum by (grpc_service) (rate(grpc_server_handled_total{grpc_code=~"INTERNAL|UNKNOWN"}[5m])) '
            '/ on (job) group_left () max(up offset 15m) > 0.05 or vector(0)')
    assert metric_names(expr) == {"grpc_server_handled_total", "up"}

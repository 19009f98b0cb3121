"""The Grafana dashboard ``ml-serving-dashboard``, generated: rows and panels are data here, the
JSON in k8s/monitoring/dashboards/ is written from them (and a test keeps the two equal).

    python -m ml_serving_tools.dashboard            # write k8s/monitoring/dashboards/ml-serving-dashboard.json
    python -m ml_serving_tools.dashboard --check    # exit 1 when the committed JSON is stale

Rows: Overview (the gateway's request rate, 4xx/5xx and latency; the mesh's RPCs by service), one
row per service with the golden signals (rate, error ratio, p50/p95/p99 latency, saturation:
CPU and memory of the processes hosting it, its dependencies' health) and its domain metrics, then
TorchServe's and Envoy's own metrics.

Queries aggregate by ``grpc_service``, never by job: locally one process hosts all five services,
in Kubernetes each has its pods. A process "hosts" a service when it exports that service's
``mlserving_dependency_up``; the saturation panels join on that. The datasource is the
``datasource`` variable (type datasource, Prometheus); ``$__rate_interval`` is Grafana's.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .paths import ROOT

UID = TITLE = "ml-serving-dashboard"
OUTPUT = ROOT / "k8s" / "monitoring" / "dashboards" / f"{UID}.json"
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
PANEL_WIDTH, PANEL_HEIGHT, GRID_WIDTH = 8, 8, 24
SERVER_FAULTS = "INTERNAL|UNAVAILABLE|DEADLINE_EXCEEDED|UNKNOWN|DATA_LOSS"
"""The codes the alerting rules count as the server's fault (the rest are the caller's)."""
STREAMS = "Watch.*|Stream.*"
"""Long-lived streaming methods: their durations are not latencies."""
ENVOY_TRAFFIC = 'envoy_http_conn_manager_prefix!="admin"'
"""Envoy's front door, not its admin listener (which Prometheus itself calls)."""


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[Target, ...]
    unit: str = "short"
    description: str = ""
    stack: bool = False


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True)
class Service:
    name: str  # the catalog's short name: mlserving_dependency_up's `service` label
    title: str
    grpc_services: tuple[str, ...]  # every gRPC service the mesh service answers
    domain: tuple[Panel, ...] = field(default=())

    @property
    def selector(self) -> str:
        return f'grpc_service=~"{"|".join(self.grpc_services)}"'


def panel(title: str, *targets: tuple[str, str] | str, unit: str = "short", description: str = "",
          stack: bool = False) -> Panel:
    """A panel from (expr, legend) pairs or bare expressions."""
    return Panel(title, tuple(Target(*t) if isinstance(t, tuple) else Target(t) for t in targets), unit,
                 description, stack)


# --------------------------------------------------------------------------- the golden signals


def _quantiles(bucket_selector: str, by: str, legend_prefix: str = "") -> list[tuple[str, str]]:
    return [(f"histogram_quantile({q}, sum by ({by}) (rate({bucket_selector}[{RATE}])))", f"{legend_prefix}p{int(q * 100)}")
            for q in (0.5, 0.95, 0.99)]


def golden_signals(svc: Service) -> tuple[Panel, ...]:
    rpcs = f"grpc_server_handled_total{{{svc.selector}}}"
    faults = f'grpc_server_handled_total{{{svc.selector},grpc_code=~"{SERVER_FAULTS}"}}'
    not_ok = f'grpc_server_handled_total{{{svc.selector},grpc_code!="OK"}}'
    buckets = f'grpc_server_handling_seconds_bucket{{{svc.selector},grpc_method!~"{STREAMS}"}}'
    hosting = f'group by (job, instance) (mlserving_dependency_up{{service="{svc.name}"}})'
    return (
        panel(f"{svc.title}: RPC rate by method", (f"sum by (grpc_method) (rate({rpcs}[{RATE}]))", "{{grpc_method}}"),
              unit="reqps", stack=True),
        panel(f"{svc.title}: error ratio",
              (f"(sum(rate({faults}[{RATE}])) or vector(0)) / sum(rate({rpcs}[{RATE}]))", "server faults"),
              (f"(sum(rate({not_ok}[{RATE}])) or vector(0)) / sum(rate({rpcs}[{RATE}]))", "all errors"),
              unit="percentunit",
              description=f"Server faults ({SERVER_FAULTS.replace('|', ', ')}) and every non-OK code, "
                          "over all RPCs handled."),
        panel(f"{svc.title}: errors by code", (f"sum by (grpc_code) (rate({not_ok}[{RATE}]))", "{{grpc_code}}"),
              unit="reqps", stack=True),
        panel(f"{svc.title}: latency p50 / p95 / p99", *_quantiles(buckets, "le"), unit="s",
              description="Unary and client-streaming RPCs, from grpc_server_handling_seconds (streams left out)."),
        panel(f"{svc.title}: p99 latency by method",
              (f"histogram_quantile(0.99, sum by (grpc_method, le) (rate({buckets}[{RATE}])))", "{{grpc_method}}"),
              unit="s"),
        panel(f"{svc.title}: CPU of its processes",
              (f"sum by (instance) (rate(process_cpu_seconds_total[{RATE}]) * on (job, instance) {hosting})",
               "{{instance}}"),
              unit="percentunit",
              description="CPU seconds per second of the processes hosting the service (locally one process hosts "
                          "all five)."),
        panel(f"{svc.title}: resident memory",
              (f"sum by (instance) (process_resident_memory_bytes * on (job, instance) {hosting})", "{{instance}}"),
              unit="bytes"),
        panel(f"{svc.title}: dependencies up",
              (f'min by (dependency) (mlserving_dependency_up{{service="{svc.name}"}})', "{{dependency}}"),
              unit="bool_yes_no", description="1 when the last health probe of the dependency answered, "
                                              "on every replica (the minimum over them)."),
    )


# --------------------------------------------------------------------------- the domain panels


REGISTRY = (
    panel("Registry: stage changes", (f"sum by (stage) (rate(mlserving_registry_stage_changes_total[{RATE}]))",
                                      "to {{stage}}"), unit="ops", stack=True),
    panel("Registry: stage changes by model (top 10)",
          (f"topk(10, sum by (model) (increase(mlserving_registry_stage_changes_total[1h])))", "{{model}}"),
          description="Over the last hour."),
)

INFERENCE = (
    panel("Inference: predictions by outcome",
          (f"sum by (outcome) (rate(mlserving_inference_predictions_total[{RATE}]))", "{{outcome}}"),
          unit="reqps", stack=True),
    panel("Inference: predictions by model and version (top 10)",
          (f"topk(10, sum by (model, version) (rate(mlserving_inference_predictions_total[{RATE}])))",
           "{{model}} v{{version}}"), unit="reqps"),
    panel("Inference: prediction error ratio by model",
          (f'sum by (model) (rate(mlserving_inference_predictions_total{{outcome="error"}}[{RATE}])) '
           f"/ sum by (model) (rate(mlserving_inference_predictions_total[{RATE}]))", "{{model}}"),
          unit="percentunit"),
    panel("Inference: prediction latency through TorchServe",
          *_quantiles("mlserving_inference_prediction_seconds_bucket", "le"), unit="s"),
    panel("Inference: p95 prediction latency by model",
          (f"histogram_quantile(0.95, sum by (model, le) (rate(mlserving_inference_prediction_seconds_bucket[{RATE}])))",
           "{{model}}"), unit="s"),
)

ROUTER = (
    panel("Router: predictions by experiment and variant",
          (f"sum by (experiment, variant, outcome) (rate(mlserving_router_predictions_total[{RATE}]))",
           "{{experiment}}/{{variant}} {{outcome}}"), unit="reqps"),
    panel("Router: exposures by variant",
          (f"sum by (experiment, variant) (rate(mlserving_router_exposures_total[{RATE}]))",
           "{{experiment}}/{{variant}}"), unit="ops"),
    panel("Router: outcomes by variant",
          (f"sum by (experiment, variant) (rate(mlserving_router_outcomes_total[{RATE}]))",
           "{{experiment}}/{{variant}}"), unit="ops"),
    panel("Router: outcomes per exposure (last hour)",
          ("sum by (experiment, variant) (increase(mlserving_router_outcomes_total[1h])) "
           "/ sum by (experiment, variant) (increase(mlserving_router_exposures_total[1h]))",
           "{{experiment}}/{{variant}}"), unit="percentunit"),
    panel("Router: canary traffic weight", ("max by (model) (mlserving_router_canary_step)", "{{model}}"),
          unit="percent"),
    panel("Router: canary verdicts (last hour)",
          ("sum by (model, verdict) (increase(mlserving_router_canary_verdicts_total[1h]))", "{{model}} {{verdict}}")),
)

BANDIT = (
    panel("Bandit: selections by arm",
          (f"sum by (bandit, arm) (rate(mlserving_bandit_selections_total[{RATE}]))", "{{bandit}}/{{arm}}"),
          unit="ops", stack=True),
    panel("Bandit: rewards by arm",
          (f"sum by (bandit, arm) (rate(mlserving_bandit_rewards_total[{RATE}]))", "{{bandit}}/{{arm}}"),
          unit="ops"),
    panel("Bandit: mean reward by arm (last hour)",
          ("sum by (bandit, arm) (increase(mlserving_bandit_reward_value_total[1h])) "
           "/ sum by (bandit, arm) (increase(mlserving_bandit_rewards_total[1h]))", "{{bandit}}/{{arm}}")),
    panel("Bandit: decision log",
          (f"sum(rate(mlserving_bandit_decision_log_decisions_written_total[{RATE}]))", "decisions written/s"),
          (f"sum(rate(mlserving_bandit_decision_log_dropped_total[{RATE}]))", "dropped/s"),
          ("sum(mlserving_bandit_decision_log_pending)", "pending")),
)

PIPELINE = (
    panel("Pipeline: feature reads by view and source",
          (f"sum by (view, source) (rate(mlserving_pipeline_feature_reads_total[{RATE}]))", "{{view}} {{source}}"),
          unit="ops", stack=True),
    panel("Pipeline: materialisation lag", ("max by (view) (mlserving_pipeline_materialization_lag_seconds)", "{{view}}"),
          unit="s"),
    # The run metrics are read from PostgreSQL: every Pipeline replica reports the same totals.
    panel("Pipeline: retraining runs ended (last hour)",
          ("max by (state) (increase(mlserving_pipeline_retraining_runs_total[1h]))", "{{state}}")),
    panel("Pipeline: retraining run duration p95",
          ("histogram_quantile(0.95, max by (state, le) (rate(mlserving_pipeline_retraining_run_seconds_bucket[1h])))",
           "{{state}}"), unit="s", description="Over the last hour."),
    panel("Pipeline: retraining queue depth", ("max(mlserving_pipeline_retraining_queue_depth)", "queued")),
    panel("Pipeline: model monitor alerts",
          # The gauge has no sample while nothing fires: 0 then, not "no data".
          ("sum by (severity) (mlserving_pipeline_alerts_firing) or on () vector(0)", "firing {{severity}}"),
          ("sum by (state) (increase(mlserving_pipeline_alert_transitions_total[1h]))", "{{state}} (last hour)")),
)

SERVICES = (
    Service("registry", "Registry", ("mnbara.mlserving.registry.v1.RegistryService",), REGISTRY),
    Service("inference", "Inference", ("mnbara.mlserving.inference.v1.InferenceService",
                                       "inference.GRPCInferenceService"), INFERENCE),
    Service("router", "Router", ("mnbara.mlserving.router.v1.RouterService",), ROUTER),
    Service("bandit", "Bandit", ("mnbara.mlserving.bandit.v1.BanditService",), BANDIT),
    Service("pipeline", "Pipeline", ("mnbara.mlserving.pipeline.v1.PipelineService",), PIPELINE),
)


# --------------------------------------------------------------------------- overview, TorchServe, Envoy


def overview() -> Row:
    downstream = f"envoy_http_downstream_rq_xx{{{ENVOY_TRAFFIC}}}"
    total = f"envoy_http_downstream_rq_total{{{ENVOY_TRAFFIC}}}"
    return Row("Overview", (
        panel("Gateway requests by status class",
              (f"sum by (envoy_response_code_class) (rate({downstream}[{RATE}]))", "{{envoy_response_code_class}}xx"),
              unit="reqps", stack=True),
        panel("Gateway 4xx / 5xx ratio",
              (f'(sum(rate(envoy_http_downstream_rq_xx{{{ENVOY_TRAFFIC},envoy_response_code_class="4"}}[{RATE}])) '
               f"or vector(0)) / sum(rate({total}[{RATE}]))", "4xx"),
              (f'(sum(rate(envoy_http_downstream_rq_xx{{{ENVOY_TRAFFIC},envoy_response_code_class="5"}}[{RATE}])) '
               f"or vector(0)) / sum(rate({total}[{RATE}]))", "5xx"),
              unit="percentunit"),
        panel("Gateway latency p50 / p95 / p99",
              *_quantiles(f"envoy_http_downstream_rq_time_bucket{{{ENVOY_TRAFFIC}}}", "le"), unit="ms"),
        panel("Mesh RPCs by service",
              (f"sum by (grpc_service) (rate(grpc_server_handled_total[{RATE}]))", "{{grpc_service}}"),
              unit="reqps", stack=True),
        panel("Mesh server-fault ratio by service",
              (f'(sum by (grpc_service) (rate(grpc_server_handled_total{{grpc_code=~"{SERVER_FAULTS}"}}[{RATE}])) '
               f"or sum by (grpc_service) (rate(grpc_server_handled_total[{RATE}])) * 0) "
               f"/ sum by (grpc_service) (rate(grpc_server_handled_total[{RATE}]))", "{{grpc_service}}"),
              unit="percentunit"),
        panel("Scrape targets up", ("sum by (job) (up)", "{{job}}"),
              description="Targets answering Prometheus, by job (mesh, gateway, TorchServe)."),
    ))


def torchserve() -> Row:
    # TorchServe 0.12 over gRPC (how the mesh calls it): ts_inference_requests_total counts every
    # request; ts_inference_latency_microseconds, ts_queue_latency_microseconds and HandlerTime
    # get no samples, and Requests2XX/4XX/5XX count only its HTTP APIs' answers.
    return Row("TorchServe", (
        panel("TorchServe inference requests by model",
              (f"sum by (model_name) (rate(ts_inference_requests_total[{RATE}]))", "{{model_name}}"), unit="reqps",
              description="TorchServe's model names: <registry model>-v<version>."),
        panel("TorchServe prediction time by model (last request)",
              ("max by (ModelName) (PredictionTime)", "{{ModelName}}"), unit="ms",
              description="A gauge TorchServe sets at each batch: the latest one's handler time."),
        panel("TorchServe worker and queue time (last request)",
              ("max(WorkerThreadTime)", "worker thread"), ("max(QueueTime)", "queue"), unit="ms"),
        panel("TorchServe worker load time", ("max by (WorkerName) (WorkerLoadTime)", "{{WorkerName}}"), unit="ms",
              description="How long each worker took to load its model: restarts show as new workers."),
        panel("TorchServe HTTP API answers by status class",
              (f"sum(rate(Requests2XX[{RATE}]))", "2xx"), (f"sum(rate(Requests4XX[{RATE}]) or vector(0))", "4xx"),
              (f"sum(rate(Requests5XX[{RATE}]) or vector(0))", "5xx"), unit="reqps", stack=True,
              description="Its HTTP APIs only (health checks, management over HTTP): gRPC answers are not counted."),
        panel("TorchServe up", ('up{job="torchserve"}', "{{instance}}"), unit="bool_yes_no"),
    ))


def envoy() -> Row:
    return Row("Envoy", (
        panel("Upstream requests by cluster",
              (f"sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_total[{RATE}]))", "{{envoy_cluster_name}}"),
              unit="reqps"),
        panel("Upstream answers by cluster and status class",
              (f"sum by (envoy_cluster_name, envoy_response_code_class) (rate(envoy_cluster_upstream_rq_xx[{RATE}]))",
               "{{envoy_cluster_name}} {{envoy_response_code_class}}xx"), unit="reqps"),
        panel("Upstream latency p99 by cluster",
              (f"histogram_quantile(0.99, sum by (envoy_cluster_name, le) "
               f"(rate(envoy_cluster_upstream_rq_time_bucket[{RATE}])))", "{{envoy_cluster_name}}"), unit="ms"),
        panel("Upstream retries and timeouts",
              (f"sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_retry[{RATE}]))", "retries {{envoy_cluster_name}}"),
              (f"sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_timeout[{RATE}]))",
               "timeouts {{envoy_cluster_name}}"), unit="reqps"),
        panel("Downstream requests by status class",
              (f"sum by (envoy_response_code_class) (rate(envoy_http_downstream_rq_xx{{{ENVOY_TRAFFIC}}}[{RATE}]))",
               "{{envoy_response_code_class}}xx"), unit="reqps", stack=True),
        panel("Active requests and connections",
              (f"sum(envoy_http_downstream_rq_active{{{ENVOY_TRAFFIC}}})", "downstream requests"),
              ("sum by (envoy_cluster_name) (envoy_cluster_upstream_cx_active)", "upstream connections {{envoy_cluster_name}}")),
        panel("Healthy upstream hosts", ("sum by (envoy_cluster_name) (envoy_cluster_membership_healthy)",
                                         "{{envoy_cluster_name}}")),
    ))


def rows() -> tuple[Row, ...]:
    return (overview(), *(Row(s.title, golden_signals(s) + s.domain) for s in SERVICES), torchserve(), envoy())


# --------------------------------------------------------------------------- Grafana JSON


def _target_json(target: Target, ref: int) -> dict:
    return {"datasource": DATASOURCE, "expr": target.expr, "legendFormat": target.legend or "__auto",
            "range": True, "refId": chr(ord("A") + ref)}


def _panel_json(p: Panel, panel_id: int, x: int, y: int) -> dict:
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10 if p.stack else 0, "showPoints": "never",
              "spanNulls": False, "stacking": {"mode": "normal" if p.stack else "none", "group": "A"}}
    return {
        "id": panel_id, "type": "timeseries", "title": p.title, "description": p.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": PANEL_HEIGHT, "w": PANEL_WIDTH, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": p.unit, "custom": custom}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [_target_json(t, i) for i, t in enumerate(p.targets)],
    }


def _panels_json(all_rows: tuple[Row, ...]) -> list[dict]:
    out, y, next_id = [], 0, 1
    per_line = GRID_WIDTH // PANEL_WIDTH
    for row in all_rows:
        out.append({"id": next_id, "type": "row", "title": row.title, "collapsed": False, "panels": [],
                    "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y}})
        next_id, y = next_id + 1, y + 1
        for index, p in enumerate(row.panels):
            out.append(_panel_json(p, next_id, (index % per_line) * PANEL_WIDTH, y + (index // per_line) * PANEL_HEIGHT))
            next_id += 1
        y += -(-len(row.panels) // per_line) * PANEL_HEIGHT
    return out


def dashboard() -> dict:
    return {
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "description": "ML serving mesh: golden signals per service, domain metrics, TorchServe and Envoy. "
                       "Generated by tools/ml_serving_tools/dashboard.py: edit that, not this file.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [],
        "panels": _panels_json(rows()),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["ml-serving", "grpc", "torchserve", "envoy"],
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1, "regex": "",
        }]},
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "title": TITLE,
        "uid": UID,
        "version": 1,
        "weekStart": "",
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def panel_queries(board: dict) -> list[tuple[str, str, str]]:
    """(row title, panel title, expr) of every query of a dashboard's JSON, in order."""
    out, row = [], ""
    for p in board["panels"]:
        if p["type"] == "row":
            row = p["title"]
            continue
        out += [(row, p["title"], t["expr"]) for t in p["targets"]]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs from the generated")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text() if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is stale: run `python -m ml_serving_tools.dashboard`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

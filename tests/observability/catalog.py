"""Every metric name the dashboard and the alerting rules may use: the mesh's (RPC metrics from
the runtime, domain metrics from each service's metrics.py), the process metrics of
prometheus_client, TorchServe's (metrics_mode prometheus, as its metrics API lists them) and
Envoy's (admin /stats/prometheus). A name outside this list is a typo or a metric nobody exports."""

from __future__ import annotations

COUNTERS = {
    "grpc_server_handled_total",
    "mlserving_inference_predictions_total",
    "mlserving_router_predictions_total",
    "mlserving_router_exposures_total",
    "mlserving_router_outcomes_total",
    "mlserving_router_canary_verdicts_total",
    "mlserving_bandit_selections_total",
    "mlserving_bandit_rewards_total",
    "mlserving_bandit_reward_value_total",
    "mlserving_bandit_decision_log_decisions_written_total",
    "mlserving_bandit_decision_log_rewards_written_total",
    "mlserving_bandit_decision_log_dropped_total",
    "mlserving_bandit_decision_log_failed_flushes_total",
    "mlserving_pipeline_feature_reads_total",
    "mlserving_pipeline_retraining_runs_total",
    "mlserving_pipeline_alert_transitions_total",
    "mlserving_registry_stage_changes_total",
    "process_cpu_seconds_total",
}
GAUGES = {
    "mlserving_router_canary_step",
    "mlserving_pipeline_materialization_lag_seconds",
    "mlserving_pipeline_retraining_queue_depth",
    "mlserving_pipeline_alerts_firing",
    "mlserving_bandit_decision_log_pending",
    "mlserving_dependency_up",
    "process_resident_memory_bytes",
    "up",  # Prometheus' own, per target
}
HISTOGRAMS = {
    "grpc_server_handling_seconds",
    "mlserving_inference_prediction_seconds",
    "mlserving_pipeline_retraining_run_seconds",
}
TORCHSERVE = {
    "Requests2XX", "Requests4XX", "Requests5XX",
    "ts_inference_requests_total", "ts_inference_latency_microseconds", "ts_queue_latency_microseconds",
    "QueueTime", "WorkerThreadTime", "WorkerLoadTime", "HandlerTime", "PredictionTime",
}
ENVOY = {
    "envoy_cluster_upstream_rq_total", "envoy_cluster_upstream_rq_xx", "envoy_cluster_upstream_rq_retry",
    "envoy_cluster_upstream_rq_timeout", "envoy_cluster_upstream_cx_active", "envoy_cluster_membership_healthy",
    "envoy_http_downstream_rq_total", "envoy_http_downstream_rq_xx", "envoy_http_downstream_rq_active",
}
ENVOY_HISTOGRAMS = {"envoy_cluster_upstream_rq_time", "envoy_http_downstream_rq_time"}


def known_names() -> set[str]:
    histogram_series = {f"{h}_{suffix}" for h in HISTOGRAMS | ENVOY_HISTOGRAMS for suffix in ("bucket", "count", "sum")}
    return COUNTERS | GAUGES | TORCHSERVE | ENVOY | histogram_series

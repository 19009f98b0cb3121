"""The monitor's alerts as Prometheus metrics, refreshed after each evaluation round:
`mlserving_pipeline_alerts_firing{model, rule, severity}` (1 per firing alert; a rule has at most
one, so the labels stay as many as the rules)."""

from __future__ import annotations

from prometheus_client import Gauge

from .domain.monitor import Monitor

ALERTS_FIRING = Gauge("mlserving_pipeline_alerts_firing", "Alerts of the model monitor firing now",
                      ["model", "rule", "severity"])


async def evaluate_and_export(monitor: Monitor) -> None:
    """One evaluation round, then the firing alerts as they stand."""
    await monitor.evaluate_round()
    firing, token = [], ""
    while True:
        page, token = await monitor.list_alerts(page_size=1000, page_token=token)
        firing += page
        if not token:
            break
    ALERTS_FIRING.clear()
    for alert in firing:
        ALERTS_FIRING.labels(alert.model_name, alert.rule_name, alert.severity.value).set(1)

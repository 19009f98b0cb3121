"""Prometheus for the observability tests: prometheus and promtool from PATH, else Debian's
package fetched into the state dir (`.run/prometheus`) once and reused. Tests that need them skip,
saying why, only when neither PATH nor apt can provide them."""

from __future__ import annotations

import pytest

from ml_serving_tools.devservices.prometheus import PrometheusTools, PrometheusUnavailable, find_prometheus
from ml_serving_tools.paths import ROOT, STATE_DIR

MONITORING = ROOT / "k8s" / "monitoring"
RULES = MONITORING / "rules" / "ml-serving-alerts.yaml"
RULE_TESTS = MONITORING / "rules" / "ml-serving-alerts.test.yaml"


@pytest.fixture(scope="session")
def prometheus_tools() -> PrometheusTools:
    try:
        return find_prometheus(STATE_DIR)
    except PrometheusUnavailable as why:
        print(f"no Prometheus for the observability tests: {why}")
        pytest.skip(f"no Prometheus: {why}")

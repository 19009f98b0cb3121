"""The alerting rules: valid for promtool, their unit tests pass, every alert is tested firing and
not firing, every metric they read is one the mesh, TorchServe or Envoy exports, and the scrape
config fragment they rely on is valid."""

from __future__ import annotations

import yaml

from .catalog import known_names
from .conftest import MONITORING, RULE_TESTS, RULES
from .promql import metric_names


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules_passes(prometheus_tools):
    result = prometheus_tools.promtool_run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass(prometheus_tools):
    result = prometheus_tools.promtool_run("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing():
    firing, quiet = set(), set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_alerts_have_a_severity_and_runbook_annotations():
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]


def test_rules_read_only_known_metrics():
    unknown = {rule["alert"]: metric_names(rule["expr"]) - known_names() for rule in alert_rules()}
    assert {alert: names for alert, names in unknown.items() if names} == {}


def test_the_scrape_config_fragment_is_a_valid_prometheus_config(prometheus_tools, tmp_path):
    fragment = yaml.safe_load((MONITORING / "prometheus-scrape.yaml").read_text())
    for job in fragment["scrape_configs"]:  # Debian's build has no Kubernetes discovery: check the rest
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
        job["static_configs"] = [{"targets": ["127.0.0.1:9464"]}]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"global": {"scrape_interval": "15s"}, "rule_files": [str(RULES)],
                                      **fragment}))
    result = prometheus_tools.promtool_run("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr

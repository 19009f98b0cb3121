"""The Prometheus dev service: binaries found (PATH or Debian's package in the state dir), a reason
when neither can provide them, and a started server that evaluates rules, reloads and stops."""

from __future__ import annotations

import time

import pytest
import yaml

from ml_serving_tools.devservices.prometheus import PrometheusUnavailable, find_prometheus, start_prometheus


def test_the_tools_found_run(prometheus_tools):
    assert prometheus_tools.version().startswith("prometheus, version 2.")
    assert prometheus_tools.promtool_run("--version").returncode == 0


def test_without_prometheus_or_apt_on_path_it_says_why(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(PrometheusUnavailable, match="apt-get"):
        find_prometheus(tmp_path / "state")


def write_rules(path, alert: str):
    path.write_text(yaml.safe_dump({"groups": [{"name": "t", "rules": [
        {"alert": alert, "expr": "vector(1) > 0", "labels": {"severity": "warning"}}]}]}))
    return path


def firing_names(server) -> set[str]:
    return {a["labels"]["alertname"] for a in server.alerts() if a["state"] == "firing"}


def wait_for(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.2)


def test_a_started_server_evaluates_rules_reloads_and_stops(prometheus_tools, tmp_path):
    rules = write_rules(tmp_path / "rules.yaml", "First")
    server = start_prometheus(prometheus_tools, tmp_path / "prometheus", [], [rules])
    try:
        assert server.query("vector(7)")[0]["value"][1] == "7"
        wait_for(lambda: firing_names(server) == {"First"})
        write_rules(rules, "Second")
        server.reload()
        wait_for(lambda: firing_names(server) == {"Second"})
        with pytest.raises(RuntimeError, match="bad_data"):
            server.query("sum(")
    finally:
        server.stop()
    assert server.proc.poll() is not None and not server.ready()

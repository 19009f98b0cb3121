"""The Router's monitor feed: per-variant figures of an interval, best effort."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from ml_serving_server.services.router.domain.monitor_feed import MAX_LATENCIES, MonitorFeed

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)


class Sink:
    def __init__(self, fail: bool = False):
        self.fail, self.sent = fail, []

    async def record(self, values):
        if self.fail:
            raise ConnectionError("the monitor is down")
        self.sent += values


def figures(values) -> dict:
    return {(v.model_version, v.labels["variant"], v.metric_name): v.value for v in values}


async def test_an_interval_becomes_requests_error_rate_and_latency_per_variant():
    sink = Sink()
    feed = MonitorFeed(sink, lambda: T0)
    for latency in (10.0, 20.0, 30.0, 40.0):
        feed.observe("rec", "3", "exp", "control", latency, False)
    feed.observe("rec", "3", "exp", "control", 0.0, True)
    feed.observe("rec", "4", "exp", "treatment", 5.0, False)
    assert await feed.flush() == 8
    got = figures(sink.sent)
    assert got[("3", "control", "router_requests")] == 5 and got[("3", "control", "router_error_rate")] == 0.2
    assert got[("3", "control", "router_latency_ms_p50")] == 25.0  # errors carry no latency
    assert got[("4", "treatment", "router_latency_ms_p95")] == 5.0
    assert all(v.model_name == "rec" and v.time == T0 and v.labels["experiment"] == "exp" for v in sink.sent)
    assert await feed.flush() == 0  # counters start again


async def test_only_errors_send_no_latency_and_latencies_are_bounded():
    sink = Sink()
    feed = MonitorFeed(sink, lambda: T0)
    feed.observe("rec", "3", "exp", "a", 0.0, True)
    for _ in range(MAX_LATENCIES + 10):
        feed.observe("rec", "3", "exp", "b", 1.0, False)
    await feed.flush()
    got = figures(sink.sent)
    assert ("3", "a", "router_latency_ms_p50") not in got and got[("3", "a", "router_error_rate")] == 1.0
    assert got[("3", "b", "router_requests")] == MAX_LATENCIES + 10


@pytest.mark.parametrize("fail", [True])
async def test_the_monitor_down_drops_the_interval_and_counts_it(fail):
    feed = MonitorFeed(Sink(fail=fail), lambda: T0)
    feed.observe("rec", "3", "exp", "a", 1.0, False)
    assert await feed.flush() == 0 and feed.dropped == 4
    assert feed.drain() == []  # nothing kept for later


async def test_counted_outcomes_become_a_count_and_a_mean_per_variant_and_metric():
    sink = Sink()
    feed = MonitorFeed(sink, lambda: T0)
    for value in (1.0, 0.0, 1.0, 1.0):
        feed.outcome("rec", "3", "exp", "control", "click", value)
    feed.outcome("rec", "4", "exp", "treatment", "revenue", 12.5)
    await feed.flush()
    got = {(v.labels["variant"], v.labels["outcome"], v.metric_name): v.value for v in sink.sent}
    assert got == {("control", "click", "router_outcomes"): 4.0, ("control", "click", "router_outcome_mean"): 0.75,
                   ("treatment", "revenue", "router_outcomes"): 1.0,
                   ("treatment", "revenue", "router_outcome_mean"): 12.5}

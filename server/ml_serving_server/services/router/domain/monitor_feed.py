"""What the Router tells the model monitor: every interval, per model version, experiment and
variant served, the Predict calls of that interval (count), their error rate and their latency
(p50, p95), as metric values of the served model (`router_requests`, `router_error_rate`,
`router_latency_ms_p50`, `router_latency_ms_p95`; labels `experiment` and `variant`), and the
outcomes counted that interval per metric (`router_outcomes`, and `router_outcome_mean`: the
conversion rate among reported outcomes of a binary metric, the mean of a numeric one; label
`outcome` too), so alert rules can watch a variant as they watch any metric.

Predict only appends to memory; the values go out in one batch per interval, best effort: the
monitor down, the interval's figures are dropped (logged), never held against memory or Predict.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)

MAX_LATENCIES = 10_000  # per series and interval: the first ones (a percentile of 10,000 is plenty)


@dataclass(frozen=True)
class FeedValue:
    model_name: str
    model_version: str
    metric_name: str
    value: float
    time: datetime
    labels: dict[str, str]


class MonitorSink(Protocol):
    async def record(self, values: Sequence[FeedValue]) -> None:
        """Sends the values to the monitor; raises on failure (the feed logs and drops them)."""


@dataclass
class _Series:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)


@dataclass
class _Outcomes:
    count: int = 0
    total: float = 0.0


class MonitorFeed:
    def __init__(self, sink: MonitorSink, clock: Callable[[], datetime]):
        self._sink, self._clock = sink, clock
        self._series: dict[tuple[str, str, str, str], _Series] = {}
        self._outcomes: dict[tuple[str, str, str, str, str], _Outcomes] = {}
        self.dropped = 0  # values lost to the monitor being unreachable

    def outcome(self, model_name: str, model_version: str, experiment: str, variant: str, metric: str,
                value: float) -> None:
        """A counted outcome (1/0 for a binary metric) of a user the variant served."""
        key = (model_name, model_version, experiment, variant, metric)
        seen = self._outcomes.get(key)
        if seen is None:
            seen = self._outcomes[key] = _Outcomes()
        seen.count += 1
        seen.total += value

    def observe(self, model_name: str, model_version: str, experiment: str, variant: str, latency_ms: float,
                error: bool) -> None:
        series = self._series.get((model_name, model_version, experiment, variant))
        if series is None:
            series = self._series[(model_name, model_version, experiment, variant)] = _Series()
        series.requests += 1
        if error:
            series.errors += 1
        elif len(series.latencies) < MAX_LATENCIES:
            series.latencies.append(latency_ms)

    def drain(self) -> list[FeedValue]:
        """The interval's figures as metric values; the counters start again."""
        series, self._series = self._series, {}
        at, values = self._clock(), []
        for (model, version, experiment, variant), seen in series.items():
            labels = {"experiment": experiment, "variant": variant}

            def value(name: str, number: float) -> FeedValue:
                return FeedValue(model, version, name, float(number), at, labels)

            values += [value("router_requests", seen.requests), value("router_error_rate", seen.errors / seen.requests)]
            if seen.latencies:
                p50, p95 = np.percentile(seen.latencies, [50, 95])
                values += [value("router_latency_ms_p50", p50), value("router_latency_ms_p95", p95)]
        outcomes, self._outcomes = self._outcomes, {}
        for (model, version, experiment, variant, metric), seen in outcomes.items():
            labels = {"experiment": experiment, "variant": variant, "outcome": metric}
            values += [FeedValue(model, version, "router_outcomes", float(seen.count), at, labels),
                       FeedValue(model, version, "router_outcome_mean", seen.total / seen.count, at, labels)]
        return values

    async def flush(self) -> int:
        """Sends the interval's figures; how many values went (0 when they were dropped)."""
        values = self.drain()
        if not values:
            return 0
        try:
            await self._sink.record(values)
        except Exception as error:  # noqa: BLE001 - best effort: the monitor being down costs an interval
            self.dropped += len(values)
            log.warning("router monitor feed: %d values dropped: %s", len(values), str(error)[:200])
            return 0
        return len(values)

"""The decision log's counters as Prometheus metrics, read when scraped:
`mlserving_bandit_decision_log_{decisions,rewards}_written_total`, `..._dropped_total` (entries
dropped while PostgreSQL could not keep up), `..._failed_flushes_total` and the gauge
`mlserving_bandit_decision_log_pending` (entries waiting in memory)."""

from __future__ import annotations

import weakref

from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily

from .domain.decision_log import DecisionLog

_PREFIX = "mlserving_bandit_decision_log"


class _DecisionLogCollector:
    """Sums over the live logs of this process (one per server; tests may build several)."""

    def __init__(self) -> None:
        self._logs: weakref.WeakSet[DecisionLog] = weakref.WeakSet()

    def add(self, decision_log: DecisionLog) -> None:
        self._logs.add(decision_log)

    def collect(self):
        logs = list(self._logs)
        for name, field, what in (("decisions_written", "written_decisions", "Decisions written to the log"),
                                  ("rewards_written", "written_rewards", "Rewards of decisions written to the log"),
                                  ("dropped", "dropped", "Log entries dropped: PostgreSQL could not keep up"),
                                  ("failed_flushes", "failed_flushes", "Writes of the log that failed (retried)")):
            yield CounterMetricFamily(f"{_PREFIX}_{name}", what,
                                      value=sum(getattr(log.counters, field) for log in logs))
        yield GaugeMetricFamily(f"{_PREFIX}_pending", "Log entries waiting in memory to be written",
                                value=sum(log.pending for log in logs))


_COLLECTOR = _DecisionLogCollector()
REGISTRY.register(_COLLECTOR)


def export_log_counters(decision_log: DecisionLog) -> None:
    _COLLECTOR.add(decision_log)

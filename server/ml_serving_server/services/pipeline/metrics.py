"""The Pipeline's domain metrics (Prometheus); the monitor's firing alerts are in alert_metrics.py.

- `mlserving_pipeline_feature_reads_total{view, source}` (counter): feature values answered by
  GetFeatures (an entity's features count one each), by where they came from, the feature store's
  own names: `online_store` (Redis; stale ones served flagged included), `read_through` (computed
  from the source now) or `not_found`.
- `mlserving_pipeline_materialization_lag_seconds{view}` (gauge): now minus the end of the view's
  last successful materialisation (a view never materialised has no series). The end, not the
  newest event time materialised: a source whose newest row is old is no lag of ours.
- `mlserving_pipeline_retraining_runs_total{state}` (counter): retraining runs that ended,
  `state` `succeeded`, `failed` or `cancelled`.
- `mlserving_pipeline_retraining_run_seconds{state}` (histogram, buckets 1 s to 6 h): the
  duration of those runs, from their start (their queueing, if they never started) to their end.
- `mlserving_pipeline_retraining_queue_depth` (gauge): runs queued and not claimed by a worker.
- `mlserving_pipeline_alert_transitions_total{state, severity}` (counter): alerts of the model
  monitor that fired or resolved (`state` `firing` or `resolved`; `severity` `info`, `warning`,
  `critical`). Counted where the monitor notifies (`MeteredNotifier`): of several replicas
  evaluating the same rule, only the one whose change was stored notifies, so each counts once.

`view` is bounded (runtime/metric_labels.py). Runs end in the retraining workers, other
processes: the run metrics are read from PostgreSQL, where every run is, by a periodic task
(every PIPELINE_MONITOR_EVALUATION_SECONDS) into a cache that a scrape only reads, and so are
the views' last materialisations. Being read from the database, the run totals are the same on
every Pipeline replica: aggregate them across replicas with max, not sum. Before the first
read (or while PostgreSQL has never answered) these have no samples; a failed read keeps the
last values.
"""

from __future__ import annotations

import time
import weakref
from collections import Counter as Tally

from prometheus_client import Counter
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ...runtime.metric_labels import bounded
from .domain.monitoring import Alert, AlertRule
from .domain.online import FeaturesResult
from .domain.retraining import RunState

RUN_SECONDS_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 21600.0)
_ENDED = tuple(state for state in RunState if state.ended)

FEATURE_READS = Counter("mlserving_pipeline_feature_reads", "Feature values read, by where they came from",
                        ["view", "source"])
ALERT_TRANSITIONS = Counter("mlserving_pipeline_alert_transitions",
                            "Alerts of the model monitor that fired or resolved", ["state", "severity"])


def count_feature_reads(views: list[FeaturesResult]) -> None:
    for view in views:
        label = bounded("mlserving_pipeline_feature_reads_total", "view", view.feature_view)
        per_entity = len(view.feature_names)
        for source, entities in Tally(entity.source for entity in view.entities).items():
            FEATURE_READS.labels(label, source.value.lower()).inc(entities * per_entity)


class MeteredNotifier:
    """The alert notifier, counting the transitions it is told of; every other call passes through."""

    def __init__(self, notifier):
        self._notifier = notifier

    async def notify(self, rule: AlertRule, alert: Alert) -> None:
        ALERT_TRANSITIONS.labels(alert.state.value.lower(), alert.severity.value).inc()
        await self._notifier.notify(rule, alert)

    def __getattr__(self, name: str):
        return getattr(self._notifier, name)


class PipelineGauges:
    """What a scrape reports of the runs and the views, as read last from PostgreSQL."""

    def __init__(self, run_store, state, view_names: list[str]):
        self._run_store, self._state, self._view_names = run_store, state, view_names
        self.queued: int | None = None
        self.ended: dict[str, tuple[int, float, list[int]]] = {}
        self.materialized: dict[str, float] = {}  # view -> end of its last materialisation (epoch s)

    async def refresh(self) -> None:
        """Both reads, each on its own (one failing keeps the other's news); then the first failure."""
        failures = []
        for read in (self._read_runs, self._read_views):
            try:
                await read()
            except Exception as error:  # noqa: BLE001 - raised below, once the other read had its turn
                failures.append(error)
        if failures:
            raise failures[0]

    async def _read_runs(self) -> None:
        self.queued, self.ended = await self._run_store.totals(RUN_SECONDS_BUCKETS)

    async def _read_views(self) -> None:
        states = await self._state.view_states()
        self.materialized = {name: s.last_materialization_time.timestamp() for name, s in states.items()
                             if name in self._view_names and s.last_materialization_time is not None}

    def run_families(self):
        yield GaugeMetricFamily("mlserving_pipeline_retraining_queue_depth",
                                "Retraining runs queued and not claimed by a worker", value=self.queued)
        runs = CounterMetricFamily("mlserving_pipeline_retraining_runs", "Retraining runs that ended, by state",
                                   labels=["state"])
        seconds = HistogramMetricFamily("mlserving_pipeline_retraining_run_seconds",
                                        "Duration of retraining runs that ended, by state", labels=["state"])
        for state in _ENDED:
            count, total, within = self.ended.get(state.value, (0, 0.0, [0] * len(RUN_SECONDS_BUCKETS)))
            label = state.value.lower()
            runs.add_metric([label], count)
            buckets = [(repr(bound), n) for bound, n in zip(RUN_SECONDS_BUCKETS, within)] + [("+Inf", count)]
            seconds.add_metric([label], buckets, total)
        yield runs
        yield seconds


def _lag_family(gauges: list[PipelineGauges], now: float) -> GaugeMetricFamily:
    ended: dict[str, float] = {}
    for one in gauges:
        for view, time_s in one.materialized.items():
            ended[view] = max(time_s, ended.get(view, time_s))
    family = GaugeMetricFamily("mlserving_pipeline_materialization_lag_seconds",
                               "Seconds since the view's last successful materialisation ended", labels=["view"])
    for view, time_s in sorted(ended.items()):
        family.add_metric([bounded(family.name, "view", view)], max(0.0, now - time_s))
    return family


class _GaugesCollector:
    """The PipelineGauges of the servers running in this process (one; tests build several)."""

    def __init__(self) -> None:
        self._gauges: weakref.WeakSet[PipelineGauges] = weakref.WeakSet()

    def add(self, gauges: PipelineGauges) -> None:
        self._gauges.add(gauges)

    def discard(self, gauges: PipelineGauges) -> None:
        self._gauges.discard(gauges)

    def collect(self):
        gauges = list(self._gauges)
        if not gauges:
            return
        yield _lag_family(gauges, time.time())
        read = [one for one in gauges if one.queued is not None]
        if read:  # the runs are the database's: servers of one process on one database say the same
            yield from read[0].run_families()


_COLLECTOR = _GaugesCollector()
REGISTRY.register(_COLLECTOR)


def export_gauges(gauges: PipelineGauges) -> None:
    _COLLECTOR.add(gauges)


def unexport_gauges(gauges: PipelineGauges) -> None:
    _COLLECTOR.discard(gauges)

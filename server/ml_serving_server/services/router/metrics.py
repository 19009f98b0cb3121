"""The Router's domain metrics (Prometheus):

- `mlserving_router_predictions_total{experiment, variant, outcome}` (counter): Predict calls
  after their assignment, `outcome` `ok` or `error` (any failure of the prediction, the caller
  gone included). `experiment` is "" when no experiment assigned the call: a canary's
  (`variant` `canary` or `stable`) or the model's Production version (`variant` ""). A call
  refused before its assignment (bad request, no experiment applies) is not counted here.
  Shadow predictions are not counted.
- `mlserving_router_exposures_total{experiment, variant}` (counter): exposures recorded, by
  assignment (AssignVariant and Predict, not dry runs) or by RecordExposures; a held-out user is
  `variant="~holdout"`.
- `mlserving_router_outcomes_total{experiment, variant}` (counter): outcomes newly counted
  (duplicates and outcomes of experiments no longer counting are not).
- `mlserving_router_canary_step{model}` (gauge): the traffic share of the model's active canary
  now, in percent (from this replica's catalog, so every replica reports it; a finished canary
  has no series).
- `mlserving_router_canary_verdicts_total{model, verdict}` (counter): canary decisions stored,
  `verdict` one of `advanced`, `awaiting_promotion`, `promoted`, `promotion_failed`,
  `rolled_back` (the canary's own event names), automatic or by hand. Each change is a
  compare-and-set on the canary's revision, so a decision counts once whichever replica made it.
  A hold is no decision: it changes nothing and is not counted.

`experiment`, `variant` and `model` are bounded (runtime/metric_labels.py). Counted through the
domain's RouterEvents port (domain/events.py), which `RouterMetrics` implements.
"""

from __future__ import annotations

import weakref

from prometheus_client import Counter
from prometheus_client.core import REGISTRY, GaugeMetricFamily

from ...runtime.metric_labels import bounded
from .domain.canary import CanaryEventType
from .domain.catalog import ExperimentCatalog

PREDICTIONS = Counter("mlserving_router_predictions", "Predict calls by experiment, variant and outcome (ok, error)",
                      ["experiment", "variant", "outcome"])
EXPOSURES = Counter("mlserving_router_exposures", "Experiment exposures recorded", ["experiment", "variant"])
OUTCOMES = Counter("mlserving_router_outcomes", "Experiment outcomes counted", ["experiment", "variant"])
CANARY_VERDICTS = Counter("mlserving_router_canary_verdicts", "Canary decisions stored, by verdict",
                          ["model", "verdict"])

_CANARY_STEP = "mlserving_router_canary_step"


def _variant_labels(metric: str, experiment: str, variant: str) -> tuple[str, str]:
    return bounded(metric, "experiment", experiment), bounded(metric, "variant", variant)


class RouterMetrics:
    """The RouterEvents port as Prometheus counters."""

    def predicted(self, experiment: str, variant: str, ok: bool) -> None:
        PREDICTIONS.labels(*_variant_labels("mlserving_router_predictions_total", experiment, variant),
                           "ok" if ok else "error").inc()

    def exposed(self, experiment: str, variant: str) -> None:
        EXPOSURES.labels(*_variant_labels("mlserving_router_exposures_total", experiment, variant)).inc()

    def outcome_counted(self, experiment: str, variant: str) -> None:
        OUTCOMES.labels(*_variant_labels("mlserving_router_outcomes_total", experiment, variant)).inc()

    def canary_verdict(self, model_name: str, verdict: CanaryEventType) -> None:
        CANARY_VERDICTS.labels(bounded("mlserving_router_canary_verdicts_total", "model", model_name),
                               verdict.name.lower()).inc()


class _CanaryStepCollector:
    """The active canaries' shares, read from the live catalogs of this process at scrape time
    (memory only: nothing waits on a store)."""

    def __init__(self) -> None:
        self._catalogs: weakref.WeakSet[ExperimentCatalog] = weakref.WeakSet()

    def add(self, catalog: ExperimentCatalog) -> None:
        self._catalogs.add(catalog)

    def discard(self, catalog: ExperimentCatalog) -> None:
        self._catalogs.discard(catalog)

    def collect(self):
        family = GaugeMetricFamily(_CANARY_STEP, "Traffic share of the model's active canary, in percent",
                                   labels=["model"])
        shares: dict[str, float] = {}
        for catalog in list(self._catalogs):
            for canary in _active(catalog):
                shares[bounded(_CANARY_STEP, "model", canary.model_name)] = canary.current_weight_bps / 100
        for model, percent in sorted(shares.items()):
            family.add_metric([model], percent)
        yield family


def _active(catalog: ExperimentCatalog) -> list:
    """The catalog's active canaries; it changes on the event loop's thread while a scrape reads it
    on another, so a copy that raced a change is taken again."""
    for _ in range(3):
        try:
            return catalog.active_canaries()
        except RuntimeError:  # dictionary changed size during iteration
            continue
    return []


_STEPS = _CanaryStepCollector()
REGISTRY.register(_STEPS)


def export_canary_steps(catalog: ExperimentCatalog) -> None:
    _STEPS.add(catalog)


def unexport_canary_steps(catalog: ExperimentCatalog) -> None:
    _STEPS.discard(catalog)

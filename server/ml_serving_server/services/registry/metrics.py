"""The Registry's domain metrics (Prometheus):

- `mlserving_registry_stage_changes_total{model, stage}` (counter): lifecycle stage changes
  committed, by model and the stage entered (`development`, `staging`, `production`,
  `archived`): a TransitionStage counts one, or two when a promotion archives the version it
  replaces (`production` and `archived`); a version registered straight into Staging counts one
  (`staging`). A repeated request (request id already seen) counts nothing.

`model` is bounded (runtime/metric_labels.py). Counted by the servicer once the change is
committed, so a change that failed (MLflow down, a gate) never counts.
"""

from __future__ import annotations

from prometheus_client import Counter

from ...runtime.metric_labels import bounded
from .domain.model import Stage

STAGE_CHANGES = Counter("mlserving_registry_stage_changes", "Lifecycle stage changes, by the stage entered",
                        ["model", "stage"])


def count_stage_change(model: str, stage: Stage) -> None:
    STAGE_CHANGES.labels(bounded("mlserving_registry_stage_changes_total", "model", model),
                         stage.name.lower()).inc()

"""`mlserving_registry_stage_changes_total{model, stage}` through a real registry (MLflow, S3,
PostgreSQL): one per stage entered, two when a promotion archives the version it replaces, one
for a version registered in Staging, none for a refused change or a repeated request."""

from __future__ import annotations

import pytest
from ml_serving import FailedPreconditionError
from mnbara.mlserving.registry.v1 import registry_pb2 as pb
from prometheus_client import REGISTRY

from ml_serving_server.runtime import metric_labels

from ..conftest import mar_bytes, unique_name


@pytest.fixture(autouse=True)
def fresh_label_bounds(monkeypatch):
    """The session's other tests may have used up the names a label admits: these start afresh."""
    monkeypatch.setattr(metric_labels, "BOUNDS", metric_labels.LabelBounds())


def stage_changes(model: str) -> dict[str, float]:
    return {stage: REGISTRY.get_sample_value("mlserving_registry_stage_changes_total",
                                             {"model": model, "stage": stage}) or 0.0
            for stage in ("development", "staging", "production", "archived")}


async def test_each_stage_entered_counts_once(registry):
    name = unique_name("metrics")
    await registry.create_model_version(name, artifact=mar_bytes(name, b"1"), artifact_file_name="model.mar",
                                        create_model_if_missing=True)
    assert stage_changes(name) == {"development": 0, "staging": 0, "production": 0, "archived": 0}

    await registry.create_model_version(name, artifact=mar_bytes(name, b"2"), artifact_file_name="model.mar",
                                        initial_stage=pb.STAGE_STAGING, request_id="metrics-2")
    await registry.create_model_version(name, artifact=mar_bytes(name, b"2"), artifact_file_name="model.mar",
                                        initial_stage=pb.STAGE_STAGING, request_id="metrics-2")  # a repeat
    assert stage_changes(name) == {"development": 0, "staging": 1, "production": 0, "archived": 0}

    await registry.transition_stage(name, "1", pb.STAGE_STAGING)
    await registry.transition_stage(name, "1", pb.STAGE_PRODUCTION)
    await registry.transition_stage(name, "2", pb.STAGE_PRODUCTION)  # archives version 1
    with pytest.raises(FailedPreconditionError):  # Archived to Production is no transition
        await registry.transition_stage(name, "1", pb.STAGE_PRODUCTION)
    assert stage_changes(name) == {"development": 0, "staging": 2, "production": 2, "archived": 1}

"""The lifecycle state machine, promotion gates, input limits and the MLflow layout: plain Python, no I/O."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from ml_serving_server.errors import FailedPrecondition, InvalidArgument
from ml_serving_server.services.registry.domain import layout, limits
from ml_serving_server.services.registry.domain.errors import ErrorReason
from ml_serving_server.services.registry.domain.lifecycle import (
    ALLOWED,
    check_transition,
    evaluate_gates,
    gate_failure,
)
from ml_serving_server.services.registry.domain.model import (
    Artifact,
    ArtifactFormat,
    Comparison,
    MetricGate,
    Signature,
    Stage,
    TensorSpec,
)
from ml_serving_server.services.registry.domain.ports import CatalogModel, CatalogVersion, StageRecord

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)

LEGAL = {
    (Stage.DEVELOPMENT, Stage.STAGING), (Stage.DEVELOPMENT, Stage.ARCHIVED),
    (Stage.STAGING, Stage.PRODUCTION), (Stage.STAGING, Stage.DEVELOPMENT), (Stage.STAGING, Stage.ARCHIVED),
    (Stage.PRODUCTION, Stage.STAGING), (Stage.PRODUCTION, Stage.ARCHIVED),
    (Stage.ARCHIVED, Stage.STAGING),
}


@pytest.mark.parametrize("current", list(Stage))
@pytest.mark.parametrize("target", list(Stage))
def test_the_state_machine_allows_exactly_the_documented_moves(current, target):
    if (current, target) in LEGAL:
        check_transition("1", current, target)
    else:
        with pytest.raises(FailedPrecondition) as raised:
            check_transition("1", current, target)
        assert raised.value.reason == ErrorReason.INVALID_TRANSITION
        assert raised.value.metadata["from_stage"] == current.name


def test_the_table_and_the_documented_moves_agree():
    assert {(a, b) for a, targets in ALLOWED.items() for b in targets} == LEGAL


ACCURACY = MetricGate("accuracy", Comparison.GREATER_OR_EQUAL, 0.9)
LATENCY = MetricGate("p99_ms", Comparison.LESS_OR_EQUAL, 50.0)
STAGING_ONLY = MetricGate("smoke", Comparison.GREATER_THAN, 0.0, Stage.STAGING)


def test_gates_pass_fail_and_name_every_failed_metric():
    results = evaluate_gates([ACCURACY, LATENCY, STAGING_ONLY], Stage.PRODUCTION, {"accuracy": 0.85, "p99_ms": 40})
    assert [(r.gate.metric, r.passed) for r in results] == [("accuracy", False), ("p99_ms", True)]
    error = gate_failure("2", Stage.PRODUCTION, results)
    assert error.reason == ErrorReason.GATE_FAILED
    assert error.metadata["metric"] == "accuracy"
    assert "accuracy = 0.85" in error.message and ">= 0.9" in error.message


def test_a_missing_metric_fails_its_gate_and_nan_never_passes():
    results = evaluate_gates([ACCURACY], Stage.PRODUCTION, {})
    assert results[0].actual is None and not results[0].passed
    assert "missing" in gate_failure("1", Stage.PRODUCTION, results).message
    assert not evaluate_gates([ACCURACY], Stage.PRODUCTION, {"accuracy": float("nan")})[0].passed


@pytest.mark.parametrize("comparison,value,passes", [
    (Comparison.GREATER_THAN, 1.0, False), (Comparison.GREATER_THAN, 1.01, True),
    (Comparison.GREATER_OR_EQUAL, 1.0, True), (Comparison.LESS_THAN, 1.0, False),
    (Comparison.LESS_THAN, 0.99, True), (Comparison.LESS_OR_EQUAL, 1.0, True),
])
def test_each_comparison_at_its_boundary(comparison, value, passes):
    gate = MetricGate("m", comparison, 1.0)
    assert evaluate_gates([gate], Stage.PRODUCTION, {"m": value})[0].passed is passes


def test_passing_gates_give_no_failure():
    assert gate_failure("1", Stage.PRODUCTION, evaluate_gates([ACCURACY], Stage.PRODUCTION, {"accuracy": 0.9})) is None


@pytest.mark.parametrize("name", ["a", "fraud-model.v2_x", "A" * 256])
def test_model_names_within_the_limits(name):
    assert limits.model_name(name) == name


@pytest.mark.parametrize("name", ["", "A" * 257, "a/b", "a b", "ü", "a\x00"])
def test_model_names_outside_the_limits_name_the_field(name):
    with pytest.raises(InvalidArgument) as raised:
        limits.model_name(name, "registered_model.name")
    assert raised.value.field == "registered_model.name"
    assert len(raised.value.message) < 200  # never echoes the whole input


@pytest.mark.parametrize("alias,reason", [("production", ErrorReason.RESERVED_ALIAS), ("v3", ErrorReason.RESERVED_ALIAS),
                                          ("latest", ErrorReason.RESERVED_ALIAS), ("Champion", ErrorReason.INVALID_FIELD),
                                          ("x" * 65, ErrorReason.INVALID_FIELD)])
def test_aliases_refused(alias, reason):
    with pytest.raises(InvalidArgument) as raised:
        limits.alias(alias)
    assert raised.value.reason.name == reason.name


def test_reserved_tag_keys_are_refused():
    with pytest.raises(InvalidArgument) as raised:
        limits.tags({"mnbara.stage": "Production"})
    assert raised.value.reason == ErrorReason.RESERVED_TAG
    limits.tags({"team": "fraud"})


def test_limits_on_counts_and_values():
    with pytest.raises(InvalidArgument):
        limits.tags({f"k{i}": "v" for i in range(limits.MAX_TAGS + 1)})
    with pytest.raises(InvalidArgument):
        limits.tags({"k": "v" * (limits.MAX_TAG_VALUE + 1)})
    with pytest.raises(InvalidArgument):
        limits.metrics({"auc": float("inf")})
    with pytest.raises(InvalidArgument):
        limits.parameters({"lr": "x" * (limits.MAX_PARAMETER_VALUE + 1)})
    with pytest.raises(InvalidArgument):
        limits.page_size(limits.MAX_PAGE_SIZE + 1)
    assert limits.page_size(0) == limits.DEFAULT_PAGE_SIZE
    with pytest.raises(InvalidArgument):
        limits.version("0")
    with pytest.raises(InvalidArgument):
        limits.gates([MetricGate("m", Comparison.LESS_THAN, 1.0, Stage.ARCHIVED)], "gates")


def test_signature_limits():
    good = Signature((TensorSpec("input", "FP32", (-1, 4)),), (TensorSpec("scores", "FP32", (-1, 2)),))
    assert limits.signature(good) == good
    for bad, field in [(Signature((TensorSpec("x", "FLOAT", ()),)), "signature.inputs.datatype"),
                       (Signature((TensorSpec("x", "FP32", (-2,)),)), "signature.inputs.shape"),
                       (Signature(outputs=(TensorSpec("", "FP32", ()),)), "signature.outputs.name")]:
        with pytest.raises(InvalidArgument) as raised:
            limits.signature(bad)
        assert raised.value.field == field


def test_a_version_round_trips_through_mlflow_tags():
    artifact = Artifact("s3://b/models/m/u/model.mar", ArtifactFormat.TORCHSERVE_MAR, "ab" * 32, 1234)
    signature = Signature((TensorSpec("input", "FP32", (-1, 4)),), (TensorSpec("scores", "FP32", (-1, 2)),))
    record = StageRecord(Stage.STAGING, NOW)
    tags = layout.version_tags(artifact=artifact, metrics={"auc": 0.91}, parameters={"lr": "0.01"},
                               tags={"team": "fraud"}, signature=signature, created_by="alice", stage=record)
    assert tags[layout.STAGE_TAG] == "Staging"
    assert tags["mnbara.metric.auc"] == "0.91"
    catalog = CatalogVersion("m", "3", "d", artifact.uri, "run1", tags, ("champion", "production"), NOW, NOW)
    version = layout.version_from_catalog(catalog, None)  # the stage from the tags when the store has none
    assert version.stage == Stage.STAGING and version.stage_update_time == NOW
    assert version.artifact == artifact
    assert version.metrics == {"auc": 0.91} and version.parameters == {"lr": "0.01"}
    assert version.tags == {"team": "fraud"}  # reserved tags are not user tags
    assert version.signature == signature
    assert version.aliases == ("champion",)  # the production alias is the stage's, not a user alias
    assert version.created_by == "alice"
    assert layout.version_from_catalog(catalog, StageRecord(Stage.PRODUCTION, NOW)).stage == Stage.PRODUCTION


def test_a_policy_round_trips_through_a_model_tag():
    tags = {"team": "x", layout.POLICY_TAG: layout.policy_json((ACCURACY, STAGING_ONLY))}
    model = layout.model_from_catalog(CatalogModel("m", "", tags, {"production": "2", "champion": "1"}, NOW, NOW))
    assert model.gates == (ACCURACY, STAGING_ONLY)
    assert model.tags == {"team": "x"}
    assert model.aliases == {"champion": "1"}


def test_tags_written_by_someone_else_do_not_break_reads():
    tags = {layout.SIGNATURE_TAG: "{not json", "mnbara.metric.auc": "high", layout.SHA256_TAG: "x",
            layout.SIZE_TAG: "lots"}
    version = layout.version_from_catalog(CatalogVersion("m", "1", "", "s3://b/k", "", tags, (), NOW, NOW), None)
    assert version.signature == Signature() and version.metrics == {} and version.artifact.size_bytes == 0
    model = layout.model_from_catalog(CatalogModel("m", "", {layout.POLICY_TAG: "[{]"}, {}, NOW, NOW))
    assert model.gates == ()

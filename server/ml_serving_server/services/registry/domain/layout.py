"""How the registry's state looks inside MLflow, so that a plain MLflow client sees the same truth.

    alias   production                  the version in Production (at most one, moved in one call)
    tag     mnbara.stage                on a version: Development, Staging, Production or Archived
    tag     mnbara.stage_since          on a version: when it entered that stage (ISO 8601, UTC)
    tag     mnbara.artifact.sha256      on a version: hex SHA-256 of the artifact at `source`
    tag     mnbara.artifact.size_bytes  on a version
    tag     mnbara.artifact.format      on a version: TORCHSERVE_MAR, DIRECTORY_ZIP, DIRECTORY_TAR_GZ
    tag     mnbara.metric.<name>        on a version: a metric, e.g. mnbara.metric.val_accuracy = 0.93
    tag     mnbara.param.<name>         on a version: a training parameter
    tag     mnbara.signature            on a version: inputs and outputs as JSON
    tag     mnbara.created_by           on a version: who registered it
    tag     mnbara.promotion_policy     on a model: its promotion gates as JSON

    >>> MlflowClient().get_model_version_by_alias("fraud", "production").version

Keys starting with "mnbara." are reserved: callers cannot set them as user tags. The
registry's PostgreSQL holds the authoritative stage of every version (so a promotion,
its audit entry and its event commit together); these tags and the alias mirror it and
are repaired from it when a write to MLflow fails halfway.
"""

from __future__ import annotations

import json
from datetime import datetime

from .model import (
    Artifact,
    ArtifactFormat,
    Comparison,
    MetricGate,
    ModelVersion,
    RegisteredModel,
    Signature,
    Stage,
    TensorSpec,
)
from .ports import CatalogModel, CatalogVersion, StageRecord

RESERVED_PREFIX = "mnbara."
PRODUCTION_ALIAS = "production"
STAGE_TAG = "mnbara.stage"
STAGE_SINCE_TAG = "mnbara.stage_since"
SHA256_TAG = "mnbara.artifact.sha256"
SIZE_TAG = "mnbara.artifact.size_bytes"
FORMAT_TAG = "mnbara.artifact.format"
METRIC_PREFIX = "mnbara.metric."
PARAM_PREFIX = "mnbara.param."
SIGNATURE_TAG = "mnbara.signature"
CREATED_BY_TAG = "mnbara.created_by"
POLICY_TAG = "mnbara.promotion_policy"

STAGE_NAMES = {stage: stage.name.capitalize() for stage in Stage}
RESERVED_ALIASES = frozenset({"development", "staging", "production", "archived", "latest"})


def user_tags(tags: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if not k.startswith(RESERVED_PREFIX)}


def user_aliases(aliases: dict[str, str]) -> dict[str, str]:
    return {a: v for a, v in aliases.items() if a != PRODUCTION_ALIAS}


# --- versions ----------------------------------------------------------------------------

def stage_tags(record: StageRecord) -> dict[str, str]:
    return {STAGE_TAG: STAGE_NAMES[record.stage], STAGE_SINCE_TAG: record.since.isoformat()}


def version_tags(*, artifact: Artifact, metrics: dict[str, float], parameters: dict[str, str],
                 tags: dict[str, str], signature: Signature, created_by: str, stage: StageRecord) -> dict[str, str]:
    """Every tag a new version is created with."""
    out = dict(tags)
    out.update({SHA256_TAG: artifact.sha256, SIZE_TAG: str(artifact.size_bytes), FORMAT_TAG: artifact.format.name,
                CREATED_BY_TAG: created_by})
    out.update(metric_tags(metrics))
    out.update({PARAM_PREFIX + k: v for k, v in parameters.items()})
    if signature.inputs or signature.outputs:
        out[SIGNATURE_TAG] = signature_json(signature)
    out.update(stage_tags(stage))
    return out


def metric_tags(metrics: dict[str, float]) -> dict[str, str]:
    return {METRIC_PREFIX + k: repr(float(v)) for k, v in metrics.items()}


def signature_dict(signature: Signature) -> dict:
    """The signature as JSON-able data: {"inputs": [{"name", "datatype", "shape"}], "outputs": [...]}."""
    def specs(items: tuple[TensorSpec, ...]) -> list[dict]:
        return [{"name": s.name, "datatype": s.datatype, "shape": list(s.shape)} for s in items]
    return {"inputs": specs(signature.inputs), "outputs": specs(signature.outputs)}


def signature_from_dict(data: dict) -> Signature:
    """The inverse of signature_dict; raises KeyError, TypeError or ValueError on other data."""
    def specs(items: list) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(str(s["name"]), str(s["datatype"]), tuple(int(d) for d in s.get("shape", ())))
                     for s in items)
    return Signature(specs(data.get("inputs", ())), specs(data.get("outputs", ())))


def signature_json(signature: Signature) -> str:
    return json.dumps(signature_dict(signature), separators=(",", ":"))


def _signature(text: str | None) -> Signature:
    if not text:
        return Signature()
    try:
        return signature_from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError):
        return Signature()  # written by someone else: shown as absent rather than failing reads


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def version_from_catalog(cv: CatalogVersion, record: StageRecord | None) -> ModelVersion:
    """Our view of an MLflow version; the stage comes from the lifecycle store when it knows it."""
    tags = cv.tags
    metrics = {k[len(METRIC_PREFIX):]: f for k, v in tags.items()
               if k.startswith(METRIC_PREFIX) and (f := _float(v)) is not None}
    parameters = {k[len(PARAM_PREFIX):]: v for k, v in tags.items() if k.startswith(PARAM_PREFIX)}
    artifact = None
    if tags.get(SHA256_TAG):
        try:
            fmt = ArtifactFormat[tags.get(FORMAT_TAG, "UNSPECIFIED")]
        except KeyError:
            fmt = ArtifactFormat.UNSPECIFIED
        artifact = Artifact(cv.source, fmt, tags[SHA256_TAG], int(_float(tags.get(SIZE_TAG, "0")) or 0))
    elif cv.source:
        artifact = Artifact(cv.source, ArtifactFormat.UNSPECIFIED, "", 0)
    if record is None:
        stage = _stage_from_tag(tags.get(STAGE_TAG))
        since = _time(tags.get(STAGE_SINCE_TAG)) or cv.create_time
    else:
        stage, since = record.stage, record.since
    return ModelVersion(
        model_name=cv.model_name, version=cv.version, stage=stage, description=cv.description,
        aliases=tuple(sorted(a for a in cv.aliases if a != PRODUCTION_ALIAS)), artifact=artifact,
        source_run_id=cv.run_id, metrics=metrics, parameters=parameters, tags=user_tags(tags),
        signature=_signature(tags.get(SIGNATURE_TAG)), created_by=tags.get(CREATED_BY_TAG, ""),
        create_time=cv.create_time, update_time=cv.update_time, stage_update_time=since)


def _stage_from_tag(text: str | None) -> Stage:
    for stage, name in STAGE_NAMES.items():
        if name == text:
            return stage
    return Stage.DEVELOPMENT


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


# --- models ------------------------------------------------------------------------------

def gate_dict(gate: MetricGate) -> dict:
    return {"metric": gate.metric, "comparison": gate.comparison.name, "threshold": gate.threshold,
            "target_stage": gate.target_stage.name}


def gate_from_dict(data: dict) -> MetricGate:
    """The inverse of gate_dict; raises KeyError, TypeError or ValueError on other data."""
    return MetricGate(str(data["metric"]), Comparison[data["comparison"]], float(data["threshold"]),
                      Stage[data.get("target_stage", Stage.PRODUCTION.name)])


def policy_json(gates: tuple[MetricGate, ...]) -> str:
    return json.dumps([gate_dict(g) for g in gates], separators=(",", ":"))


def _gates(text: str | None) -> tuple[MetricGate, ...]:
    if not text:
        return ()
    try:
        return tuple(gate_from_dict(g) for g in json.loads(text))
    except (ValueError, KeyError, TypeError):
        return ()


def model_from_catalog(cm: CatalogModel) -> RegisteredModel:
    return RegisteredModel(name=cm.name, description=cm.description, tags=user_tags(cm.tags),
                           gates=_gates(cm.tags.get(POLICY_TAG)), aliases=user_aliases(cm.aliases),
                           create_time=cm.create_time, update_time=cm.update_time)

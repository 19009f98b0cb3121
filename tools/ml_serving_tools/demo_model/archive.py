"""Builds `recommendation-model-v1.mar` and `-v2.mar` with torch-model-archiver.

Builds are cached under `out_dir/<key>/`, the key hashing everything that shapes the archives
(this package's code, which holds the data seed and the training settings, and the torch and
archiver versions), so a second call returns at once. A build is assembled in a scratch folder
and renamed into place, so concurrent builders never see half an archive.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from . import data

MODEL_NAME = "recommendation-model"
TORCHSERVE_VERSIONS = {"v1": "1", "v2": "2"}  # TorchServe versions, like MLflow's integer ones
BUILD_FILE = "build.json"
_SOURCES = ("data.py", "train.py", "handler.py", "archive.py")
DESCRIPTIONS = {
    "v1": "logistic regression on demographics, category, price and popularity; no context, so it ranks "
          "items alike for every user",
    "v2": "MLP (64, 32) on all features, taste vectors included, plus the request context (device); "
          "personalised",
}


@dataclass(frozen=True)
class DemoArtifact:
    model_name: str
    version: str  # "v1" / "v2", what the handler answers as model_version
    torchserve_version: str  # the archive's --version
    path: Path
    sha256: str
    metrics: dict[str, float]
    signature: dict[str, Any]
    description: str = ""

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def signature(context_features: dict[str, list[str]]) -> dict[str, Any]:
    """Input and output tensors in Open Inference Protocol terms (shape -1: any length). Asked
    with tensors (the mesh's OIP sends `{"user_id": [123], ...}`), the handler answers the ranked
    list as the two parallel output tensors `item_ids` and `scores`."""
    return {
        "inputs": [
            {"name": "user_id", "datatype": "INT64", "shape": [1], "optional": False},
            {"name": "item_ids", "datatype": "INT64", "shape": [-1], "optional": True},
            {"name": "item_id", "datatype": "INT64", "shape": [1], "optional": True},
            {"name": "top_k", "datatype": "INT64", "shape": [1], "optional": True},
            {"name": "context", "datatype": "BYTES", "shape": [1], "optional": True,
             "parameters": {"content_type": "application/json", "fields": context_features}},
        ],
        "outputs": [
            {"name": "item_ids", "datatype": "INT64", "shape": [-1]},
            {"name": "scores", "datatype": "FP32", "shape": [-1]},
        ],
    }


def cache_key() -> str:
    digest = hashlib.sha256()
    here = Path(__file__).parent
    for name in _SOURCES:
        digest.update(name.encode() + b"\0" + (here / name).read_bytes() + b"\0")
    for dist in ("torch", "torch-model-archiver", "numpy"):
        digest.update(f"{dist}=={metadata.version(dist)}\0".encode())
    digest.update(f"seed={data.SEED}".encode())
    return digest.hexdigest()[:16]


def _archiver() -> list[str]:
    cli = Path(sys.executable).parent / "torch-model-archiver"
    return [str(cli)] if cli.exists() else [sys.executable, "-m", "model_archiver.model_packaging"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _build(folder: Path) -> dict[str, Any]:
    """Trains both versions and archives them into `folder`; returns the build record."""
    from . import train  # torch is imported only when a build is needed

    handler = Path(__file__).parent / "handler.py"
    record: dict[str, Any] = {"key": cache_key(), "artifacts": {}}
    jobs = []
    for version, model in train.train_all().items():
        staging = folder / f"staging-{version}"
        model.save(staging)
        extra = ",".join(str(staging / f) for f in ("model_meta.json", "features.npz"))
        command = _archiver() + [
            "--model-name", MODEL_NAME, "--version", TORCHSERVE_VERSIONS[version],
            "--serialized-file", str(staging / train.WEIGHTS_FILE), "--handler", str(handler),
            "--extra-files", extra, "--export-path", str(staging), "--force",
        ]
        # The archiver copies its inputs to $TMPDIR/<model name> and deletes that folder after:
        # a TMPDIR of its own lets both versions (and other builders) archive at the same time.
        scratch_tmp = staging / "tmp"
        scratch_tmp.mkdir()
        jobs.append((version, model, staging, subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "TMPDIR": str(scratch_tmp)})))
    for version, model, staging, proc in jobs:
        output, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"torch-model-archiver failed for {version}:\n{output}")
        mar = folder / f"{MODEL_NAME}-{version}.mar"
        (staging / f"{MODEL_NAME}.mar").rename(mar)
        shutil.rmtree(staging)
        record["artifacts"][version] = {
            "model_name": MODEL_NAME, "version": version,
            "torchserve_version": TORCHSERVE_VERSIONS[version], "file": mar.name,
            "sha256": _sha256(mar), "metrics": model.metrics,
            "signature": signature(model.context_features), "description": DESCRIPTIONS[version],
        }
    (folder / BUILD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _artifacts(folder: Path, record: dict[str, Any]) -> dict[str, DemoArtifact]:
    return {
        version: DemoArtifact(
            model_name=a["model_name"], version=version, torchserve_version=a["torchserve_version"],
            path=folder / a["file"], sha256=a["sha256"], metrics=a["metrics"], signature=a["signature"],
            description=a.get("description", ""),
        )
        for version, a in record["artifacts"].items()
    }


def build_demo_models(out_dir: str | os.PathLike) -> dict[str, DemoArtifact]:
    """Both versions' archives, from the cache under `out_dir` or freshly built there."""
    out_dir = Path(out_dir)
    final = out_dir / cache_key()
    if (final / BUILD_FILE).is_file():
        return _artifacts(final, json.loads((final / BUILD_FILE).read_text()))
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=out_dir))
    scratch.chmod(0o755)  # mkdtemp makes it private; a model server may run as another user
    try:
        record = _build(scratch)
        try:
            scratch.rename(final)
        except OSError:  # another builder finished first: theirs is as good as ours
            if not (final / BUILD_FILE).is_file():
                raise
            record = json.loads((final / BUILD_FILE).read_text())
        return _artifacts(final, record)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

"""The archives: valid TorchServe .mar files with everything the handler reads, described for
the registry, and cached so a second build costs nothing."""

from __future__ import annotations

import hashlib
import json
import time
import zipfile

import pytest

from ml_serving_tools.demo_model import MODEL_NAME, archive, build_demo_models


def test_archives_are_mar_files(artifacts):
    assert set(artifacts) == {"v1", "v2"}
    for version, artifact in artifacts.items():
        assert artifact.path.name == f"{MODEL_NAME}-{version}.mar"
        with zipfile.ZipFile(artifact.path) as mar:
            assert mar.testzip() is None
            assert set(mar.namelist()) == {"MAR-INF/MANIFEST.json", "handler.py", "model.pt",
                                           "model_meta.json", "features.npz"}
            manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
            meta = json.loads(mar.read("model_meta.json"))
        assert manifest["model"] == {"modelName": MODEL_NAME, "serializedFile": "model.pt",
                                     "handler": "handler.py", "modelVersion": artifact.torchserve_version}
        assert meta["model_version"] == version and meta["metrics"] == artifact.metrics
        assert hashlib.sha256(artifact.path.read_bytes()).hexdigest() == artifact.sha256


def test_signature_describes_the_tensors(artifacts):
    sig = artifacts["v2"].signature
    inputs = {t["name"]: t for t in sig["inputs"]}
    assert inputs["user_id"] == {"name": "user_id", "datatype": "INT64", "shape": [1], "optional": False}
    assert inputs["top_k"]["optional"] and inputs["item_ids"]["shape"] == [-1]
    assert inputs["context"]["parameters"]["fields"] == {"device": ["desktop", "mobile"]}
    assert artifacts["v1"].signature["inputs"][-1]["parameters"]["fields"] == {}
    assert [(t["name"], t["datatype"]) for t in sig["outputs"]] == [("item_ids", "INT64"), ("scores", "FP32")]
    assert "logistic" in artifacts["v1"].description and "MLP" in artifacts["v2"].description
    json.dumps(artifacts["v1"].to_json())  # what the registry stores


def test_second_build_is_served_from_the_cache(artifacts, demo_cache, monkeypatch):
    def no_rebuild(folder):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(archive, "_build", no_rebuild)
    started = time.monotonic()
    again = build_demo_models(demo_cache)
    assert time.monotonic() - started < 0.5
    assert again == artifacts
    assert [p.name for p in demo_cache.iterdir()] == [archive.cache_key()]  # no leftovers


def test_cache_key_follows_the_code(monkeypatch):
    key = archive.cache_key()
    assert key == archive.cache_key() and len(key) == 16
    monkeypatch.setattr(archive.data, "SEED", archive.data.SEED + 1)
    assert archive.cache_key() != key


def test_a_failed_build_leaves_nothing(tmp_path, monkeypatch):
    def broken(folder):
        (folder / "half.mar").write_bytes(b"x")
        raise RuntimeError("archiver exploded")

    monkeypatch.setattr(archive, "_build", broken)
    with pytest.raises(RuntimeError, match="archiver exploded"):
        build_demo_models(tmp_path)
    assert list(tmp_path.iterdir()) == []

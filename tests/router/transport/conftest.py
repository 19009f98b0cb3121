"""The Router over the in-process mesh (every service, tokens checked), with the session's shared
TorchServe, MLflow, S3, PostgreSQL and Redis: one registered model with two versions (both echo
handlers, loaded through the Inference service), which experiments split traffic between."""

from __future__ import annotations

import pytest

from ml_serving import InferenceClient, RegistryClient, RouterClient

from ...inference.torchserve_models import archive
from ...registry.conftest import unique_name


@pytest.fixture(scope="session")
def echo_archive(tmp_path_factory) -> bytes:
    work, out = tmp_path_factory.mktemp("router-handlers"), tmp_path_factory.mktemp("router-archives")
    return archive("echo", "echo", "1.0", work, out).read_bytes()


@pytest.fixture(scope="session")
async def two_versions(mesh, token, echo_archive):
    """A model with versions 1 (Production) and 2 (Staging), both loaded: its name."""
    addr = f"127.0.0.1:{mesh.port}"
    name = unique_name("ab")
    async with RegistryClient(addr, token=token) as registry, InferenceClient(addr, token=token) as inference:
        for _ in range(2):
            await registry.create_model_version(name, artifact=echo_archive, artifact_file_name="model.mar",
                                                create_model_if_missing=True)
        for version, stage in (("1", "STAGE_STAGING"), ("1", "STAGE_PRODUCTION"), ("2", "STAGE_STAGING")):
            await registry.transition_stage(name, version, stage)
        for version in ("1", "2"):
            await inference.load_model(name, version=version, wait_until_ready=True, timeout=120)
        yield name
        for version in ("1", "2"):
            try:
                await inference.unload_model(name, version, timeout=60)
            except Exception:  # noqa: BLE001 - best effort: the TorchServe is shared
                pass


@pytest.fixture
async def router(mesh, token):
    async with RouterClient(f"127.0.0.1:{mesh.port}", token=token) as client:
        yield client


def experiment(name: str, model: str, *, weights=(5000, 5000), **fields) -> dict:
    """An experiment of two variants of `model`: control on version 1, treatment on version 2."""
    return {"name": name, "variants": [
        {"name": "control", "model_name": model, "model_version": "1", "weight_bps": weights[0], "control": True},
        {"name": "treatment", "model_name": model, "model_version": "2", "weight_bps": weights[1]}],
        "metrics": [{"name": "click", "kind": "OUTCOME_KIND_BINARY"}], **fields}

"""Inference over the in-process mesh (every service, tokens checked), with the session's shared
TorchServe, MLflow, S3 and PostgreSQL: models are registered in the Registry from real archives
and loaded into TorchServe through the Inference service itself."""

from __future__ import annotations

import pytest

from ml_serving import InferenceClient, RegistryClient

from ...registry.conftest import unique_name
from ..torchserve_models import archive


@pytest.fixture(scope="session")
def archives(tmp_path_factory) -> dict[str, bytes]:
    """Archive bytes by handler kind (echo, error, slow, stream, batch, broken)."""
    work, out = tmp_path_factory.mktemp("inference-handlers"), tmp_path_factory.mktemp("inference-archives")
    return {kind: archive(kind, kind, "1.0", work, out).read_bytes()
            for kind in ("echo", "error", "slow", "stream", "broken")}


@pytest.fixture
async def clients(mesh, token):
    addr = f"127.0.0.1:{mesh.port}"
    async with RegistryClient(addr, token=token) as registry, InferenceClient(addr, token=token) as inference:
        yield registry, inference


async def register(registry: RegistryClient, archive_bytes: bytes, prefix: str = "inf") -> str:
    """A new registered model with version 1 holding `archive_bytes`; its name."""
    name = unique_name(prefix)
    await registry.create_model_version(name, artifact=archive_bytes, artifact_file_name="model.mar",
                                        create_model_if_missing=True)
    return name


@pytest.fixture(scope="session")
async def loaded_models(mesh, token, archives):
    """One registered, loaded model per handler kind (version 1), shared by the session's tests."""
    addr = f"127.0.0.1:{mesh.port}"
    names = {}
    async with RegistryClient(addr, token=token) as registry, InferenceClient(addr, token=token) as inference:
        for kind in ("echo", "error", "slow", "stream"):
            names[kind] = await register(registry, archives[kind], kind)
            await inference.load_model(names[kind], version="1", wait_until_ready=True, timeout=120)
        yield names
        for name in names.values():
            try:
                await inference.unload_model(name, "1", timeout=60)
            except Exception:  # noqa: BLE001 - best effort: the TorchServe may be shared
                pass

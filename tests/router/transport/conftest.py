"""The Router over the in-process mesh (every service, tokens checked), with the session's shared
TorchServe, MLflow, S3, PostgreSQL and Redis: one registered model with two versions (both echo
handlers, loaded through the Inference service), which experiments split traffic between."""

from __future__ import annotations

import contextlib

import pytest

from mnbara.mlserving.router.v1 import router_pb2 as pb

from ml_serving import InferenceClient, RegistryClient, RouterClient, errors

from ...inference.torchserve_models import archive
from ...registry.conftest import unique_name


@pytest.fixture(scope="session")
def echo_archive(tmp_path_factory) -> bytes:
    work, out = tmp_path_factory.mktemp("router-handlers"), tmp_path_factory.mktemp("router-archives")
    return archive("echo", "echo", "1.0", work, out).read_bytes()


@pytest.fixture(scope="session")
def flaky_archive(tmp_path_factory) -> bytes:
    """A handler that fails on 30% of inputs (see torchserve_models: "flaky")."""
    work, out = tmp_path_factory.mktemp("router-flaky"), tmp_path_factory.mktemp("router-flaky-archives")
    return archive("flaky", "flaky", "1.0", work, out).read_bytes()


@contextlib.asynccontextmanager
async def served_model(addr: str, token: str, archives: list[bytes], prefix: str = "ab"):
    """A new model whose version i+1 holds archives[i], every one loaded; version 1 is in
    Production, the others in Staging. Yields its name; unloads them afterwards."""
    name = unique_name(prefix)
    versions = [str(i + 1) for i in range(len(archives))]
    async with RegistryClient(addr, token=token) as registry, InferenceClient(addr, token=token) as inference:
        for artifact in archives:
            await registry.create_model_version(name, artifact=artifact, artifact_file_name="model.mar",
                                                create_model_if_missing=True)
        for version in versions:
            await registry.transition_stage(name, version, "STAGE_STAGING")
        await registry.transition_stage(name, "1", "STAGE_PRODUCTION")
        for version in versions:
            await inference.load_model(name, version=version, wait_until_ready=True, timeout=120)
        try:
            yield name
        finally:
            for version in versions:
                try:
                    await inference.unload_model(name, version, timeout=60)
                except Exception:  # noqa: BLE001 - best effort: the TorchServe is shared
                    pass


@pytest.fixture(scope="session")
async def two_versions(mesh, token, echo_archive):
    """A model with versions 1 (Production) and 2 (Staging), both loaded: its name."""
    async with served_model(f"127.0.0.1:{mesh.port}", token, [echo_archive, echo_archive]) as name:
        yield name


@pytest.fixture
async def created(router):
    """create(fields, paused=False): an experiment, stopped after the test (a model has one running)."""
    names: list[str] = []

    async def create(fields: dict | pb.Experiment, *, paused: bool = False) -> pb.Experiment:
        message = (await router.create_experiment(fields, paused=paused)).experiment
        names.append(message.name)
        return message

    yield create
    for name in names:
        try:
            await router.stop_experiment(pb.StopExperimentRequest(name=name))
        except errors.FailedPreconditionError:
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

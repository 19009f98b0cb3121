"""Inference end to end: per test module, a private TorchServe and a private stack (a mesh server
process and Envoy, tokens checked) whose deployer follows the Registry's lifecycle (grace 1 s,
reconcile every 1 s), so tests can restart or stop that TorchServe and kill its workers.

The deployer serves every Staging and Production version its Registry knows, and the session's
Registry (MLflow's database and the mesh's) holds those of other tests, of earlier runs and of
other sessions running at the same time, some with archives that cannot start: they would all
be loaded into the private TorchServe. So the private stacks have a Registry of their own: an
MLflow server on a fresh database for this package's tests, and a fresh mesh database per
module, both dropped afterwards. S3 and Redis are the session's (model names are unique, Redis
keys prefixed).

Nothing here imports `inference.*` (the Open Inference Protocol's generated modules): the
tritonclient test runs `tritonclient.grpc` in a subprocess and must stay free of them.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest

from ml_serving import RegistryClient
from ml_serving_tools import stack as stack_module
from ml_serving_tools.demo_model import DemoArtifact, build_demo_models
from ml_serving_tools.devservices import create_database_if_missing, drop_database, start_mlflow
from ml_serving_tools.devservices.torchserve import TorchServeServer, start_torchserve
from ml_serving_tools.paths import STATE_DIR

from ...registry.conftest import unique_name
from ...support import Reply, start_stack_on_free_ports
from ..torchserve_models import archive

INFERENCE_SERVICE = "mnbara.mlserving.inference.v1.InferenceService"


def _in_thread(fn: Callable[[], Any]) -> Any:
    """Run blocking setup code (which may call asyncio.run) off the test session's event loop."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


@dataclass
class PrivateMesh:
    """A private TorchServe and a stack on it whose deployer is on."""

    stack: stack_module.Stack
    torchserve: TorchServeServer
    state: Path  # where the TorchServe keeps its files (its model store, ...)
    new_state: Callable[[], Path]  # a fresh folder, for a TorchServe that starts from nothing
    models: list[str] = field(default_factory=list)  # registered here; deleted at teardown

    @property
    def token(self) -> str:
        return self.stack.token

    def rest(self, method: str, path: str, body=None, timeout: float = 30.0) -> Reply:
        """One REST call through Envoy (a prediction may wait for a worker that is still starting)."""
        return rest_call(self.stack.front_door, method, path, body, self.stack.token, timeout)

    def stop_torchserve(self) -> None:
        self.torchserve.stop()

    def start_torchserve(self, *, same_model_store: bool) -> None:
        """A new TorchServe on the same ports as the one before: a restart of that one (its files,
        model store included, as they were), or, not `same_model_store`, its replacement starting
        from an empty folder (as a new pod would)."""
        if not same_model_store:
            self.state = self.new_state()
        self.torchserve = start_torchserve(self.state, ports=dict(self.torchserve.ports))

    def registry(self) -> RegistryClient:
        return RegistryClient(self.stack.grpc_addr, token=self.stack.token, timeout=60)

    async def register(self, artifact: bytes | Path, *, prefix: str = "e2e", name: str | None = None,
                       signature: dict | None = None) -> tuple[str, str]:
        """A new version (of a new model unless `name` is given) holding `artifact`: (name, version)."""
        if name is None:
            name = unique_name(prefix)
            self.models.append(name)
        if isinstance(artifact, Path):  # bytes: sent inline, so create_model_if_missing applies
            artifact = artifact.read_bytes()
        async with self.registry() as registry:
            created = await registry.create_model_version(
                name, artifact=artifact, artifact_file_name="model.mar", create_model_if_missing=True,
                signature=signature, metrics={"auc": 0.9})
        return name, created.model_version.version

    def transition(self, name: str, version: str, stage: str) -> dict:
        """A stage change over the Registry's REST API, through Envoy."""
        reply = self.rest("POST", f"/api/v1/registry/models/{name}/versions/{version}:transitionStage",
                          {"toStage": stage, "reason": "e2e"})
        assert reply.status == 200, (reply.status, reply.body[:500])
        return reply.json()

    def promote(self, name: str, version: str) -> dict:
        """Development -> Staging -> Production."""
        self.transition(name, version, "STAGE_STAGING")
        return self.transition(name, version, "STAGE_PRODUCTION")


def signature_of(artifact: DemoArtifact) -> dict:
    """The demo model's signature as the Registry's ModelSignature takes it (name, datatype, shape)."""
    return {side: [{"name": t["name"], "datatype": t["datatype"], "shape": t["shape"]}
                   for t in artifact.signature[side]] for side in ("inputs", "outputs")}


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll `check` until it returns without raising AssertionError (its value is returned), at most
    `timeout` seconds; then fail with `what` and the last assertion."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError as error:
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what}: not within {timeout:g} s; last: {error}") from None
        await asyncio.sleep(interval)


def timed(started: float) -> float:
    return round(time.monotonic() - started, 2)


@pytest.fixture(scope="session")
def private_mlflow(tmp_path_factory, database_url, s3_endpoint) -> str:
    """An MLflow server on a database of its own (fresh, dropped afterwards), for the private stacks."""
    dbname = f"mlflow_e2e_{uuid.uuid4().hex[:10]}"
    server = None
    try:
        server = _in_thread(lambda: start_mlflow(tmp_path_factory.mktemp("private-mlflow"), database_url,
                                                 s3_endpoint, dbname=dbname))
        yield server.uri
    finally:
        if server is not None:
            server.stop()
        _in_thread(lambda: drop_database(database_url, dbname))


@pytest.fixture(scope="module")
def private_mesh(tmp_path_factory, stack_env, dev_keys, database_url, private_mlflow):
    state = tmp_path_factory.mktemp("private-mesh")
    torchserve = start_torchserve(state)
    dbname = f"mlserving_e2e_{uuid.uuid4().hex[:10]}"
    db_url = None
    running = None
    try:
        db_url = _in_thread(lambda: create_database_if_missing(database_url, dbname))
        env = {**stack_env, **torchserve.endpoints.env(), "DATABASE_URL": db_url, "MLFLOW_TRACKING_URI": private_mlflow,
               "INFERENCE_DEPLOYER_ENABLED": "true", "INFERENCE_DEPLOYER_GRACE_SECONDS": "1",
               "INFERENCE_DEPLOYER_RECONCILE_SECONDS": "1", "MESH_HEALTH_PROBE_SECONDS": "0.5"}
        running = start_stack_on_free_ports(state, env, dev_keys)
        mesh = PrivateMesh(running, torchserve, state, lambda: tmp_path_factory.mktemp("torchserve-replaced"))
        yield mesh
        torchserve = mesh.torchserve  # a test may have replaced it
        _in_thread(lambda: asyncio.run(_delete_models(mesh)))
    finally:
        if running is not None:
            running.stop()
        torchserve.stop()
        if db_url is not None:
            _in_thread(lambda: drop_database(database_url, dbname))


async def _delete_models(mesh: PrivateMesh) -> None:
    async with mesh.registry() as registry:
        for name in mesh.models:
            try:
                await registry.delete_registered_model(name, force=True)
            except Exception:  # noqa: BLE001 - best effort: the database is dropped anyway
                pass


@pytest.fixture(scope="session")
def demo_artifacts() -> dict[str, DemoArtifact]:
    """The demo recommendation model, v1 and v2 (built once, cached under the state dir by a key
    over its code and dependencies)."""
    return build_demo_models(STATE_DIR / "demo-models")


@pytest.fixture(scope="session")
def handler_archives(tmp_path_factory) -> dict[str, bytes]:
    """Archive bytes of the purpose-built test handlers, by kind."""
    work, out = tmp_path_factory.mktemp("e2e-handlers"), tmp_path_factory.mktemp("e2e-archives")
    kinds = ("echo", "slow")
    with ThreadPoolExecutor(len(kinds)) as pool:
        futures = {kind: pool.submit(archive, kind, kind, "1.0", work, out) for kind in kinds}
        return {kind: future.result().read_bytes() for kind, future in futures.items()}


def rest_call(front_door: str, method: str, path: str, body, token: str, timeout: float) -> Reply:
    """As tests/support.py's `call`, with a timeout of the caller's."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://{front_door}{path}", data=data, method=method, headers={
        "content-type": "application/json", "authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Reply(response.status, response.headers.get("content-type", ""), response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers.get("content-type", ""), error.read())


def json_body(reply: Reply) -> Any:
    try:
        return json.loads(reply.body or b"{}")
    except ValueError:
        return {"raw": reply.body[:300].decode(errors="replace")}

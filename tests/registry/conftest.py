"""Registry fixtures: in-process mesh servers hosting the registry over the real MLflow, S3 and
PostgreSQL of the test session, clients with every scope, and artifacts to register."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import boto3
import pytest
from ml_serving import RegistryClient

from ml_serving_server.app import build_server
from ml_serving_server.services.registry import SERVICE as REGISTRY
from ml_serving_server.services.registry.settings import RegistrySettings

from ..support import test_runtime


def mar_bytes(name: str = "demo", payload: bytes = b"weights") -> bytes:
    """A TorchServe model archive: a zip with MAR-INF/MANIFEST.json and the model's files."""
    manifest = {"createdOn": "29/11/2026 12:00:00", "runtime": "python", "archiverVersion": "0.12.0",
                "model": {"modelName": name, "modelVersion": "1.0", "handler": "handler.py",
                          "serializedFile": "model.pt"}}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps(manifest))
        archive.writestr("handler.py", "def handle(data, context):\n    return data\n")
        archive.writestr("model.pt", payload)
    return out.getvalue()


def unique_name(prefix: str = "model") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def registry_settings(mlflow_uri, s3_endpoint) -> RegistrySettings:
    return registry_settings_for(mlflow_uri, s3_endpoint)


def registry_settings_for(mlflow_uri: str, s3_endpoint, **overrides) -> RegistrySettings:
    values = dict(mlflow_tracking_uri=mlflow_uri, s3_endpoint_url=s3_endpoint.url,
                  s3_access_key_id=s3_endpoint.access_key_id, s3_secret_access_key=s3_endpoint.secret_access_key,
                  s3_region=s3_endpoint.region, artifact_root="s3://mlserving-models/registry-tests",
                  mlflow_timeout_seconds=3.0, s3_timeout_seconds=3.0, heartbeat_seconds=1.0)
    values.update(overrides)
    return RegistrySettings(**values)


async def start_registry(database_url: str, settings: RegistrySettings, keys):
    runtime = test_runtime(keys=keys, database_url=database_url, services=("registry",))
    return await build_server(runtime, packages=(REGISTRY,), service_settings={"registry": settings})


@pytest.fixture(scope="session")
async def registry_server(database_url, registry_settings, dev_keys):
    """A registry replica in this process, checking tokens."""
    server = await start_registry(database_url, registry_settings, dev_keys)
    yield server
    await server.stop(1.0)


@pytest.fixture
async def registry(registry_server, token):
    async with RegistryClient(f"127.0.0.1:{registry_server.port}", token=token) as client:
        yield client


@pytest.fixture(scope="session")
def s3_client(s3_endpoint):
    return boto3.client("s3", endpoint_url=s3_endpoint.url, aws_access_key_id=s3_endpoint.access_key_id,
                        aws_secret_access_key=s3_endpoint.secret_access_key, region_name=s3_endpoint.region)

"""The registry end to end through Envoy: REST at /api/v1/registry, the seed's `MLflowModelRegistry`
over native gRPC through the front door, a 200 MB artifact streamed in chunks, and what a plain
MlflowClient and the S3 bucket hold afterwards. A real mesh process and Envoy (the `stack`)."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest
from mlflow.tracking import MlflowClient
from ml_serving import MLflowModelRegistry, InvalidArgumentError
from mnbara.mlserving.registry.v1 import registry_pb2 as pb

from ...support import call
from ..conftest import mar_bytes, unique_name


def rest(stack, method: str, path: str, body=None):
    reply = call(stack.front_door, method, f"/api/v1/registry{path}", body, token=stack.token)
    return reply.status, json.loads(reply.body or b"{}")


def test_the_lifecycle_over_rest(stack, mlflow_uri):
    name = unique_name("rest")
    status, created = rest(stack, "POST", "/models", {"name": name, "description": "over REST"})
    assert status == 200 and created["registeredModel"]["name"] == name
    status, error = rest(stack, "POST", "/models", {"name": name})
    assert status == 409 and error["details"][0]["reason"] == "MODEL_ALREADY_EXISTS"
    for payload in (b"one", b"two"):
        artifact = base64.b64encode(mar_bytes(name, payload)).decode()
        status, version = rest(stack, "POST", f"/models/{name}/versions",
                               {"artifact": artifact, "artifactFileName": "model.mar", "metrics": {"auc": 0.9}})
        assert status == 200, version
    for version in ("1", "2"):
        for stage in ("STAGE_STAGING", "STAGE_PRODUCTION"):
            status, moved = rest(stack, "POST", f"/models/{name}/versions/{version}:transitionStage",
                                 {"toStage": stage, "reason": "e2e"})
            assert status == 200, moved
    assert moved["archivedVersion"]["version"] == "1" and moved["archivedVersion"]["stage"] == "STAGE_ARCHIVED"
    status, resolved = rest(stack, "GET", f"/models/{name}/resolve")
    assert status == 200 and resolved["modelVersion"]["version"] == "2"
    status, history = rest(stack, "GET", f"/models/{name}/transitions")
    assert [t["toStage"] for t in history["transitions"]][:2] == ["STAGE_PRODUCTION", "STAGE_ARCHIVED"]
    assert MlflowClient(mlflow_uri).get_model_version_by_alias(name, "production").version == "2"

    status, error = rest(stack, "POST", f"/models/{name}/versions/1:transitionStage", {"toStage": "STAGE_PRODUCTION"})
    assert status == 400 and error["details"][0]["reason"] == "INVALID_TRANSITION"  # FAILED_PRECONDITION: 400
    status, error = rest(stack, "GET", f"/models/{name}/versions/9")
    assert status == 404 and error["details"][0]["reason"] == "VERSION_NOT_FOUND"
    status, error = rest(stack, "POST", "/models", {"name": "no spaces allowed"})
    assert status == 400 and error["details"][0]["metadata"]["field"] == "registered_model.name"


def test_a_reader_cannot_promote(stack):
    name = unique_name("scopes")
    assert rest(stack, "POST", "/models", {"name": name})[0] == 200
    reader = stack.mint(["registry.read"], "reader")
    reply = call(stack.front_door, "POST", f"/api/v1/registry/models/{name}/versions/1:transitionStage",
                 {"toStage": "STAGE_STAGING"}, token=reader)
    assert reply.status == 403


@pytest.fixture
def big_artifact(tmp_path):
    """A 200 MB TorchServe archive (stored, not compressed: weights barely compress)."""
    import zipfile
    path = tmp_path / "big.mar"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": "big", "modelVersion": "1"}}))
        with archive.open("model.pt", "w", force_zip64=True) as weights:
            block = os.urandom(1 << 20)
            for i in range(200):
                weights.write(block[i:] + block[:i])
    return path


async def test_the_seed_client_through_envoy_with_a_200_mb_artifact(stack, big_artifact, s3_client, mlflow_uri):
    registry = MLflowModelRegistry(stack.front_door, token=stack.token, timeout=120)
    name = unique_name("seed")
    await registry.create_registered_model(name=name, description="Product recommendation model")
    created = (await registry.create_model_version(name, artifact=big_artifact)).model_version
    expected = hashlib.sha256(big_artifact.read_bytes()).hexdigest()
    assert created.artifact_sha256 == expected and created.artifact_size_bytes == big_artifact.stat().st_size
    bucket, _, key = created.artifact_uri[len("s3://"):].partition("/")
    digest = hashlib.sha256()
    for chunk in s3_client.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(1 << 20):
        digest.update(chunk)
    assert digest.hexdigest() == expected  # the bytes in the bucket are the bytes sent
    assert MlflowClient(mlflow_uri).get_model_version(name, "1").source == created.artifact_uri

    with pytest.raises(InvalidArgumentError) as raised:  # a checksum that does not match stores nothing
        await registry.upload_artifact(name, b"x" * 10, file_name="m.mar")
    assert raised.value.reason == "ARTIFACT_INVALID"
    await registry.close()

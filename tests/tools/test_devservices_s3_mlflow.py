"""ml_serving_tools.devservices: S3 (SeaweedFS) and MLflow, against real processes.

The session's S3 and MLflow (`s3_endpoint`, `mlflow_uri`: what `make test` found or started)
carry the round trips; a second, embedded SeaweedFS in a temporary state dir shows the
find-or-start reuse; a private MLflow (`start_mlflow`) is killed outright and restarted on
its port. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ml_serving_tools import devservices
from ml_serving_tools.devservices import s3 as s3_module
from ml_serving_tools.devservices import state as state_module


@pytest.fixture(scope="module", autouse=True)
def quiet_fast_mlflow_client():
    """The MLflow client in this process: no telemetry, and a dead server fails a call at once
    instead of after minutes of retries."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        yield


def _get(url: str, host: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --------------------------------------------------------------------------- pure parts


def test_s3_endpoint_env_names_every_variable():
    endpoint = devservices.S3Endpoint("http://127.0.0.1:1234", "key", "secret")
    assert endpoint.env() == {
        "S3_ENDPOINT_URL": "http://127.0.0.1:1234", "AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_DEFAULT_REGION": "us-east-1", "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:1234",
    }
    assert devservices.S3Endpoint.from_env(endpoint.env()) == endpoint
    assert devservices.S3Endpoint.from_env({}) is None


def test_weed_gets_every_port_explicitly(tmp_path):
    ports = s3_module._choose_ports(tmp_path, fresh=True)
    assert len(set(ports.values())) == len(ports) == 10
    assert ports["admin.port.grpc"] == ports["admin.port"] + 10000  # where weed's worker dials it
    cmd = s3_module.weed_command(Path("weed"), tmp_path, tmp_path / "data", tmp_path / "s3.json", ports)
    for flag, port in ports.items():
        assert f"-{flag}={port}" in cmd
    assert "-ip.bind=127.0.0.1" in cmd


def test_a_recorded_server_started_with_another_config_is_not_reused(tmp_path):
    rec = state_module.Embedded("mlflow", 2**22 + 1, 1, "http://127.0.0.1:1", "mlflow", "", "", config="a")
    state_module.record(tmp_path, rec)
    assert state_module.reuse(tmp_path, "mlflow", lambda url: True, config="b") is None
    assert "mlflow" not in state_module.load_state(tmp_path)


# --------------------------------------------------------------------------- S3


@pytest.fixture(scope="module")
def own_s3_state(tmp_path_factory):
    """A state dir of this module's own embedded SeaweedFS, stopped afterwards."""
    state = tmp_path_factory.mktemp("s3-state")
    yield state
    devservices.stop_state_dir(state)


def test_ensure_s3_starts_once_then_reuses(own_s3_state):
    first = devservices.ensure_s3(own_s3_state, force_embedded=True)
    rec = devservices.load_state(own_s3_state)["s3"]
    second = devservices.ensure_s3(own_s3_state, force_embedded=True)
    assert second == first
    assert devservices.load_state(own_s3_state)["s3"].pid == rec.pid
    assert urlsplit(first.url).hostname == "127.0.0.1" and urlsplit(first.url).port == rec.port
    assert devservices.s3_answers(first)
    wrong_keys = devservices.S3Endpoint(first.url, first.access_key_id, "not-the-secret")
    assert not devservices.s3_answers(wrong_keys)
    # The identities file holds the development keys the endpoint was returned with.
    identities = json.loads((own_s3_state / "s3" / "s3.json").read_text())["identities"]
    assert identities[0]["credentials"] == [{"accessKey": first.access_key_id, "secretKey": first.secret_access_key}]


def test_ensure_buckets_is_idempotent(own_s3_state):
    endpoint = devservices.ensure_s3(own_s3_state, force_embedded=True)
    devservices.ensure_buckets(endpoint, "bucket-a", "bucket-b")
    devservices.ensure_buckets(endpoint, "bucket-a")
    names = {b["Name"] for b in endpoint.client().list_buckets()["Buckets"]}
    assert {"bucket-a", "bucket-b"} <= names


def test_put_get_round_trip(s3_endpoint):
    client = s3_endpoint.client()
    key = f"tests/{_name('object')}.bin"
    body = uuid.uuid4().bytes * 1000
    client.put_object(Bucket=devservices.MODELS_BUCKET, Key=key, Body=body)
    try:
        assert client.get_object(Bucket=devservices.MODELS_BUCKET, Key=key)["Body"].read() == body
        listed = client.list_objects_v2(Bucket=devservices.MODELS_BUCKET, Prefix=key)["Contents"]
        assert [(o["Key"], o["Size"]) for o in listed] == [(key, len(body))]
    finally:
        client.delete_object(Bucket=devservices.MODELS_BUCKET, Key=key)


# --------------------------------------------------------------------------- MLflow


def test_mlflow_answers_health(mlflow_uri):
    assert devservices.mlflow_answers(mlflow_uri)
    assert _get(mlflow_uri + "/health")[0] == 200


def test_registered_model_create_get_delete(mlflow_uri):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    name = _name("test-model")
    client.create_registered_model(name, description="devservices test")
    try:
        assert client.get_registered_model(name).description == "devservices test"
    finally:
        client.delete_registered_model(name)
    with pytest.raises(MlflowException) as raised:
        client.get_registered_model(name)
    assert raised.value.error_code == "RESOURCE_DOES_NOT_EXIST"


def test_run_artifact_lands_in_the_mlflow_bucket(mlflow_uri, s3_endpoint, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    experiment_id = client.create_experiment(_name("test-experiment"))
    run = client.create_run(experiment_id)
    artifact = tmp_path / "weights.txt"
    artifact.write_text("0.1 0.2 0.3\n")
    s3 = s3_endpoint.client()
    prefix = f"{experiment_id}/{run.info.run_id}/"
    try:
        client.log_artifact(run.info.run_id, str(artifact), artifact_path="model")
        client.set_terminated(run.info.run_id)
        assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == ["model/weights.txt"]
        objects = s3.list_objects_v2(Bucket=devservices.MLFLOW_BUCKET, Prefix=prefix).get("Contents", [])
        assert [o["Key"] for o in objects] == [f"{prefix}artifacts/model/weights.txt"]
        body = s3.get_object(Bucket=devservices.MLFLOW_BUCKET, Key=objects[0]["Key"])["Body"].read()
        assert body == b"0.1 0.2 0.3\n"
    finally:
        client.delete_experiment(experiment_id)
        for o in s3.list_objects_v2(Bucket=devservices.MLFLOW_BUCKET, Prefix=prefix).get("Contents", []):
            s3.delete_object(Bucket=devservices.MLFLOW_BUCKET, Key=o["Key"])


@pytest.fixture(scope="module")
def private_mlflow(tmp_path_factory, database_url, s3_endpoint):
    """An MLflow of this module's own, on the session's PostgreSQL and S3."""
    server = devservices.start_mlflow(tmp_path_factory.mktemp("mlflow-state"), database_url, s3_endpoint)
    yield server
    server.stop()


def test_private_mlflow_accepts_loopback_host_headers_only(private_mlflow):
    url = private_mlflow.uri + "/api/2.0/mlflow/experiments/get?experiment_id=0"
    port = private_mlflow.port
    # Its own port, or another one (a client through a local proxy sends the proxy's port).
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1:1", "localhost"):
        status, body = _get(url, host)
        assert status == 200, (host, body)
    for host in ("attacker.example", f"attacker.example:{port}", "10.0.0.1"):
        assert _get(url, host)[0] == 403, host


def test_private_mlflow_killed_mid_traffic_restarts_on_its_port(private_mlflow):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=private_mlflow.uri, registry_uri=private_mlflow.uri)
    name = _name("survives-kill")
    client.create_registered_model(name)
    get_url = f"{private_mlflow.uri}/api/2.0/mlflow/registered-models/get?name={name}"
    outcomes: list[bool] = []
    stop = threading.Event()

    def traffic() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                outcomes.append(_get(get_url, timeout=2.0)[0] == 200)
            except (OSError, http.client.HTTPException):
                outcomes.append(False)
                time.sleep(0.05)

    worker = threading.Thread(target=traffic, daemon=True)
    worker.start()
    try:
        _wait(lambda: sum(outcomes) >= 5, 10.0)  # calls succeed before the kill
        port, pid = private_mlflow.port, private_mlflow.pid
        private_mlflow.kill()
        assert not private_mlflow.alive() and not devservices.mlflow_answers(private_mlflow.uri)
        failed_while_down = len(outcomes)
        _wait(lambda: len(outcomes) > failed_while_down and not outcomes[-1], 10.0)
        private_mlflow.restart()
        assert private_mlflow.port == port and private_mlflow.uri == f"http://127.0.0.1:{port}"
        assert private_mlflow.pid != pid and devservices.mlflow_answers(private_mlflow.uri)
        ok_before = sum(outcomes)
        _wait(lambda: sum(outcomes) >= ok_before + 5, 10.0)  # and succeed again after the restart
    finally:
        stop.set()
        worker.join(10)
    assert client.get_registered_model(name).name == name  # nothing lost: it lives in PostgreSQL
    client.delete_registered_model(name)


def _wait(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)

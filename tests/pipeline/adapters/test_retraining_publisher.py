"""MlflowRegistryPublisher against the session's real MLflow, S3 and PostgreSQL, with a Registry
replica in this process: what MLflow and the Registry hold after a publish, idempotency per
retraining run, and what each dependency down or saying no becomes."""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import urlsplit

import pytest
from mlflow.tracking import MlflowClient
from ml_serving import RegistryClient
from mnbara.mlserving.registry.v1 import registry_pb2 as pb

from ml_serving_server.services.pipeline.domain.retraining import Run, RunState, TrainedModel, TrainingFailed, Trigger
from ml_serving_server.services.pipeline.retraining_publisher import MlflowRegistryPublisher
from ml_serving_tools.net import free_port

from ...registry.conftest import mar_bytes, registry_settings_for, start_registry, unique_name
from ...registry.faults import CuttableProxy

SIGNATURE = {"inputs": [{"name": "user_id", "datatype": "INT64", "shape": [-1], "optional": False}],
             "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 5]}]}


@pytest.fixture(scope="module")
async def registry_server(database_url, mlflow_uri, s3_endpoint, dev_keys):
    server = await start_registry(database_url, registry_settings_for(mlflow_uri, s3_endpoint), dev_keys)
    yield server
    await server.stop(1.0)


@pytest.fixture
async def registry(registry_server, token):
    async with RegistryClient(f"127.0.0.1:{registry_server.port}", token=token) as client:
        yield client


@pytest.fixture
async def publisher(mlflow_uri, registry_server, token):
    publisher = await MlflowRegistryPublisher.connect(mlflow_uri, f"127.0.0.1:{registry_server.port}", token=token,
                                                      mlflow_timeout_seconds=5, registry_timeout_seconds=30)
    yield publisher
    await publisher.close()


@pytest.fixture
def mlflow(mlflow_uri) -> MlflowClient:
    return MlflowClient(mlflow_uri)


@pytest.fixture
async def mlflow_proxy(mlflow_uri):
    """A proxy in front of the session's MLflow that can die at an exact request, or hang."""
    proxy = await CuttableProxy("127.0.0.1", urlsplit(mlflow_uri).port).start()
    yield proxy
    await proxy.stop()


def closed_port() -> str:
    return f"127.0.0.1:{free_port()}"


def a_run(model_name: str, attempt: int = 1, run_id: str | None = None) -> Run:
    return Run(run_id=run_id or uuid.uuid4().hex, model_name=model_name, state=RunState.RUNNING,
               trigger=Trigger.ALERT, create_time=datetime.now(timezone.utc), reason="accuracy drifted " * 100,
               alert_id="alert-7", attempt=attempt, max_attempts=3)


def a_model(tmp_path, name: str, accuracy: float = 0.93, payload: bytes = b"weights") -> TrainedModel:
    path = tmp_path / f"{uuid.uuid4().hex[:6]}" / "model.mar"
    path.parent.mkdir()
    path.write_bytes(mar_bytes(name, payload))
    return TrainedModel(artifact_path=path, metrics={"accuracy": accuracy, "loss": 0.2},
                        parameters={"lr": "0.01", "epochs": "3"}, signature=SIGNATURE, description="retrained",
                        tags={"team": "recs"})


def mlflow_runs_of(mlflow: MlflowClient, run: Run) -> list:
    experiment = mlflow.get_experiment_by_name(f"retraining/{run.model_name}")
    return mlflow.search_runs([experiment.experiment_id], filter_string=f"tags.`retraining.run_id` = '{run.run_id}'",
                              order_by=["attributes.start_time ASC"])


async def test_a_publish_logs_the_run_in_mlflow_and_registers_a_staging_version(publisher, registry, mlflow,
                                                                                tmp_path):
    name = unique_name("retrained")
    run, model = a_run(name), a_model(tmp_path, name)
    published = await publisher.publish(run, model)

    logged = mlflow.get_run(published.mlflow_run_id)
    assert logged.info.status == "FINISHED"
    assert mlflow.get_experiment(logged.info.experiment_id).name == f"retraining/{name}"
    assert logged.data.params == {"lr": "0.01", "epochs": "3"}
    assert logged.data.metrics == {"accuracy": 0.93, "loss": 0.2}
    tags = logged.data.tags
    assert (tags["retraining.run_id"], tags["retraining.attempt"], tags["retraining.trigger"]) == (run.run_id, "1",
                                                                                                  "ALERT")
    assert tags["retraining.alert_id"] == "alert-7" and tags["team"] == "recs"
    assert len(tags["retraining.reason"]) == 500  # bounded
    assert tags["retraining.registered_version"] == published.registered_version
    assert [a.path for a in mlflow.list_artifacts(published.mlflow_run_id, "model")] == ["model/model.mar"]
    downloaded = mlflow.download_artifacts(published.mlflow_run_id, "model/model.mar", str(tmp_path))
    assert open(downloaded, "rb").read() == model.artifact_path.read_bytes()

    version = (await registry.get_model_version(name, published.registered_version)).model_version
    assert version.stage == pb.STAGE_STAGING
    assert dict(version.metrics) == {"accuracy": 0.93, "loss": 0.2}
    assert dict(version.parameters) == {"lr": "0.01", "epochs": "3"}
    assert version.tags["retraining.run_id"] == run.run_id and version.tags["team"] == "recs"
    assert version.source_run_id == published.mlflow_run_id
    assert version.description == "retrained"
    assert version.artifact_sha256 == hashlib.sha256(model.artifact_path.read_bytes()).hexdigest()
    assert version.artifact_format == pb.ARTIFACT_FORMAT_TORCHSERVE_MAR
    assert [(t.name, t.datatype, list(t.shape)) for t in version.signature.inputs] == [("user_id", "INT64", [-1])]
    assert list(version.signature.outputs[0].shape) == [-1, 5]


async def test_publishing_a_run_again_gives_the_same_version_and_mlflow_run(publisher, registry, mlflow, tmp_path):
    name = unique_name("retrained")
    run = a_run(name)
    first = await publisher.publish(run, a_model(tmp_path, name))
    again = await publisher.publish(run, a_model(tmp_path, name))  # the same attempt, called twice
    next_attempt = await publisher.publish(a_run(name, attempt=2, run_id=run.run_id), a_model(tmp_path, name, 0.95))
    assert first == again == next_attempt
    assert [r.info.run_id for r in mlflow_runs_of(mlflow, run)] == [first.mlflow_run_id]
    assert [v.version for v in (await registry.list_model_versions(name)).model_versions] == [first.registered_version]


async def test_a_run_id_mlflow_filters_cannot_quote_is_found_exactly(publisher, mlflow, tmp_path):
    name = unique_name("retrained")
    odd = a_run(name, run_id=f"it's_100%-{uuid.uuid4().hex[:6]}")
    look_alike = a_run(name, run_id=odd.run_id.replace("'", "x").replace("_", "y"))  # what `_` wildcards also match
    other = await publisher.publish(look_alike, a_model(tmp_path, name))
    first = await publisher.publish(odd, a_model(tmp_path, name))
    assert await publisher.publish(odd, a_model(tmp_path, name)) == first != other
    assert mlflow.get_run(first.mlflow_run_id).data.tags["retraining.run_id"] == odd.run_id


async def test_without_the_mlflow_note_the_registry_request_id_still_answers_with_the_first_version(
        publisher, registry, mlflow, tmp_path):
    name = unique_name("retrained")
    run = a_run(name)
    first = await publisher.publish(run, a_model(tmp_path, name))
    mlflow.delete_tag(first.mlflow_run_id, "retraining.registered_version")  # as if tagging it had failed

    retried = await publisher.publish(a_run(name, attempt=2, run_id=run.run_id), a_model(tmp_path, name, 0.95))
    assert retried == first  # the version, and the MLflow run it was registered from
    assert len(mlflow_runs_of(mlflow, run)) == 2  # the second attempt's own record
    assert len((await registry.list_model_versions(name)).model_versions) == 1


async def test_a_later_attempt_ends_the_mlflow_run_of_one_that_died_mid_publish(publisher, mlflow, tmp_path):
    name = unique_name("retrained")
    run = a_run(name, attempt=2)
    experiment_id = mlflow.create_experiment(f"retraining/{name}")
    died = mlflow.create_run(experiment_id, tags={"retraining.run_id": run.run_id, "retraining.attempt": "1"})

    published = await publisher.publish(run, a_model(tmp_path, name))
    assert mlflow.get_run(died.info.run_id).info.status == "KILLED"
    assert published.mlflow_run_id != died.info.run_id
    assert mlflow.get_run(published.mlflow_run_id).data.tags["retraining.attempt"] == "2"


async def test_mlflow_down_is_retryable_and_registers_nothing(registry_server, registry, token, tmp_path):
    name = unique_name("retrained")
    publisher = MlflowRegistryPublisher(f"http://{closed_port()}", f"127.0.0.1:{registry_server.port}", token=token)
    try:
        with pytest.raises(TrainingFailed) as failed:
            await publisher.publish(a_run(name), a_model(tmp_path, name))
    finally:
        await publisher.close()
    assert (failed.value.reason, failed.value.code, failed.value.retryable) == ("MLFLOW_UNAVAILABLE", "UNAVAILABLE",
                                                                                True)
    assert "MLflow unreachable" in failed.value.message and len(failed.value.message) <= 300
    assert not (await registry.list_registered_models(name_contains=name)).registered_models


async def test_mlflow_dying_at_any_request_is_retryable_and_the_retry_leaves_one_run_and_version(
        mlflow_proxy, registry_server, registry, mlflow, token, tmp_path):
    publisher = MlflowRegistryPublisher(mlflow_proxy.uri, f"127.0.0.1:{registry_server.port}", token=token)
    try:
        mlflow_proxy.requests = 0
        warm_up = unique_name("retrained")
        await publisher.publish(a_run(warm_up), a_model(tmp_path, warm_up))
        whole = mlflow_proxy.requests  # MLflow requests of one publish, from finding the experiment on
        assert whole >= 8

        for budget in range(whole):
            name = unique_name("retrained")
            run = a_run(name)
            mlflow_proxy.cut_after(budget)
            if budget < whole - 1:
                with pytest.raises(TrainingFailed) as failed:
                    await publisher.publish(run, a_model(tmp_path, name))
                assert (failed.value.reason, failed.value.code, failed.value.retryable) == (
                    "MLFLOW_UNAVAILABLE", "UNAVAILABLE", True), budget
            else:  # only the note of the registered version is lost: that is no failure
                await publisher.publish(run, a_model(tmp_path, name))
            mlflow_proxy.revive()

            published = await publisher.publish(run, a_model(tmp_path, name))
            assert [r.info.run_id for r in mlflow_runs_of(mlflow, run)] == [published.mlflow_run_id], budget
            assert mlflow.get_run(published.mlflow_run_id).info.status == "FINISHED"
            assert [v.version for v in (await registry.list_model_versions(name)).model_versions] == ["1"]
    finally:
        await publisher.close()


async def test_a_hung_mlflow_fails_within_the_deadline(mlflow_proxy, registry_server, token, tmp_path):
    name = unique_name("retrained")
    mlflow_proxy.stalled = True
    publisher = MlflowRegistryPublisher(mlflow_proxy.uri, f"127.0.0.1:{registry_server.port}", token=token,
                                        mlflow_deadline_seconds=1.5)
    started = time.monotonic()
    try:
        with pytest.raises(TrainingFailed) as failed:
            await publisher.publish(a_run(name), a_model(tmp_path, name))
    finally:
        await publisher.close()
    assert time.monotonic() - started < 5
    assert (failed.value.reason, failed.value.code, failed.value.retryable) == ("MLFLOW_UNAVAILABLE", "UNAVAILABLE",
                                                                                True)


async def test_registry_down_is_retryable_and_a_retry_reuses_the_attempts_mlflow_run(mlflow_uri, publisher, mlflow,
                                                                                     token, tmp_path):
    name = unique_name("retrained")
    run, model = a_run(name), a_model(tmp_path, name)
    down = MlflowRegistryPublisher(mlflow_uri, closed_port(), token=token, registry_timeout_seconds=5)
    try:
        with pytest.raises(TrainingFailed) as failed:
            await down.publish(run, model)
    finally:
        await down.close()
    assert (failed.value.reason, failed.value.code, failed.value.retryable) == ("REGISTRY_UNAVAILABLE", "UNAVAILABLE",
                                                                                True)
    logged = mlflow_runs_of(mlflow, run)
    assert len(logged) == 1 and logged[0].info.status == "FINISHED"

    published = await publisher.publish(run, model)  # the Registry is back
    assert published.mlflow_run_id == logged[0].info.run_id


async def test_a_staging_gate_refuses_for_good_naming_the_metric(publisher, registry, mlflow, tmp_path):
    name = unique_name("retrained")
    gate = pb.MetricGate(metric="accuracy", comparison=pb.GATE_COMPARISON_GREATER_OR_EQUAL, threshold=0.9,
                         target_stage=pb.STAGE_STAGING)
    await registry.create_registered_model(name, promotion_policy=pb.PromotionPolicy(gates=[gate]))
    run = a_run(name)
    with pytest.raises(TrainingFailed) as failed:
        await publisher.publish(run, a_model(tmp_path, name, accuracy=0.5))
    assert (failed.value.reason, failed.value.code, failed.value.retryable) == ("REGISTRY_REFUSED",
                                                                                "FAILED_PRECONDITION", False)
    assert "GATE_FAILED" in failed.value.message and "accuracy" in failed.value.message
    assert len(failed.value.message) <= 300
    assert not (await registry.list_model_versions(name)).model_versions
    assert "retraining.registered_version" not in mlflow_runs_of(mlflow, run)[0].data.tags


async def test_an_artifact_the_registry_cannot_read_is_refused(publisher, tmp_path):
    name = unique_name("retrained")
    model = a_model(tmp_path, name)
    model.artifact_path.write_bytes(b"not a zip at all")
    with pytest.raises(TrainingFailed) as failed:
        await publisher.publish(a_run(name), model)
    assert (failed.value.reason, failed.value.retryable) == ("REGISTRY_REFUSED", False)
    assert "ARTIFACT_INVALID" in failed.value.message


async def test_a_malformed_signature_or_a_missing_artifact_fails_before_anything_is_logged(publisher, mlflow,
                                                                                           tmp_path):
    name = unique_name("retrained")
    model = a_model(tmp_path, name)
    bad_signature = TrainedModel(model.artifact_path, model.metrics, signature={"inputs": [{"datatype": "FP32"}]})
    missing = TrainedModel(tmp_path / "nowhere.mar", model.metrics)
    for trained in (bad_signature, missing):
        with pytest.raises(TrainingFailed) as failed:
            await publisher.publish(a_run(name), trained)
        assert (failed.value.reason, failed.value.retryable) == ("TRAINING_FAILED", False)
    assert mlflow.get_experiment_by_name(f"retraining/{name}") is None

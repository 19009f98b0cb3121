"""The registry over gRPC against the real MLflow, S3 and PostgreSQL: the lifecycle walk, what a
plain MLflow client sees, gates, concurrency, errors, history and the event feed."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import datetime, timezone

import grpc
import pytest
from mlflow.tracking import MlflowClient
from ml_serving import (
    AbortedError,
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    RegistryClient,
)
from mnbara.mlserving.registry.v1 import registry_pb2 as pb

from ..conftest import mar_bytes, start_registry, unique_name

PRODUCTION, STAGING, ARCHIVED, DEVELOPMENT = (pb.STAGE_PRODUCTION, pb.STAGE_STAGING, pb.STAGE_ARCHIVED,
                                              pb.STAGE_DEVELOPMENT)


def s3_bytes(s3_client, uri: str) -> bytes:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()


async def new_model(registry: RegistryClient, **kwargs) -> str:
    name = unique_name()
    await registry.create_registered_model(name, description="test model", **kwargs)
    return name


async def add_version(registry: RegistryClient, name: str, payload: bytes = b"w", **kwargs) -> pb.ModelVersion:
    response = await registry.create_model_version(name, artifact=mar_bytes(name, payload),
                                                   artifact_file_name="model.mar", **kwargs)
    return response.model_version


async def promote(registry: RegistryClient, name: str, version: str) -> pb.TransitionStageResponse:
    await registry.transition_stage(name, version, STAGING)
    return await registry.transition_stage(name, version, PRODUCTION, reason="ship it")


async def test_the_lifecycle_walk_is_what_a_plain_mlflow_client_sees(registry, mlflow_uri, s3_client):
    name = await new_model(registry)
    artifact = mar_bytes(name, b"first")
    first = (await registry.create_model_version(
        name, artifact=artifact, artifact_file_name="model.mar", metrics={"accuracy": 0.91},
        parameters={"lr": "0.01"}, signature={"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                                              "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}]})
             ).model_version
    second = await add_version(registry, name, b"second")
    assert (first.version, second.version) == ("1", "2")
    assert first.stage == DEVELOPMENT and first.metrics["accuracy"] == 0.91
    assert first.signature.inputs[0].shape == [-1, 4]
    assert first.artifact_format == pb.ARTIFACT_FORMAT_TORCHSERVE_MAR
    assert s3_bytes(s3_client, first.artifact_uri) == artifact  # the bytes are in the bucket
    assert first.artifact_sha256 == hashlib.sha256(artifact).hexdigest()
    assert first.artifact_size_bytes == len(artifact)

    await promote(registry, name, "1")
    promoted = await promote(registry, name, "2")
    assert promoted.model_version.stage == PRODUCTION
    assert promoted.archived_version.version == "1" and promoted.archived_version.stage == ARCHIVED
    assert promoted.transition.from_stage == STAGING and promoted.transition.actor == "test-suite"

    model = (await registry.get_registered_model(name)).registered_model
    assert model.production_version == "2" and model.latest_version == "2"
    assert (await registry.get_model_version(name, "1")).model_version.stage == ARCHIVED

    plain = MlflowClient(mlflow_uri)
    assert plain.get_model_version_by_alias(name, "production").version == "2"
    assert plain.get_model_version(name, "1").tags["mnbara.stage"] == "Archived"

    history = (await registry.list_stage_transitions(model_name=name)).transitions
    moves = [(t.version, pb.Stage.Name(t.from_stage), pb.Stage.Name(t.to_stage)) for t in reversed(history)]
    assert moves == [("1", "STAGE_DEVELOPMENT", "STAGE_STAGING"), ("1", "STAGE_STAGING", "STAGE_PRODUCTION"),
                     ("2", "STAGE_DEVELOPMENT", "STAGE_STAGING"), ("1", "STAGE_PRODUCTION", "STAGE_ARCHIVED"),
                     ("2", "STAGE_STAGING", "STAGE_PRODUCTION")]
    archive = next(t for t in history if t.to_stage == ARCHIVED)
    assert archive.actor == "registry" and archive.caused_by_transition_id == promoted.transition.transition_id

    resolved = await registry.resolve(f"{name}@production")
    assert resolved.version == "2"
    assert (await registry.resolve(f"{name}/1")).stage == ARCHIVED


async def test_which_version_was_in_production_at_a_past_instant(registry):
    name = await new_model(registry)
    for _ in range(2):
        await add_version(registry, name)
    first = await promote(registry, name, "1")
    await asyncio.sleep(0.05)
    second = await promote(registry, name, "2")
    between = second.transition.transition_time.ToDatetime(tzinfo=timezone.utc)
    during_first = first.transition.transition_time.ToDatetime(tzinfo=timezone.utc)
    assert (await registry.resolve_model_version(name, as_of=during_first)).model_version.version == "1"
    assert (await registry.resolve_model_version(name, as_of=between)).model_version.version == "2"
    with pytest.raises(NotFoundError) as raised:
        await registry.resolve_model_version(name, as_of=datetime(2020, 1, 1, tzinfo=timezone.utc))
    assert raised.value.reason == "NO_VERSION_IN_STAGE"


async def test_two_concurrent_promotions_leave_one_production_and_a_matching_history(registry, mlflow_uri):
    name = await new_model(registry)
    for _ in range(2):
        version = await add_version(registry, name)
        await registry.transition_stage(name, version.version, STAGING)
    results = await asyncio.gather(*(registry.transition_stage(name, v, PRODUCTION) for v in ("1", "2")),
                                   return_exceptions=True)
    assert all(not isinstance(r, Exception) for r in results), results
    versions = (await registry.list_model_versions(name)).model_versions
    in_production = [v.version for v in versions if v.stage == PRODUCTION]
    assert len(in_production) == 1
    history = (await registry.list_stage_transitions(model_name=name)).transitions
    assert history[0].to_stage == PRODUCTION and history[0].version == in_production[0]  # the last word
    loser = "1" if in_production[0] == "2" else "2"
    assert history[1].version == loser and history[1].to_stage == ARCHIVED
    assert MlflowClient(mlflow_uri).get_model_version_by_alias(name, "production").version == in_production[0]


async def test_a_gate_blocks_promotion_by_name_and_an_override_needs_a_reason(registry):
    gate = pb.MetricGate(metric="accuracy", comparison=pb.GATE_COMPARISON_GREATER_OR_EQUAL, threshold=0.9)
    name = await new_model(registry, promotion_policy=pb.PromotionPolicy(gates=[gate]))
    await add_version(registry, name, metrics={"accuracy": 0.8})
    await registry.transition_stage(name, "1", STAGING)
    with pytest.raises(FailedPreconditionError) as raised:
        await registry.transition_stage(name, "1", PRODUCTION)
    assert raised.value.reason == "GATE_FAILED" and "accuracy" in raised.value.message
    with pytest.raises(InvalidArgumentError) as raised:
        await registry.transition_stage(name, "1", PRODUCTION, override=True)
    assert raised.value.reason == "OVERRIDE_REASON_REQUIRED"
    assert (await registry.get_model_version(name, "1")).model_version.stage == STAGING  # nothing changed
    forced = await registry.transition_stage(name, "1", PRODUCTION, override=True, reason="incident 42")
    assert forced.transition.override and forced.transition.reason == "incident 42"
    assert forced.transition.gate_results[0].actual == 0.8 and not forced.transition.gate_results[0].passed

    await registry.update_model_version(model_name=name, version="1", set_metrics={"accuracy": 0.95})
    await add_version(registry, name, metrics={"accuracy": 0.95})
    await registry.transition_stage(name, "2", STAGING)
    assert (await registry.transition_stage(name, "2", PRODUCTION)).transition.gate_results[0].passed


async def test_illegal_transitions_and_stale_expectations_change_nothing(registry):
    name = await new_model(registry)
    await add_version(registry, name)
    with pytest.raises(FailedPreconditionError) as raised:
        await registry.transition_stage(name, "1", PRODUCTION)  # Development -> Production skips Staging
    assert raised.value.reason == "INVALID_TRANSITION"
    with pytest.raises(AbortedError) as raised:
        await registry.transition_stage(name, "1", STAGING, expected_stage=ARCHIVED)
    assert raised.value.reason == "STAGE_CONFLICT"
    assert (await registry.get_model_version(name, "1")).model_version.stage == DEVELOPMENT
    assert not (await registry.list_stage_transitions(model_name=name)).transitions


async def test_errors_name_what_is_wrong(registry):
    name = await new_model(registry)
    with pytest.raises(AlreadyExistsError) as raised:
        await registry.create_registered_model(name)
    assert raised.value.reason == "MODEL_ALREADY_EXISTS"
    with pytest.raises(NotFoundError) as raised:
        await registry.get_registered_model(unique_name())
    assert raised.value.reason == "MODEL_NOT_FOUND"
    with pytest.raises(NotFoundError) as raised:
        await registry.get_model_version(name, "7")
    assert raised.value.reason == "VERSION_NOT_FOUND"
    with pytest.raises(InvalidArgumentError) as raised:
        await registry.create_registered_model("bad name/" + "x" * 5000)
    assert raised.value.metadata["field"] == "registered_model.name" and len(raised.value.message) < 300
    with pytest.raises(InvalidArgumentError) as raised:
        await registry.create_registered_model(name + "-d", description="x" * 5001)
    assert raised.value.metadata["field"] == "registered_model.description"


@pytest.mark.parametrize("artifact,kwargs,field,reason", [
    (b"", {}, "artifact", "ARTIFACT_INVALID"),
    (mar_bytes("m")[:-40], {}, "artifact", "ARTIFACT_INVALID"),
    (b"not a zip at all", {}, "artifact", "ARTIFACT_INVALID"),
    (mar_bytes("m"), {"artifact_sha256": "0" * 64}, "artifact_sha256", "CHECKSUM_MISMATCH"),
    (mar_bytes("m"), {"artifact_file_name": "model.exe"}, "artifact_format", "ARTIFACT_INVALID"),
])
async def test_bad_artifacts_are_refused_and_nothing_is_registered(registry, artifact, kwargs, field, reason):
    name = await new_model(registry)
    options = {"artifact_file_name": "model.mar", **kwargs}
    with pytest.raises(InvalidArgumentError) as raised:
        await registry.create_model_version(name, artifact=artifact, **options)
    assert (raised.value.metadata["field"], raised.value.reason) == (field, reason)
    assert not (await registry.list_model_versions(name)).model_versions


async def test_a_retry_with_the_same_request_id_registers_once(registry):
    name = await new_model(registry)
    first = await registry.create_model_version(name, artifact=mar_bytes(name), artifact_file_name="m.mar",
                                                request_id="train-run-7")
    again = await registry.create_model_version(name, artifact=mar_bytes(name), artifact_file_name="m.mar",
                                                request_id="train-run-7")
    assert not first.duplicate and again.duplicate and again.model_version.version == first.model_version.version
    assert len((await registry.list_model_versions(name)).model_versions) == 1


async def test_aliases_move_and_resolve(registry, mlflow_uri):
    name = await new_model(registry)
    for _ in range(2):
        await add_version(registry, name)
    await registry.set_alias(model_name=name, alias="champion", version="1")
    moved = await registry.set_alias(model_name=name, alias="champion", version="2")
    assert moved.previous_version == "1"
    assert (await registry.resolve(f"{name}@champion")).version == "2"
    assert MlflowClient(mlflow_uri).get_model_version_by_alias(name, "champion").version == "2"
    with pytest.raises(InvalidArgumentError) as raised:
        await registry.set_alias(model_name=name, alias="production", version="1")
    assert raised.value.reason == "RESERVED_ALIAS"
    await registry.delete_alias(model_name=name, alias="champion")
    with pytest.raises(NotFoundError) as raised:
        await registry.resolve(f"{name}@champion")
    assert raised.value.reason == "ALIAS_NOT_FOUND"


async def test_deleting_a_production_version_needs_archiving_first(registry, s3_client):
    name = await new_model(registry)
    version = await add_version(registry, name)
    await promote(registry, name, "1")
    with pytest.raises(FailedPreconditionError) as raised:
        await registry.delete_model_version(model_name=name, version="1")
    assert raised.value.reason == "VERSION_IN_PRODUCTION"
    with pytest.raises(FailedPreconditionError) as raised:
        await registry.delete_registered_model(name)
    assert raised.value.reason == "MODEL_HAS_PRODUCTION_VERSION"
    await registry.transition_stage(name, "1", ARCHIVED)
    await registry.delete_model_version(model_name=name, version="1")
    with pytest.raises(s3_client.exceptions.NoSuchKey):
        s3_bytes(s3_client, version.artifact_uri)
    await registry.delete_registered_model(name)
    with pytest.raises(NotFoundError):
        await registry.resolve(name)


async def test_models_list_filter_and_page(registry):
    tag = unique_name("team")
    names = sorted([await new_model(registry, tags={"team": tag}) for _ in range(3)])
    await new_model(registry, tags={"team": "other"})
    seen, token = [], ""
    while True:
        page = await registry.list_registered_models(tags=[f"team={tag}"], page_size=2, page_token=token)
        seen += [m.name for m in page.registered_models]
        token = page.next_page_token
        if not token:
            break
    assert seen == names
    with pytest.raises(InvalidArgumentError) as raised:
        await registry.list_registered_models(page_token="garbage")
    assert raised.value.reason == "INVALID_PAGE_TOKEN"


async def events_until(stream, wanted: int, name: str) -> list[pb.RegistryEvent]:
    found = []
    async for response in stream:
        found += [e for e in response.events if e.model_name == name]
        if len(found) >= wanted:
            return found
    return found


async def test_a_subscriber_resumes_on_another_replica_and_misses_nothing(registry, registry_server, database_url,
                                                                          registry_settings, dev_keys, token):
    name = await new_model(registry)
    await add_version(registry, name)
    stream = registry.watch_events(after_sequence=0, model_names=[name])
    seen = await asyncio.wait_for(events_until(stream, 2, name), 10)
    await stream.aclose()
    cursor = seen[-1].sequence
    assert [pb.RegistryEventType.Name(e.event_type) for e in seen] == [
        "REGISTRY_EVENT_TYPE_MODEL_CREATED", "REGISTRY_EVENT_TYPE_VERSION_CREATED"]

    for _ in range(5):  # ten stage changes while nobody listens
        await registry.transition_stage(name, "1", STAGING)
        await registry.transition_stage(name, "1", DEVELOPMENT)

    other = await start_registry(database_url, registry_settings, dev_keys)
    try:
        async with RegistryClient(f"127.0.0.1:{other.port}", token=token) as elsewhere:
            stream = elsewhere.watch_events(after_sequence=cursor, model_names=[name])
            replayed = await asyncio.wait_for(events_until(stream, 10, name), 10)
            moves = [pb.Stage.Name(e.to_stage) for e in replayed]
            assert moves == ["STAGE_STAGING", "STAGE_DEVELOPMENT"] * 5
            sequences = [e.sequence for e in replayed]
            assert sequences == sorted(sequences) and sequences[0] > cursor
            # and live: a change made on the first replica reaches the second's stream
            await registry.transition_stage(name, "1", STAGING)
            live = await asyncio.wait_for(events_until(stream, 1, name), 10)
            assert live[0].to_stage == STAGING and live[0].sequence > sequences[-1]
            await stream.aclose()
            # the second replica's cache learnt it from the feed, without asking MLflow per call
            assert (await elsewhere.resolve(name + "@staging")).version == "1"
    finally:
        await other.stop(1.0)


async def test_watch_sends_heartbeats_when_nothing_happens(registry):
    stream = registry.watch_events(model_names=[unique_name()])
    first = await asyncio.wait_for(stream.__anext__(), 5)  # heartbeat_seconds is 1 in these tests
    assert not first.events and first.head_sequence > 0
    await stream.aclose()


async def test_rpcs_need_their_scope(registry_server, dev_keys):
    from ml_serving_tools.devauth import mint_token
    reader = mint_token(dev_keys, scopes=["registry.read"], subject="reader")
    async with RegistryClient(f"127.0.0.1:{registry_server.port}", token=reader) as client:
        with pytest.raises(Exception) as raised:
            await client.create_registered_model(unique_name())
        assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(NotFoundError):
            await client.get_registered_model(unique_name())  # reading is allowed


async def test_a_model_s_description_tags_and_policy_change(registry, mlflow_uri):
    name = await new_model(registry, tags={"team": "fraud", "tier": "1"})
    gate = pb.MetricGate(metric="auc", comparison=pb.GATE_COMPARISON_GREATER_THAN, threshold=0.8)
    updated = (await registry.update_registered_model(
        name=name, description="second take", set_tags={"tier": "2"}, remove_tag_keys=["team"],
        promotion_policy=pb.PromotionPolicy(gates=[gate]))).registered_model
    assert updated.description == "second take" and dict(updated.tags) == {"tier": "2"}
    assert updated.promotion_policy.gates[0].metric == "auc"
    plain = MlflowClient(mlflow_uri).get_registered_model(name)
    assert plain.description == "second take" and plain.tags["tier"] == "2" and "mnbara.promotion_policy" in plain.tags
    with pytest.raises(InvalidArgumentError) as raised:
        await registry.update_registered_model(name=name, set_tags={"mnbara.stage": "x"})
    assert raised.value.reason == "RESERVED_TAG"
    with pytest.raises(NotFoundError):
        await registry.update_registered_model(name=unique_name(), description="x")


async def test_versions_from_an_s3_object_and_from_a_run_artifact(registry, mlflow_uri, s3_client, tmp_path):
    name = await new_model(registry)
    artifact = mar_bytes(name, b"from elsewhere")
    s3_client.put_object(Bucket="mlserving-models", Key=f"incoming/{name}/model.mar", Body=artifact)
    from_s3 = (await registry.create_model_version(
        name, artifact_uri=f"s3://mlserving-models/incoming/{name}/model.mar",
        artifact_sha256=hashlib.sha256(artifact).hexdigest())).model_version
    assert from_s3.artifact_uri.startswith("s3://mlserving-models/registry-tests/models/")  # copied into the store
    assert s3_bytes(s3_client, from_s3.artifact_uri) == artifact

    plain = MlflowClient(mlflow_uri)
    run = plain.create_run(plain.create_experiment(unique_name("exp"))).info.run_id
    (tmp_path / "model.mar").write_bytes(artifact)
    plain.log_artifact(run, str(tmp_path / "model.mar"))
    from_run = (await registry.create_model_version(name, artifact_uri=f"runs:/{run}/model.mar",
                                                    source_run_id=run)).model_version
    assert from_run.source_run_id == run and from_run.artifact_sha256 == hashlib.sha256(artifact).hexdigest()
    assert s3_bytes(s3_client, from_run.artifact_uri) == artifact

    with pytest.raises(NotFoundError) as raised:
        await registry.create_model_version(name, artifact_uri="s3://mlserving-models/incoming/none.mar")
    assert raised.value.reason == "ARTIFACT_NOT_FOUND"
    for uri in ("file:///etc/passwd", "http://169.254.169.254/latest", "s3://b/../x.mar"):
        with pytest.raises(InvalidArgumentError) as raised:
            await registry.create_model_version(name, artifact_uri=uri)
        assert raised.value.metadata["field"] == "artifact_uri"
    assert len((await registry.list_model_versions(name)).model_versions) == 2


async def test_versions_list_by_stage_and_page_newest_first(registry):
    name = await new_model(registry)
    for _ in range(5):
        await add_version(registry, name)
    await registry.transition_stage(name, "2", STAGING)
    await registry.transition_stage(name, "4", STAGING)
    seen, token = [], ""
    while True:
        page = await registry.list_model_versions(name, page_size=2, page_token=token)
        seen += [v.version for v in page.model_versions]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["5", "4", "3", "2", "1"]
    staged = (await registry.list_model_versions(name, stages=[STAGING])).model_versions
    assert [v.version for v in staged] == ["4", "2"]


async def test_a_file_artifact_for_a_model_not_yet_registered(registry, tmp_path):
    """A file goes through UploadArtifact, kept under its model: the client declares the model first."""
    name = unique_name("from-file")
    path = tmp_path / "model.mar"
    path.write_bytes(mar_bytes(name))
    created = await registry.create_model_version(name, artifact=path, create_model_if_missing=True)
    assert created.model_version.version == "1" and created.model_version.artifact_uri.endswith("-model.mar")

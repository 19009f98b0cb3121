"""Experiments over gRPC: their life, their history's revisions, what each bad input answers."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from mnbara.mlserving.router.v1 import router_pb2 as pb
from ml_serving import errors

from ...registry.conftest import unique_name
from .conftest import experiment


def _bucket_count(variant: pb.Variant) -> int:
    return sum(r.end - r.start for r in variant.buckets)


async def test_an_experiment_lives_from_creation_to_stop(router, two_versions):
    name = unique_name("exp")
    created = (await router.create_experiment(experiment(name, two_versions, weights=(9000, 1000)))).experiment
    assert created.state == pb.EXPERIMENT_STATE_RUNNING and created.revision == 1 and created.salt
    assert [_bucket_count(v) for v in created.variants] == [9000, 1000]
    assert created.created_by == "test-suite" and created.start_time.seconds > 0

    ramped = experiment(name, two_versions, weights=(8000, 2000))
    updated = (await router.update_experiment(pb.UpdateExperimentRequest(
        experiment=pb.Experiment(**ramped), update_mask=field_mask_pb2.FieldMask(paths=["variants"])))).experiment
    assert updated.revision == 2 and [_bucket_count(v) for v in updated.variants] == [8000, 2000]
    before = {(r.start, r.end) for r in created.variants[1].buckets}
    after = {(r.start, r.end) for r in updated.variants[1].buckets}
    owned_before = {b for s, e in before for b in range(s, e)}
    assert owned_before <= {b for s, e in after for b in range(s, e)}  # the treatment only gained users

    paused = (await router.pause_experiment(pb.PauseExperimentRequest(name=name, reason="look"))).experiment
    assert paused.state == pb.EXPERIMENT_STATE_PAUSED and paused.revision == 3
    resumed = (await router.resume_experiment(pb.ResumeExperimentRequest(name=name))).experiment
    assert resumed.state == pb.EXPERIMENT_STATE_RUNNING and resumed.salt == created.salt
    stopped = (await router.stop_experiment(pb.StopExperimentRequest(name=name, winning_variant="treatment")))
    assert stopped.experiment.state == pb.EXPERIMENT_STATE_STOPPED
    assert stopped.experiment.winning_variant == "treatment" and stopped.experiment.stop_time.seconds > 0
    fetched = (await router.get_experiment(name)).experiment
    assert fetched == stopped.experiment

    with pytest.raises(errors.FailedPreconditionError) as caught:
        await router.resume_experiment(pb.ResumeExperimentRequest(name=name))
    assert caught.value.reason == "EXPERIMENT_STOPPED"


async def test_listing_filters_by_model_and_state_and_pages(router, two_versions):
    names = [unique_name("page") for _ in range(3)]
    for name in names:
        await router.create_experiment(experiment(name, two_versions), paused=True)
    seen, token = [], ""
    while True:
        page = await router.list_experiments(pb.ListExperimentsRequest(
            model_name=two_versions, states=[pb.EXPERIMENT_STATE_PAUSED], page_size=2, page_token=token))
        seen += [e.name for e in page.experiments]
        token = page.next_page_token
        if not token:
            break
    assert set(names) <= set(seen) and len(seen) == len(set(seen))
    assert seen.index(names[2]) < seen.index(names[0])  # newest first


async def test_one_running_experiment_per_model(router, two_versions):
    first, second = unique_name("one"), unique_name("two")
    await router.create_experiment(experiment(first, two_versions))
    try:
        with pytest.raises(errors.FailedPreconditionError) as caught:
            await router.create_experiment(experiment(second, two_versions))
        assert caught.value.reason == "MODEL_HAS_RUNNING_EXPERIMENT"
        await router.create_experiment(experiment(second, two_versions), paused=True)  # paused is fine
        with pytest.raises(errors.FailedPreconditionError):
            await router.resume_experiment(pb.ResumeExperimentRequest(name=second))
    finally:
        await router.stop_experiment(pb.StopExperimentRequest(name=first))
    assert (await router.resume_experiment(pb.ResumeExperimentRequest(name=second))).experiment.state == \
        pb.EXPERIMENT_STATE_RUNNING
    await router.stop_experiment(pb.StopExperimentRequest(name=second))


@pytest.mark.parametrize("change, code, reason, field", [
    (lambda e: e["variants"][1].update(weight_bps=4000), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_WEIGHTS",
     "experiment.variants"),
    (lambda e: e["variants"][1].update(model_version="999"), grpc.StatusCode.NOT_FOUND,
     "MODEL_VERSION_NOT_FOUND", "experiment.variants[1].model_version"),
    (lambda e: e["variants"][1].update(control=True), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_VARIANTS",
     "experiment.variants"),
    (lambda e: e.update(targeting={"conditions": [{"attribute": "age", "operator": "ATTRIBUTE_OPERATOR_GREATER_THAN",
                                                   "values": [{"string_value": "old"}]}]}),
     grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TARGETING", "experiment.targeting.conditions[0].values[0]"),
    (lambda e: e.update(overrides=[{"user_id": "u1", "variant": "nope"}]), grpc.StatusCode.INVALID_ARGUMENT,
     "UNKNOWN_VARIANT", "experiment.overrides[0].variant"),
    (lambda e: e.update(name="bad name!"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "experiment.name"),
    (lambda e: e.update(metrics=[]), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD", "experiment.metrics"),
], ids=["weights", "unknown-version", "two-controls", "targeting", "override", "name", "no-metric"])
async def test_bad_experiments_are_refused_naming_the_field(router, two_versions, change, code, reason, field):
    name = unique_name("bad")
    body = experiment(name, two_versions)
    change(body)
    with pytest.raises(errors.MLServingError) as caught:
        await router.create_experiment(body)
    assert (caught.value.code, caught.value.reason, caught.value.metadata["field"]) == (code, reason, field)
    with pytest.raises(errors.NotFoundError):
        await router.get_experiment(name)  # nothing was stored


async def test_a_stale_revision_is_aborted(router, two_versions):
    name = unique_name("rev")
    await router.create_experiment(experiment(name, two_versions), paused=True)
    stale = pb.Experiment(**experiment(name, two_versions, description="x"), revision=7)
    with pytest.raises(errors.AbortedError) as caught:
        await router.update_experiment(pb.UpdateExperimentRequest(
            experiment=stale, update_mask=field_mask_pb2.FieldMask(paths=["description"])))
    assert caught.value.reason == "REVISION_MISMATCH"
    with pytest.raises(errors.InvalidArgumentError) as caught:
        await router.update_experiment(pb.UpdateExperimentRequest(
            experiment=pb.Experiment(name=name, salt="new"), update_mask=field_mask_pb2.FieldMask(paths=["salt"])))
    assert caught.value.reason == "IMMUTABLE_FIELD"

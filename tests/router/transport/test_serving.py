"""Assignment, Predict through the assigned version, outcomes and results, over gRPC."""

from __future__ import annotations

import asyncio

import pytest

from mnbara.mlserving.router.v1 import router_pb2 as pb
from ml_serving import errors
from ml_serving_server.services.router.convert import definition_from_pb
from ml_serving_server.services.router.domain.assignment import assign

from ...registry.conftest import unique_name
from .conftest import experiment


@pytest.fixture
async def running(router, two_versions):
    """A running 50/50 experiment on the two versions, stopped afterwards: the stored message."""
    name = unique_name("serve")
    created = (await router.create_experiment(experiment(name, two_versions))).experiment
    yield created
    try:
        await router.stop_experiment(pb.StopExperimentRequest(name=name))
    except errors.FailedPreconditionError:
        pass


async def test_the_server_assigns_as_the_stored_definition_says(router, running):
    definition = definition_from_pb(running)
    for index in range(300):
        user = f"user-{index}"
        got = (await router.assign_variant(user, experiment=running.name, dry_run=True)).assignment
        local = assign(definition, user)
        assert (got.variant, got.bucket, got.model_version) == (local.variant_name, local.bucket,
                                                                local.model_version)
        assert got.reason == pb.ASSIGNMENT_REASON_EXPERIMENT_BUCKET


async def test_without_an_experiment_name_the_models_running_experiment_applies(router, running, two_versions):
    got = (await router.assign_variant("someone", model_name=two_versions, dry_run=True)).assignment
    assert got.experiment == running.name and got.variant in ("control", "treatment")


async def test_a_model_without_experiment_serves_its_production_version(router, two_versions):
    got = (await router.assign_variant("someone", model_name=two_versions, dry_run=True)).assignment
    assert (got.experiment, got.model_version, got.reason) == ("", "1", pb.ASSIGNMENT_REASON_DEFAULT)
    with pytest.raises(errors.NotFoundError) as caught:
        await router.assign_variant("someone", model_name=unique_name("nobody"), dry_run=True)
    assert caught.value.reason == "MODEL_VERSION_NOT_FOUND"


async def test_predict_serves_the_assigned_version_and_counts_it(router, running, two_versions):
    served = {}
    for index in range(40):
        response = await router.predict(f"p-{index}", {"x": index}, experiment=running.name)
        output = dict(response.prediction.struct_value)
        assert output["x"] == index
        # TorchServe serves registry version V of a model as "<model>-v<V>".
        assert output["model"] == f"{two_versions}-v{response.assignment.model_version}"
        served[response.assignment.variant] = served.get(response.assignment.variant, 0) + 1
        assert response.model_latency_ms > 0
    assert set(served) == {"control", "treatment"}
    results = await router.get_experiment_results(running.name)
    by_variant = {v.variant: v for v in results.variants}
    assert {name: by_variant[name].request_count for name in served} == served
    assert {name: by_variant[name].exposures for name in served} == served
    assert all(by_variant[name].latency_p50_ms > 0 for name in served)


async def test_outcomes_count_once_and_only_for_exposed_users(router, running):
    for index in range(20):
        await router.assign_variant(f"o-{index}", experiment=running.name)  # exposed
    outcomes = [pb.RecordOutcomeRequest(event_id=f"e-{index}", experiment=running.name, user_id=f"o-{index}",
                                        converted=index % 2 == 0) for index in range(20)]
    first = await router.batch_record_outcomes(pb.BatchRecordOutcomesRequest(outcomes=outcomes))
    assert (first.applied_count, first.duplicate_count, first.not_counted_count) == (20, 0, 0)
    again = await router.batch_record_outcomes(pb.BatchRecordOutcomesRequest(outcomes=outcomes))
    assert (again.applied_count, again.duplicate_count) == (0, 20)
    stranger = await router.record_outcome(experiment=running.name, user_id="never-seen", converted=True,
                                           event_id="e-stranger")
    assert not stranger.counted and not stranger.duplicate

    results = await router.get_experiment_results(running.name)
    assert sum(v.exposures for v in results.variants) == 20
    assert sum(v.outcome_count for v in results.variants) == 10
    assert results.verdict == pb.VERDICT_NOT_ENOUGH_DATA
    assert set(results.sample_ratio.expected_shares) == {"control", "treatment"}


async def test_a_bad_outcome_rejects_the_whole_batch(router, running):
    await router.assign_variant("b-1", experiment=running.name)
    good = pb.RecordOutcomeRequest(event_id="g-1", experiment=running.name, user_id="b-1", converted=True)
    bad = pb.RecordOutcomeRequest(event_id="g-2", experiment=running.name, user_id="b-1", value=2.5)
    with pytest.raises(errors.InvalidArgumentError) as caught:
        await router.batch_record_outcomes(pb.BatchRecordOutcomesRequest(outcomes=[good, bad]))
    assert caught.value.reason == "OUTCOME_KIND_MISMATCH" and caught.value.metadata["index"] == "1"
    assert (await router.record_outcome(experiment=running.name, user_id="b-1", converted=True,
                                        event_id="g-1")).counted  # the good one was not applied before


async def test_paused_experiments_serve_control_and_count_nothing(router, running):
    await router.pause_experiment(pb.PauseExperimentRequest(name=running.name))
    got = await asyncio.gather(*(router.assign_variant(f"z-{i}", experiment=running.name) for i in range(10)))
    assert {g.assignment.variant for g in got} == {"control"}
    assert {g.assignment.reason for g in got} == {pb.ASSIGNMENT_REASON_EXPERIMENT_INACTIVE}
    results = await router.get_experiment_results(running.name)
    assert sum(v.exposures for v in results.variants) == 0


async def _fired(pipeline, rule):
    """The alert a new rule fires within 10 s (its value is what it saw), the rule deleted after."""
    from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as ppb

    created = (await pipeline.create_alert_rule(ppb.CreateAlertRuleRequest(rule=rule))).rule
    try:
        for _ in range(100):
            alerts = (await pipeline.list_alerts(rule_id=created.rule_id)).alerts
            if alerts:
                return alerts[0]
            await asyncio.sleep(0.1)
        return None
    finally:
        await pipeline.delete_alert_rule(ppb.DeleteAlertRuleRequest(rule_id=created.rule_id))


async def test_predict_figures_reach_the_model_monitor_per_variant(router, running, two_versions, mesh, token):
    """The session mesh feeds the monitor every 0.5 s and evaluates rules every second: a rule on
    the experiment's request count fires once its Predict calls have been fed, one on its outcome
    rate once an outcome has."""
    from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as ppb

    from ml_serving import PipelineClient

    for index in range(6):
        await router.predict(f"feed-{index}", {"x": index}, experiment=running.name)
    async with PipelineClient(f"127.0.0.1:{mesh.port}", token=token) as pipeline:
        alert = await _fired(pipeline, ppb.AlertRule(
            name=f"fed-{running.name}", model_name=two_versions, metric_name="router_requests",
            label_filter={"experiment": running.name}, aggregation=ppb.AGGREGATION_SUM, enabled=True,
            threshold=ppb.ThresholdCondition(comparison=ppb.COMPARISON_GREATER_OR_EQUAL, threshold=6)))
        assert alert is not None and alert.value == 6.0, "the Predict figures never reached the monitor"
        await router.record_outcome(experiment=running.name, user_id="feed-0", metric="click", converted=True,
                                    event_id=f"feed-{running.name}")
        alert = await _fired(pipeline, ppb.AlertRule(
            name=f"fed-outcomes-{running.name}", model_name=two_versions, metric_name="router_outcome_mean",
            label_filter={"experiment": running.name, "outcome": "click"}, enabled=True,
            threshold=ppb.ThresholdCondition(comparison=ppb.COMPARISON_GREATER_OR_EQUAL, threshold=1.0)))
        assert alert is not None and alert.value == 1.0, "the outcome never reached the monitor"

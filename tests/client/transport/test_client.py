"""The ml_serving client library against a real server (all five services, Bandit on real Redis)."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from mnbara.mlserving.bandit.v1.error_reason_pb2 import ErrorReason
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb_pipeline
from mnbara.mlserving.router.v1 import router_pb2 as pb
from opentelemetry.sdk.trace import TracerProvider

import ml_serving
from ml_serving import (
    ABTestingRouter,
    BanditClient,
    MLflowModelRegistry,
    ModelServer,
    PipelineClient,
    RouterClient,
    _base,
)


@pytest.fixture(scope="session")
def address(mesh):
    return f"127.0.0.1:{mesh.port}"


@pytest.fixture(scope="session")
async def bandits(address, token):
    async with BanditClient(address=address, token=token) as client:
        yield client


def new_name() -> str:
    return f"client-{uuid.uuid4().hex[:10]}"


async def test_bandit_round_trip(bandits):
    name = new_name()
    created = (await bandits.create_bandit(name, ["a", "b", "c"], description="client test")).bandit
    assert [arm.id for arm in created.arms] == ["a", "b", "c"] and created.prior_alpha == 1.0

    decision = await bandits.select(name, k=2, user_id="u1")
    assert len(decision.choices) == 2 and decision.decision_id
    chosen = decision.choices[0].arm_id
    rewarded = await bandits.reward(decision_id=decision.decision_id, arm_id=chosen, reward=1.0, event_id="e1")
    assert (rewarded.duplicate, rewarded.bandit, rewarded.arm_id) == (False, name, chosen)
    assert (await bandits.reward(decision_id=decision.decision_id, arm_id=chosen, reward=1.0,
                                 event_id="e1")).duplicate

    batch = await bandits.batch_reward([{"bandit": name, "arm_id": "c", "reward": 0.0, "event_id": "e2"},
                                        {"bandit": name, "arm_id": "c", "reward": 1.0, "event_id": "e3"}])
    assert (batch.applied_count, batch.duplicate_count) == (2, 0)

    stats = await bandits.get_stats(name)
    assert stats.total_pulls == 2 and stats.total_reward_count == 3
    by_arm = {arm.arm_id: arm for arm in stats.arms}
    assert by_arm["c"].reward_count == 2 + (chosen == "c") and by_arm[chosen].reward_sum >= 1.0

    assert name in [b.name for b in (await bandits.list_bandits(page_size=1000)).bandits]
    await bandits.update_bandit(name, add_arms=["d"], disable_arm_ids=["a"])
    assert [(a.id, a.disabled) for a in (await bandits.get_bandit(name)).bandit.arms][::3] == [("a", True),
                                                                                             ("d", False)]
    await bandits.delete_bandit(name)
    with pytest.raises(ml_serving.NotFoundError):
        await bandits.get_stats(name)


async def test_contextual_select(bandits):
    name = new_name()
    await bandits.create_bandit(name, ["x", "y"], context_dimension=2,
                                contextual_algorithm="CONTEXTUAL_ALGORITHM_LIN_UCB")
    response = await bandits.select_contextual(name, [0.5, 1.0])
    assert response.choices[0].arm_id in {"x", "y"}
    assert response.algorithm == ml_serving.bandit.pb.CONTEXTUAL_ALGORITHM_LIN_UCB


async def test_unknown_bandit_is_not_found(bandits):
    with pytest.raises(ml_serving.NotFoundError) as caught:
        await bandits.select("never-created-" + uuid.uuid4().hex[:6])
    error = caught.value
    assert error.code is grpc.StatusCode.NOT_FOUND
    assert (error.reason, error.domain) == ("BANDIT_NOT_FOUND", "bandit.mlserving.mnbara")
    assert error.reason_of(ErrorReason) == error.reason_enum == ErrorReason.BANDIT_NOT_FOUND


async def test_invalid_argument_carries_field(bandits):
    name = new_name()
    await bandits.create_bandit(name, ["a", "b"])
    with pytest.raises(ml_serving.InvalidArgumentError) as caught:
        await bandits.select(name, k=0)
    assert caught.value.reason == "INVALID_FIELD" and caught.value.metadata["field"] == "k"
    with pytest.raises(ml_serving.AlreadyExistsError) as exists:
        await bandits.create_bandit(name, ["a"])
    assert exists.value.reason == "BANDIT_ALREADY_EXISTS"


async def test_the_decision_log_and_an_evaluation_through_the_client(bandits):
    name = new_name()
    await bandits.create_bandit(name, ["a", "b"])
    made = [(await bandits.select(name, user_id=f"u{i}")).decision_id for i in range(3)]
    await bandits.reward(decision_id=made[0], reward=1.0)
    logged = [d async for d in bandits.iter_decisions(bandit=name, page_size=2)]
    assert [d.decision_id for d in logged] == made[::-1]
    assert logged[-1].reward_sum == 1.0 and all(0 < d.propensity <= 1 for d in logged)
    evaluated = await bandits.evaluate_policy(bandit=name, arm_probabilities={"a": 0.5, "b": 0.5})
    assert evaluated.decision_count == 3 and len(evaluated.estimates) == 3
    with pytest.raises(ml_serving.InvalidArgumentError) as caught:
        await bandits.evaluate_policy(bandit=name)
    assert caught.value.metadata["field"] == "policy"


async def test_client_on_a_given_channel_is_not_closed_by_it(channel):
    async with BanditClient(channel=channel) as client:
        with pytest.raises(ml_serving.NotFoundError):
            await client.get_bandit("missing-" + uuid.uuid4().hex[:6])
    assert channel.get_state() is not grpc.ChannelConnectivity.SHUTDOWN


async def test_unreachable_address_is_unavailable():
    async with BanditClient(address="127.0.0.1:1", timeout=2) as client:
        with pytest.raises((ml_serving.UnavailableError, ml_serving.DeadlineExceededError)):
            await client.get_stats("b")


async def test_trace_context_goes_out_with_the_call(address, monkeypatch):
    """The client's own channel carries OpenTelemetry's interceptor: the active span's W3C
    traceparent goes out with the call."""
    headers = []

    class Capture(grpc.aio.UnaryUnaryClientInterceptor):  # runs after the OpenTelemetry interceptor
        async def intercept_unary_unary(self, continuation, details, request):
            headers.append(dict(details.metadata or ()))
            return await continuation(details, request)

    with_otel = _base.aio_interceptors
    monkeypatch.setattr(_base, "aio_interceptors", lambda: [*with_otel(), Capture()])
    async with BanditClient(address=address) as client:
        with TracerProvider().get_tracer("test").start_as_current_span("caller") as span:
            with pytest.raises(ml_serving.NotFoundError):
                await client.get_stats("missing-" + uuid.uuid4().hex[:6])
    assert headers[0]["traceparent"].split("-")[1] == f"{span.get_span_context().trace_id:032x}"


# The seed README's usage examples, as written. Registry, Inference and Router are not built
# on the server yet, so each reaches its service and answers UNIMPLEMENTED (NOT_IMPLEMENTED).

async def test_seed_register_a_model(address, monkeypatch):
    monkeypatch.setenv("ML_SERVING_ADDR", address)
    registry = MLflowModelRegistry()
    try:  # left by an earlier run against the same MLflow
        await registry.delete_registered_model("recommendation-model", force=True)
    except ml_serving.NotFoundError:
        pass
    await registry.create_registered_model(
        name="recommendation-model",
        description="Product recommendation model"
    )
    model = (await registry.get_registered_model("recommendation-model")).registered_model
    assert model.description == "Product recommendation model"
    await registry.delete_registered_model("recommendation-model")
    await registry.close()


async def test_seed_make_predictions_names_what_is_missing(address, monkeypatch):
    """The seed's call, before any recommendation-model is registered here (the end-to-end tests
    serve the real one): a NOT_FOUND that says what is missing, in Inference's domain."""
    monkeypatch.setenv("ML_SERVING_ADDR", address)
    server = ModelServer()
    with pytest.raises(ml_serving.NotFoundError) as caught:
        await server.predict(model_name="no-recommendation-model-here", inputs={"user_id": 123, "context": {}})
    assert (caught.value.reason, caught.value.domain) == ("MODEL_NOT_FOUND", "inference.mlserving.mnbara")
    await server.close()


async def test_seed_ab_testing(address, token, monkeypatch, tmp_path):
    """The seed README's A/B call, against a running experiment that targets premium users."""
    from ...inference.torchserve_models import archive
    from ...router.transport.conftest import experiment, served_model

    artifact = archive("echo", "echo", "1.0", tmp_path / "work", tmp_path).read_bytes()
    async with served_model(address, token, [artifact, artifact], prefix="seed") as model, \
            RouterClient(address=address, token=token) as admin:
        name = f"seed-{uuid.uuid4().hex[:8]}"  # the highest priority: it wins over other tests' experiments
        await admin.create_experiment(experiment(name, model, priority=1_000_000,
                                                 targeting={"include_segments": ["premium"]}))
        monkeypatch.setenv("ML_SERVING_ADDR", address)
        monkeypatch.setenv("ML_SERVING_TOKEN", token)
        router = ABTestingRouter()

        def seed_example():  # synchronous, as in the README; run off the event loop that serves the mesh
            model, version = router.get_model_for_user(
                user_id="user123",
                context={"user_segments": ["premium"]}
            )
            return model, version

        try:
            got = await asyncio.to_thread(seed_example)
            served = (await admin.assign_variant("user123", segments=["premium"], dry_run=True)).assignment
            assert got == (served.model_name, served.model_version) and got[0] == model
        finally:
            router.close()
            await admin.stop_experiment(pb.StopExperimentRequest(name=name))




async def test_the_pipeline_client_retrains_and_monitors(address, token):
    async with PipelineClient(address=address, token=token) as client:
        queued = await client.trigger_retraining("recommendation-model", reason="client test",
                                                 parameters={"epochs": 1})
        assert queued.run.state == pb_pipeline.RUN_STATE_QUEUED and queued.run.parameters["epochs"] == 1
        cancelled = (await client.cancel_retraining_run(queued.run_id)).run
        assert cancelled.state == pb_pipeline.RUN_STATE_CANCELLED
        ended = await client.wait_for_retraining(queued.run_id, poll_seconds=0.05, timeout=5)
        assert ended.run_id == queued.run_id and ended.state == pb_pipeline.RUN_STATE_CANCELLED
        with pytest.raises(ml_serving.NotFoundError):
            await client.trigger_retraining("no-such-model")
        assert not (await client.record_metric("recommendation-model", "auc", 0.8)).duplicate
        with pytest.raises(ml_serving.InvalidArgumentError):
            await client.record_metric("recommendation-model", "auc", float("nan"))

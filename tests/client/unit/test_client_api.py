"""ml_serving clients without a server: every RPC has a method, requests are built as documented."""

from __future__ import annotations

import re

import grpc
import pytest
from mnbara.mlserving.bandit.v1 import bandit_pb2
from mnbara.mlserving.inference.v1 import inference_pb2
from mnbara.mlserving.pipeline.v1 import pipeline_pb2
from mnbara.mlserving.registry.v1 import registry_pb2
from mnbara.mlserving.router.v1 import router_pb2

import ml_serving

CLIENTS = [
    (ml_serving.BanditClient, bandit_pb2, "BanditService"),
    (ml_serving.RegistryClient, registry_pb2, "RegistryService"),
    (ml_serving.InferenceClient, inference_pb2, "InferenceService"),
    (ml_serving.RouterClient, router_pb2, "RouterService"),
    (ml_serving.PipelineClient, pipeline_pb2, "PipelineService"),
]


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@pytest.mark.parametrize("client_type, module, service", CLIENTS, ids=[c[2] for c in CLIENTS])
def test_every_rpc_has_a_method(client_type, module, service):
    for method in module.DESCRIPTOR.services_by_name[service].methods:
        assert callable(getattr(client_type(address="x:1"), snake(method.name), None)), method.name


class FakeChannel:
    """Stands in for a grpc.aio channel: records (rpc, request, timeout), answers with a canned response."""

    def __init__(self, response=None, error=None):
        self.calls, self.response, self.error = [], response, error

    def unary_unary(self, method, *args, **kwargs):
        async def call(request, timeout=None, metadata=None):
            self.calls.append((method.rsplit("/", 1)[1], request, timeout))
            if self.error is not None:
                raise self.error
            return self.response
        return call

    unary_stream = stream_unary = stream_stream = unary_unary


async def test_explicit_method_builds_request_and_uses_default_timeout():
    channel = FakeChannel(bandit_pb2.SelectResponse(decision_id="d1"))
    client = ml_serving.BanditClient(channel=channel, timeout=4)
    response = await client.select("b", k=2, candidate_arm_ids=["a", "c"], user_id="u")
    assert response.decision_id == "d1"
    rpc, request, timeout = channel.calls[0]
    assert (rpc, timeout) == ("Select", 4)
    assert request == bandit_pb2.SelectRequest(bandit="b", k=2, candidate_arm_ids=["a", "c"], user_id="u")
    await client.select("b", timeout=0.5)
    assert not channel.calls[1][1].HasField("k") and channel.calls[1][2] == 0.5


async def test_create_bandit_and_batch_reward_accept_plain_values():
    channel = FakeChannel(bandit_pb2.CreateBanditResponse())
    client = ml_serving.BanditClient(channel=channel)
    await client.create_bandit("b", ["a", {"id": "b", "description": "B"}, bandit_pb2.Arm(id="c")],
                               context_dimension=3, contextual_algorithm="CONTEXTUAL_ALGORITHM_LIN_UCB")
    bandit = channel.calls[0][1].bandit
    assert [arm.id for arm in bandit.arms] == ["a", "b", "c"] and bandit.arms[1].description == "B"
    assert bandit.context_dimension == 3 and bandit.contextual_algorithm == bandit_pb2.CONTEXTUAL_ALGORITHM_LIN_UCB
    await client.batch_reward([{"decision_id": "d", "reward": 1.0}, bandit_pb2.RewardRequest(bandit="b", reward=0)])
    assert [r.decision_id for r in channel.calls[1][1].rewards] == ["d", ""]


async def test_declared_method_takes_fields_or_a_request():
    channel = FakeChannel(bandit_pb2.ListDecisionsResponse())
    client = ml_serving.BanditClient(channel=channel)
    await client.list_decisions(bandit="b", page_size=5)
    await client.list_decisions(bandit_pb2.ListDecisionsRequest(bandit="c"), timeout=1)
    assert [(c[0], c[1].bandit, c[2]) for c in channel.calls] == [("ListDecisions", "b", 10.0), ("ListDecisions", "c", 1)]
    with pytest.raises(TypeError):
        await client.list_decisions(bandit_pb2.ListDecisionsRequest(), bandit="x")


async def test_model_server_predict_sends_struct_and_returns_python():
    channel = FakeChannel(inference_pb2.PredictResponse(raw_prediction=b'{"items": [1, 2], "score": 0.5}'))
    server = ml_serving.ModelServer(channel=channel)
    result = await server.predict(model_name="m", inputs={"user_id": 123, "context": {"page": "home"}})
    assert result == {"items": [1, 2], "score": 0.5}
    request = channel.calls[0][1]
    assert request.model_name == "m" and request.WhichOneof("selector") is None
    assert request.raw_output  # the JSON is parsed here, not turned into a protobuf Value by the server
    assert request.inputs["user_id"] == 123 and request.inputs["context"]["page"] == "home"
    channel.response = inference_pb2.PredictResponse(raw_prediction=b"\x00")
    assert await server.predict(model_name="m", inputs=b"raw", stage="STAGE_STAGING") == b"\x00"
    assert channel.calls[1][1].raw_input == b"raw" and channel.calls[1][1].stage == registry_pb2.STAGE_STAGING


async def test_rpc_error_becomes_typed_error():
    error = grpc.aio.AioRpcError(grpc.StatusCode.NOT_FOUND, grpc.aio.Metadata(), grpc.aio.Metadata(), "gone")
    client = ml_serving.RegistryClient(channel=FakeChannel(error=error))
    with pytest.raises(ml_serving.NotFoundError, match="gone"):
        await client.get_registered_model("m")


def test_ab_router_maps_context_to_segments_and_attributes():
    """No experiment runs: the model's Production version comes from AssignVariant, asked with the
    context split into segments and attributes, once (then it is cached until the next refresh)."""
    seen = []
    answers = {"ListExperiments": router_pb2.ListExperimentsResponse(),
               "AssignVariant": router_pb2.AssignVariantResponse(assignment=router_pb2.Assignment(
                   model_name="recommendation-model", model_version="3",
                   reason=router_pb2.ASSIGNMENT_REASON_DEFAULT))}

    class SyncChannel:
        def unary_unary(self, method, *args, **kwargs):
            def call(request, timeout=None, metadata=None):
                seen.append((method.rsplit("/", 1)[1], request, timeout))
                return answers[method.rsplit("/", 1)[1]]
            return call

    router = ml_serving.ABTestingRouter(channel=SyncChannel(), timeout=2)
    try:
        for _ in range(2):
            model, version = router.get_model_for_user(user_id="user123", model_name="recommendation-model",
                                                       context={"user_segments": ["premium"], "country": "DE"})
            assert (model, version) == ("recommendation-model", "3")
    finally:
        router.close()
    asked = [(request, timeout) for rpc, request, timeout in seen if rpc == "AssignVariant"]
    assert len(asked) == 1
    request, timeout = asked[0]
    assert (timeout, request.user_id, request.model_name) == (2, "user123", "recommendation-model")
    assert list(request.segments) == ["premium"] and dict(request.attributes) == {"country": "DE"}



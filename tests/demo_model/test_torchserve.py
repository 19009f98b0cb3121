"""Both archives in a real TorchServe: registered as two versions of one model, predicting over
REST and gRPC, rejecting bad input with its message, and batching concurrent requests."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from ml_serving_tools.demo_model import MODEL_NAME
from ml_serving_tools.devservices.torchserve import start_torchserve
from org.pytorch.serve.grpc.inference import inference_pb2, inference_pb2_grpc

BATCHED = "recommendation-model-batched"


def _call(url: str, body: bytes | None = None, method: str = "POST") -> tuple[int, str]:
    # No content type without a body: the management API would try to read one as JSON.
    headers = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture(scope="module")
def torchserve(artifacts, tmp_path_factory):
    server = start_torchserve(tmp_path_factory.mktemp("ts-demo"))
    try:
        ep = server.endpoints
        for artifact in artifacts.values():
            shutil.copy(artifact.path, server.model_store)
        registrations = [{"url": artifacts[v].path.name} for v in ("v1", "v2")]
        registrations.append({"url": artifacts["v2"].path.name, "model_name": BATCHED,
                              "batch_size": "8", "max_batch_delay": "200"})
        for params in registrations:
            query = urllib.parse.urlencode({**params, "initial_workers": "1", "synchronous": "true"})
            status, text = _call(f"{ep.management_url}/models?{query}")
            assert status == 200, text
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stub(torchserve):
    with grpc.insecure_channel(torchserve.endpoints.grpc_inference) as channel:
        yield inference_pb2_grpc.InferenceAPIsServiceStub(channel)


def _predict(torchserve, body, model=MODEL_NAME, version=""):
    path = f"/predictions/{model}" + (f"/{version}" if version else "")
    return _call(torchserve.endpoints.inference_url + path, json.dumps(body).encode())


def test_both_versions_registered(torchserve):
    status, text = _call(f"{torchserve.endpoints.management_url}/models/{MODEL_NAME}/all", method="GET")
    assert status == 200
    assert sorted(m["modelVersion"] for m in json.loads(text)) == ["1", "2"]


def test_rest_predictions_match_the_handler_in_process(torchserve, handlers):
    body = {"user_id": 123, "top_k": 5, "context": {"device": "mobile"}}
    answers = {}
    for version, ts_version in (("v1", "1"), ("v2", "2")):
        status, text = _predict(torchserve, body, version=ts_version)
        assert status == 200, text
        answers[version] = json.loads(text)
        assert answers[version] == handlers[version].one(body)
    assert answers["v1"]["model_version"] == "v1" and answers["v2"]["model_version"] == "v2"
    assert answers["v1"]["scores"] != answers["v2"]["scores"]


def test_grpc_predictions(stub, handlers):
    body = {"user_id": 42, "item_ids": [1, 2, 3], "top_k": 2}
    reply = stub.Predictions(inference_pb2.PredictionsRequest(
        model_name=MODEL_NAME, model_version="2", input={"data": json.dumps(body).encode()}), timeout=30)
    assert json.loads(reply.prediction) == handlers["v2"].one(body)
    # Open Inference Protocol style: one input per tensor, answered with the output tensors
    reply = stub.Predictions(inference_pb2.PredictionsRequest(
        model_name=MODEL_NAME, model_version="1", input={"user_id": b"[42]", "top_k": b"[2]"}), timeout=30)
    ranked = handlers["v1"].one({"user_id": 42, "top_k": 2})["scores"]
    assert json.loads(reply.prediction) == {"item_ids": [s["item_id"] for s in ranked],
                                            "scores": [s["score"] for s in ranked]}


def test_bad_input_reaches_the_caller(torchserve, stub):
    status, text = _predict(torchserve, {"user_id": 5000}, version="2")
    assert (status, json.loads(text)["message"]) == (400, "unknown user_id 5000: this model knows 1000 users")
    with pytest.raises(grpc.RpcError) as raised:
        stub.Predictions(inference_pb2.PredictionsRequest(model_name=MODEL_NAME, input={"user_id": b"abc"}),
                         timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # TorchServe adds a line naming its Java exception class
    assert raised.value.details().splitlines()[0] == "user_id must be an integer, got str 'abc'"


def test_concurrent_requests_to_a_batching_model_are_answered_each(torchserve, handlers):
    """batch_size=8: TorchServe hands the worker up to 8 requests at once; the bad one gets its
    own 400 and its neighbours their own answers."""
    bodies = [{"user_id": u, "top_k": 3} for u in range(7)] + [{"user_id": -1}]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda b: _predict(torchserve, b, model=BATCHED), bodies))
    for body, (status, text) in zip(bodies[:-1], answers):
        assert status == 200 and json.loads(text) == handlers["v2"].one(body)
    assert answers[-1][0] == 400 and "unknown user_id -1" in answers[-1][1]

"""The archived handler in-process, as TorchServe's worker calls it: batches, every input
shape the mesh sends, and clear rejections of bad input."""

from __future__ import annotations

import json

import pytest
from ts.utils.util import PredictionException

from ml_serving_tools.demo_model.handler import DEFAULT_TOP_K


def test_batch_gives_one_response_per_request_in_order(handlers):
    h = handlers["v2"]
    bodies = [{"user_id": u, "top_k": 3} for u in (1, 2, 3, 4, 5)]
    batched = h(*({"body": b} for b in bodies))
    assert [r["user_id"] for r in batched] == [1, 2, 3, 4, 5]
    assert batched == [h.one(b) for b in bodies]  # one pass over the batch = one at a time
    assert h.context.statuses == {}


def test_ranked_output(handlers):
    for version, h in handlers.items():
        out = h.one({"user_id": 123})
        assert out["user_id"] == 123 and out["model_version"] == version
        scores = [s["score"] for s in out["scores"]]
        assert len(scores) == DEFAULT_TOP_K and scores == sorted(scores, reverse=True)
        assert all(0.0 < s < 1.0 for s in scores)
        assert len({s["item_id"] for s in out["scores"]}) == DEFAULT_TOP_K


def test_candidates_single_item_and_top_k(handlers):
    h = handlers["v2"]
    ranked = h.one({"user_id": 9, "item_ids": [4, 8, 15, 16, 23, 42], "top_k": 4})["scores"]
    assert len(ranked) == 4 and {s["item_id"] for s in ranked} <= {4, 8, 15, 16, 23, 42}
    one = h.one({"user_id": 9, "item_id": ranked[0]["item_id"]})
    assert one == {"user_id": 9, "model_version": "v2", "item_id": ranked[0]["item_id"],
                   "score": ranked[0]["score"]}
    assert len(h.one({"user_id": 9, "item_ids": [1, 2], "top_k": 50})["scores"]) == 2


@pytest.mark.parametrize("request_", [
    {"body": {"user_id": 7, "top_k": 2, "context": {"device": "mobile", "user_segments": ["premium"]}}},
    {"data": json.dumps({"user_id": 7, "top_k": 2, "context": {"device": "mobile"}}).encode()},
    {"body": bytearray(json.dumps({"user_id": "7", "top_k": 2, "context": {"device": "mobile"}}).encode())},
    {"body": {"user_id": 7.0, "top_k": 2.0, "context": {"device": "mobile"}}},  # a Struct's doubles
    {"user_id": b"7", "top_k": b"2", "context": b'{"device": "mobile"}'},  # gRPC input map
], ids=["json", "bytes", "bytearray-str-id", "struct-doubles", "grpc-fields"])
def test_every_input_shape_means_the_same(handlers, request_):
    expected = handlers["v2"].one({"user_id": 7, "top_k": 2, "context": {"device": "mobile"}})
    assert handlers["v2"](request_) == [expected]


@pytest.mark.parametrize("request_", [
    # what the mesh's Open Inference Protocol sends: {input name: nested list}
    {"body": {"user_id": [7], "top_k": [2], "context": [json.dumps({"device": "mobile"})]}},
    {"data": json.dumps({"user_id": [7], "top_k": [2], "context": ['{"device": "mobile"}']}).encode()},
    {"body": {"inputs": [  # a KServe v2 body
        {"name": "user_id", "datatype": "INT64", "shape": [1], "data": [7]},
        {"name": "top_k", "datatype": "INT64", "shape": [1], "data": [2]},
        {"name": "context", "datatype": "BYTES", "shape": [1], "data": ['{"device": "mobile"}']}]}},
    {"user_id": b"[7]", "top_k": b"[2]", "context": b'["{\\"device\\": \\"mobile\\"}"]'},  # gRPC input map
], ids=["oip-tensors", "oip-tensors-bytes", "oip-inputs", "grpc-fields-tensors"])
def test_tensor_input_gets_the_signature_outputs(handlers, artifacts, request_):
    """Asked with tensors, the same ranking as the output tensors the signature declares."""
    plain = handlers["v2"].one({"user_id": 7, "top_k": 2, "context": {"device": "mobile"}})["scores"]
    (answer,) = handlers["v2"](request_)
    outputs = artifacts["v2"].signature["outputs"]
    assert list(answer) == [o["name"] for o in outputs] == ["item_ids", "scores"]
    assert answer == {"item_ids": [s["item_id"] for s in plain], "scores": [s["score"] for s in plain]}
    assert all(type(i) is int for i in answer["item_ids"]) and all(type(s) is float for s in answer["scores"])


def test_tensor_input_for_one_item(handlers):
    h = handlers["v1"]
    plain = h.one({"user_id": 9, "item_id": 5})
    assert h.one({"user_id": [9], "item_id": [5]}) == {"item_ids": [5], "scores": [plain["score"]]}
    ranked = h.one({"user_id": [9], "item_ids": [4, 8, 15], "top_k": [2]})
    assert len(ranked["item_ids"]) == len(ranked["scores"]) == 2 and set(ranked["item_ids"]) <= {4, 8, 15}


@pytest.mark.parametrize("body, message", [
    ({"user_id": 5000}, "unknown user_id 5000"),
    ({"top_k": 3}, "user_id is required"),
    ({"user_id": "abc"}, "user_id must be an integer, got str 'abc'"),
    ({"user_id": 1.5}, "user_id must be an integer, got float"),
    ({"user_id": True}, "user_id must be an integer, got bool"),
    ({"user_id": [1, 2]}, "user_id must be a single value, got a list of 2"),
    ({"user_id": 1, "top_k": 0}, "top_k must be at least 1"),
    ({"user_id": 1, "top_k": "many"}, "top_k must be an integer"),
    ({"user_id": 1, "item_id": 999}, "unknown item_id 999"),
    ({"user_id": 1, "item_ids": []}, "item_ids must be a non-empty list"),
    ({"user_id": 1, "item_ids": [1, "x"]}, "item_ids[] must be an integer"),
    ({"user_id": 1, "context": {"device": "toaster"}}, "context.device must be one of ['desktop', 'mobile']"),
    ({"user_id": 1, "context": "not json"}, "context is not valid JSON"),
    ({"user_id": 1, "context": [1, 2]}, "context must be a single value"),
    ([1, 2], "request body must be a JSON object"),
    (b"{not json", "request body is not valid JSON"),
])
def test_bad_input_is_rejected_clearly(handlers, body, message):
    h = handlers["v2"]
    with pytest.raises(ValueError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        h.module._service.parse({"body": body})
    # Alone in its batch: TorchServe's PredictionException, passed on as 400 / INVALID_ARGUMENT.
    with pytest.raises(PredictionException) as raised:
        h({"body": body})
    assert raised.value.error_code == 400 and raised.value.message.startswith(message)


def test_a_bad_request_does_not_fail_its_batch(handlers):
    h = handlers["v1"]
    out = h({"body": {"user_id": 1, "top_k": 1}}, {"body": {"user_id": -4}}, {"body": {"user_id": 2, "top_k": 1}})
    assert [r.get("user_id") for r in out] == [1, None, 2]
    assert out[1] == {"error": "unknown user_id -4: this model knows 1000 users"}
    assert h.context.statuses == {1: (400, out[1]["error"])}


def test_unknown_fields_are_ignored(handlers):
    h = handlers["v1"]
    assert h.one({"user_id": 3, "top_k": 1, "id": "req-1", "parameters": {}}) == h.one({"user_id": 3, "top_k": 1})

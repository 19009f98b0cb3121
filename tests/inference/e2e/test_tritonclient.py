"""The Open Inference Protocol's standard client, the real `tritonclient`, against the mesh: its
HTTP client through Envoy (the /v2 REST form, tokens in headers) and its gRPC client against
`inference.GRPCInferenceService` on the mesh's gRPC port and through Envoy. The model is the
demo recommendation model promoted to Production; its metadata is the signature stored in the
Registry, its INT64 inputs and INT64 / FP32 outputs map both ways, and an unknown model is an
error the client reports, not a crash.

`tritonclient.grpc` carries its own copy of the protocol's generated modules, which cannot live in
one process with the mesh's (`inference.grpc_predict_v2_pb2`: duplicate protobuf symbols), so
its part runs in a subprocess printing JSON, and nothing here imports `inference.*`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from .conftest import eventually, json_body, signature_of

SERVE_WITHIN_S = 20.0


@pytest.fixture(scope="module")
async def production_demo(private_mesh, demo_artifacts) -> str:
    """The demo model, version 1 with its signature, promoted to Production and serving."""
    mesh, v1 = private_mesh, demo_artifacts["v1"]
    name, version = await mesh.register(v1.path, prefix="triton", signature=signature_of(v1))
    mesh.promote(name, version)

    async def serving() -> None:
        reply = mesh.rest("POST", f"/api/v1/inference/models/{name}:predict", {"inputs": {"user_id": 1}})
        assert reply.status == 200, (reply.status, json_body(reply))

    await eventually(serving, SERVE_WITHIN_S, "the Production demo model serves")
    return name


def expected_metadata(signature: dict) -> tuple[list, list]:
    return ([(t["name"], t["datatype"], list(t["shape"])) for t in signature["inputs"]],
            [(t["name"], t["datatype"], list(t["shape"])) for t in signature["outputs"]])


def specs(tensors: list[dict]) -> list:
    return [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in tensors]


async def test_the_http_client_through_envoy(private_mesh, production_demo, demo_artifacts):
    mesh, name = private_mesh, production_demo
    headers = {"authorization": f"Bearer {mesh.token}", "content-type": "application/json"}
    client = httpclient.InferenceServerClient(url=mesh.stack.front_door, network_timeout=30.0)
    try:
        assert client.is_server_live(headers=headers)
        assert client.is_server_ready(headers=headers)
        assert client.is_model_ready(name, headers=headers)
        assert client.is_model_ready(name, "1", headers=headers)

        metadata = client.get_model_metadata(name, headers=headers)
        assert metadata["name"] == name and metadata["versions"] == ["1"]
        inputs, outputs = expected_metadata(signature_of(demo_artifacts["v1"]))
        assert (specs(metadata["inputs"]), specs(metadata["outputs"])) == (inputs, outputs)

        user = httpclient.InferInput("user_id", [1], "INT64")
        user.set_data_from_numpy(np.array([123], dtype=np.int64), binary_data=False)
        top_k = httpclient.InferInput("top_k", [1], "INT64")
        top_k.set_data_from_numpy(np.array([4], dtype=np.int64), binary_data=False)
        wanted = [httpclient.InferRequestedOutput("item_ids", binary_data=False),
                  httpclient.InferRequestedOutput("scores", binary_data=False)]
        result = client.infer(name, [user, top_k], outputs=wanted, request_id="t-1", headers=headers)
        item_ids, scores = result.as_numpy("item_ids"), result.as_numpy("scores")
        assert item_ids.dtype == np.int64 and item_ids.shape == (4,)
        assert scores.dtype == np.float32 and scores.shape == (4,)
        assert list(scores) == sorted(scores, reverse=True) and ((scores >= 0) & (scores <= 1)).all()
        response = result.get_response()
        assert (response["model_name"], response["model_version"], response["id"]) == (name, "1", "t-1")

        # The same ranking as the mesh's own Predict returns for that input.
        reply = mesh.rest("POST", f"/api/v1/inference/models/{name}:predict", {"inputs": {"user_id": 123, "top_k": 4}})
        ranked = reply.json()["prediction"]["scores"]
        assert item_ids.tolist() == [s["item_id"] for s in ranked]
        assert scores.tolist() == pytest.approx([s["score"] for s in ranked], abs=1e-6)

        assert not client.is_model_ready(f"{name}-missing", headers=headers)
        with pytest.raises(InferenceServerException) as caught:
            client.infer(f"{name}-missing", [user], headers=headers)
        assert caught.value.status() == "404"  # the protocol's error body: {"error": message}
        assert f"{name}-missing" in caught.value.message() and "exception occurred" not in caught.value.message()
        with pytest.raises(InferenceServerException) as caught:  # a wrong type: the caller's mistake
            bad = httpclient.InferInput("user_id", [1], "FP32")
            bad.set_data_from_numpy(np.array([1.5], dtype=np.float32), binary_data=False)
            client.infer(name, [bad], headers=headers)
        assert caught.value.status() == "400"
    finally:
        client.close()


GRPC_SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    addresses, token, name = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    headers = {"authorization": "Bearer " + token}
    results = {}
    for address in addresses:
        out = results[address] = {}
        client = grpcclient.InferenceServerClient(url=address)
        out["live"] = client.is_server_live(headers=headers)
        out["ready"] = client.is_server_ready(headers=headers)
        out["model_ready"] = client.is_model_ready(name, headers=headers)
        try:  # not ready: false, or the model's NOT_FOUND
            out["missing_ready"] = client.is_model_ready(name + "-missing", headers=headers)
        except InferenceServerException as error:
            out["missing_ready"] = error.status()
        out["metadata"] = client.get_model_metadata(name, headers=headers, as_json=True)
        user = grpcclient.InferInput("user_id", [1], "INT64")
        user.set_data_from_numpy(np.array([123], dtype=np.int64))
        top_k = grpcclient.InferInput("top_k", [1], "INT64")
        top_k.set_data_from_numpy(np.array([4], dtype=np.int64))
        result = client.infer(name, [user, top_k], request_id="g-1", headers=headers, client_timeout=30,
                              outputs=[grpcclient.InferRequestedOutput("item_ids"),
                                       grpcclient.InferRequestedOutput("scores")])
        for output in ("item_ids", "scores"):
            array = result.as_numpy(output)
            out[output] = {"dtype": str(array.dtype), "shape": list(array.shape), "values": array.tolist()}
        response = result.get_response(as_json=True)
        out["response"] = {k: response.get(k) for k in ("model_name", "model_version", "id")}
        try:
            client.infer(name + "-missing", [user], headers=headers, client_timeout=30)
            out["missing_infer"] = None
        except InferenceServerException as error:
            out["missing_infer"] = {"status": error.status(), "message": error.message()}
        try:
            client.is_server_live(headers={})
            out["no_token"] = None
        except InferenceServerException as error:
            out["no_token"] = {"status": error.status()}
        client.close()
    print(json.dumps(results))
''')


async def test_the_grpc_client_directly_and_through_envoy(private_mesh, production_demo, demo_artifacts):
    mesh, name = private_mesh, production_demo
    addresses = [mesh.stack.grpc_addr, mesh.stack.front_door]
    run = subprocess.run([sys.executable, "-c", GRPC_SCRIPT, json.dumps(addresses), mesh.token, name],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])

    reply = mesh.rest("POST", f"/api/v1/inference/models/{name}:predict", {"inputs": {"user_id": 123, "top_k": 4}})
    ranked = reply.json()["prediction"]["scores"]
    inputs, outputs = expected_metadata(signature_of(demo_artifacts["v1"]))
    for address in addresses:
        out = results[address]
        assert (out["live"], out["ready"], out["model_ready"]) == (True, True, True), out
        assert out["missing_ready"] in (False, "StatusCode.NOT_FOUND"), out
        assert out["metadata"]["name"] == name and out["metadata"]["versions"] == ["1"]
        assert (specs(out["metadata"]["inputs"]), specs(out["metadata"]["outputs"])) == (inputs, outputs)
        assert out["item_ids"]["dtype"] == "int64" and out["item_ids"]["shape"] == [4]
        assert out["scores"]["dtype"] == "float32" and out["scores"]["shape"] == [4]
        assert out["item_ids"]["values"] == [s["item_id"] for s in ranked]
        assert out["scores"]["values"] == pytest.approx([s["score"] for s in ranked], abs=1e-6)
        assert out["response"] == {"model_name": name, "model_version": "1", "id": "g-1"}
        assert out["missing_infer"]["status"] == "StatusCode.NOT_FOUND", out["missing_infer"]
        assert out["no_token"]["status"] == "StatusCode.UNAUTHENTICATED", out["no_token"]

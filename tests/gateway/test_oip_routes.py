"""The Open Inference Protocol's REST form through the front door: its routes, and JSON with
the proto field names (snake_case, as the protocol and tritonclient want) on its paths only.

Envoy's transcoder takes its per-route config from the route a REST call matches *before*
transcoding, so the override sits on a REST route of the protocol's path prefix; the tests
through a real Envoy show the JSON that results.
"""

from __future__ import annotations

import contextlib
import copy
from concurrent import futures

import grpc
import pytest
import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, json_format
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from mnbara.mlserving.inference.v1 import inference_pb2
from mnbara.mlserving.inference.v1 import open_inference_rest_pb2 as rest

from ml_serving_tools.devauth import mint_token
from ml_serving_tools.gateway import generate

from .gateway_support import DESCRIPTOR, envoy_in_front_of, keys_auth, request, validate

OIP = "mnbara.mlserving.inference.v1.OpenInferenceRestService"
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
JWT = "envoy.filters.http.jwt_authn"
SCOPES = {"ServerLive": "inference.read", "ServerReady": "inference.read", "ModelReady": "inference.read",
          "ServerMetadata": "inference.read", "ModelMetadata": "inference.read", "ModelInfer": "inference.write"}
JSON_TYPE = {"content-type": "application/json"}


def routes(config: dict) -> list[dict]:
    listener = config["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]


def global_transcoder(config: dict) -> dict:
    listener = config["static_resources"]["listeners"][0]
    filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    (found,) = [f["typed_config"] for f in filters if f["name"] == TRANSCODER]
    return found


@pytest.fixture()
def config_file(tmp_path, dev_keys):
    return generate.write(DESCRIPTOR, tmp_path / "envoy.yaml", "127.0.0.1:18000", "127.0.0.1:15051",
                          "127.0.0.1:19901", auth=keys_auth(dev_keys))


@pytest.fixture()
def config(config_file) -> dict:
    return yaml.safe_load(config_file.read_text())


def test_the_config_with_the_override_validates(config_file):
    result = validate(config_file)
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_oip_rpc_has_its_route_and_scope(config):
    by_path = {r["match"].get("path"): r for r in routes(config)}
    for method, scope in SCOPES.items():
        route = by_path[f"/{OIP}/{method}"]
        assert route["metadata"]["filter_metadata"]["mesh"]["required_scope"] == scope
    assert OIP in global_transcoder(config)["services"]


def test_oip_rest_paths_have_a_route_printing_proto_field_names(config):
    all_routes = routes(config)
    (index,) = [i for i, r in enumerate(all_routes) if r["match"].get("path_separated_prefix") == "/v2"]
    oip_rest = all_routes[index]
    assert "grpc" not in oip_rest["match"]  # REST before transcoding
    assert all_routes[-1]["name"] == "rest-before-transcoding" and index == len(all_routes) - 2
    assert oip_rest["typed_per_filter_config"][JWT]["requirement_name"] == "bearer"

    expected = copy.deepcopy(global_transcoder(config))
    assert expected["print_options"]["preserve_proto_field_names"] is False  # everywhere else: lowerCamelCase
    expected["print_options"]["preserve_proto_field_names"] = True
    assert oip_rest["typed_per_filter_config"][TRANSCODER] == expected
    overridden = [r["name"] for r in all_routes if TRANSCODER in r.get("typed_per_filter_config", {})]
    assert overridden == [oip_rest["name"]]


def test_another_service_on_the_oip_prefix_fails_generation(tmp_path):
    """Its JSON would silently turn snake_case: refused."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes())
    (service,) = [s for f in fds.file if f.package == "mnbara.mlserving.bandit.v1" for s in f.service]
    (select,) = [m for m in service.method if m.name == "Select"]
    select.options.Extensions[annotations_pb2.http].post = "/v2/select"
    moved = tmp_path / "moved.binpb"
    moved.write_bytes(fds.SerializeToString())
    with pytest.raises(generate.ConfigError, match=r"/v2/select"):
        generate.build_config(moved, auth=None)


# ---------------------------------------------------------------------------- through a real Envoy


class RecordingMesh(grpc.GenericRpcHandler):
    """Answers each method with a preset message (default empty) and records the requests."""

    def __init__(self, answers: dict[str, bytes]):
        self.answers, self.requests = answers, []

    def service(self, details):
        method = details.method

        def answer(request: bytes, _context) -> bytes:
            self.requests.append((method, request))
            return self.answers.get(method, b"")

        return grpc.unary_unary_rpc_method_handler(answer)


@contextlib.contextmanager
def recording_mesh(answers: dict[str, bytes]):
    mesh = RecordingMesh(answers)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[mesh])
    checker = health.HealthServicer()
    checker.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", mesh
    finally:
        server.stop(None)


def infer_answer() -> bytes:
    output = rest.ModelInferResponse.OutputTensor(name="scores", shape=[2, 2], datatype="FP64")
    output.data.extend([0.5, 1.5, 2.5, 3.5])
    return rest.ModelInferResponse(model_name="m", model_version="3", id="r1", outputs=[output]).SerializeToString()


def test_oip_json_is_snake_case_and_the_rest_stays_lower_camel_case(tmp_path, dev_keys):
    token = mint_token(dev_keys)
    answers = {
        f"/{OIP}/ModelInfer": infer_answer(),
        f"/{OIP}/ServerLive": rest.ServerLiveResponse(live=True).SerializeToString(),
        "/mnbara.mlserving.inference.v1.InferenceService/ListLoadedModels":
            inference_pb2.ListLoadedModelsResponse(next_page_token="t").SerializeToString(),
    }
    body = {"id": "r1", "parameters": {"priority": 1},
            "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3, 4]]}],
            "outputs": [{"name": "scores", "parameters": {"binary_data": False}}]}
    with recording_mesh(answers) as (address, mesh), \
            envoy_in_front_of(address, tmp_path / "envoy", auth=keys_auth(dev_keys)) as front:
        reply = request(front, "POST", "/v2/models/m/versions/3/infer", body, JSON_TYPE, token=token)
        assert reply.status == 200, reply.body
        assert reply.json() == {"model_name": "m", "model_version": "3", "id": "r1", "outputs": [
            {"name": "scores", "shape": [2, 2], "datatype": "FP64", "data": [0.5, 1.5, 2.5, 3.5]}]}

        live = request(front, "GET", "/v2/health/live", token=token)
        assert (live.status, live.json()) == (200, {"live": True})
        assert request(front, "GET", "/v2/health/live").status == 401  # a token, as everywhere

        listed = request(front, "GET", "/api/v1/inference/models", token=token)
        assert listed.status == 200 and listed.json()["nextPageToken"] == "t"

    (method, sent), *_ = mesh.requests
    assert method == f"/{OIP}/ModelInfer"
    received = rest.ModelInferRequest.FromString(sent)
    assert (received.model_name, received.model_version, received.id) == ("m", "3", "r1")
    (tensor,) = received.inputs
    assert list(tensor.shape) == [2, 2] and json_format.MessageToDict(tensor.data) == [[1, 2], [3, 4]]
    assert received.parameters["priority"] == 1 and received.outputs[0].parameters["binary_data"] is False


class FailingMesh(grpc.GenericRpcHandler):
    """Answers every call NOT_FOUND with a message that needs JSON escaping."""

    MESSAGE = 'no model "m\\\\x" here'

    def service(self, details):
        def answer(request: bytes, context) -> bytes:
            context.abort(grpc.StatusCode.NOT_FOUND, self.MESSAGE)

        return grpc.unary_unary_rpc_method_handler(answer)


def test_oip_errors_carry_the_protocols_error_key_and_other_errors_do_not(tmp_path, dev_keys):
    token = mint_token(dev_keys)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), handlers=[FailingMesh()])
    checker = health.HealthServicer()
    checker.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with envoy_in_front_of(f"127.0.0.1:{port}", tmp_path / "envoy", auth=keys_auth(dev_keys)) as front:
            oip_reply = request(front, "GET", "/v2/models/m", token=token)
            other = request(front, "GET", "/api/v1/inference/models", token=token)
    finally:
        server.stop(None)
    assert oip_reply.status == 404
    body = oip_reply.json()
    assert body["error"] == FailingMesh.MESSAGE and body["message"] == FailingMesh.MESSAGE and body["code"] == 5
    assert other.status == 404 and "error" not in other.json() and other.json()["message"] == FailingMesh.MESSAGE

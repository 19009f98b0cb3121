"""The generated Envoy config: valid for the real Envoy, complete, and the generator's inputs.

The REST behaviour behind a real upstream is the e2e tests' business; here Envoy runs in
front of a stand-in upstream or none, only to pin the error shapes Envoy produces itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ml_serving_tools.gateway import envoy_process as run
from ml_serving_tools.gateway import generate
from ml_serving_tools.net import free_port
from ml_serving_tools.paths import ROOT

DESCRIPTOR = ROOT / "gen" / "descriptor.binpb"


def mesh_services_in_descriptor() -> set[str]:
    """Read independently of the generator: every service under mnbara.mlserving.*."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes())
    return {
        f"{f.package}.{s.name}" for f in fds.file if f.package.startswith("mnbara.mlserving.") for s in f.service
    }


def hcm(config: dict) -> dict:
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def transcoder(config: dict) -> dict:
    (found,) = [f for f in hcm(config)["http_filters"] if f["name"] == "envoy.filters.http.grpc_json_transcoder"]
    return found["typed_config"]


@pytest.fixture()
def config_file(tmp_path) -> Path:
    return generate.write(DESCRIPTOR, tmp_path / "envoy.yaml", "127.0.0.1:18000", "127.0.0.1:15051", "127.0.0.1:19901")


def test_envoy_validates_the_generated_config(config_file):
    result = subprocess.run(
        [run.envoy_binary(), "--mode", "validate", "-c", str(config_file), "--log-level", "warn"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_upstream_by_name_validates(tmp_path):
    """A Kubernetes Service name as upstream gives a DNS cluster Envoy accepts."""
    out = generate.write(DESCRIPTOR, tmp_path / "envoy.yaml", "0.0.0.0:8000", "mesh-grpc.ml.svc:50051", "127.0.0.1:9901")
    cluster = yaml.safe_load(out.read_text())["static_resources"]["clusters"][0]
    assert cluster["type"] == "STRICT_DNS"
    result = subprocess.run([run.envoy_binary(), "--mode", "validate", "-c", str(out)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_transcoder_lists_every_mesh_service_and_no_other(config_file):
    config = yaml.safe_load(config_file.read_text())
    expected = mesh_services_in_descriptor()
    assert "mnbara.mlserving.bandit.v1.BanditService" in expected
    assert set(transcoder(config)["services"]) == expected
    assert not [s for s in transcoder(config)["services"] if s.startswith("org.pytorch.")]


def test_every_mesh_service_and_grpc_infrastructure_is_routed(config_file):
    routes = yaml.safe_load(config_file.read_text())["static_resources"]["listeners"][0]["filter_chains"][0]
    routes = routes["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    prefixes = {r["match"]["prefix"] for r in routes if "route" in r}
    for service in [*mesh_services_in_descriptor(), *generate.PASSTHROUGH_GRPC_SERVICES]:
        assert f"/{service}/" in prefixes
    assert routes[-1]["direct_response"]["status"] == 404


def test_transcoder_options_match_grpc_gateway(config_file):
    options = transcoder(yaml.safe_load(config_file.read_text()))
    assert options["proto_descriptor"] == str(DESCRIPTOR.resolve())
    assert options["print_options"] == {
        "add_whitespace": False,
        "always_print_primitive_fields": True,
        "always_print_enums_as_ints": False,
        "preserve_proto_field_names": False,
    }
    assert options["request_validation_options"] == {"reject_unknown_method": True, "reject_unknown_query_parameters": True}
    assert options["convert_grpc_status"] is True
    assert options["auto_mapping"] is False


def test_upstream_is_http2_and_admin_is_loopback(config_file):
    config = yaml.safe_load(config_file.read_text())
    cluster = config["static_resources"]["clusters"][0]
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in options["explicit_http_config"]
    assert cluster["connect_timeout"] == "1s"
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    with pytest.raises(generate.ConfigError, match="loopback"):
        generate.build_config(DESCRIPTOR, admin_addr="0.0.0.0:9901")


def test_missing_descriptor_fails_clearly(tmp_path, capsys):
    with pytest.raises(generate.ConfigError, match="not found"):
        generate.build_config(tmp_path / "absent.binpb")
    assert generate.main(["--descriptor", str(tmp_path / "absent.binpb"), "--out", str(tmp_path / "e.yaml")]) == 2
    assert "mesh-proto" in capsys.readouterr().err
    assert not (tmp_path / "e.yaml").exists()


def test_cli_addresses_come_from_env_unless_flags_given(monkeypatch):
    monkeypatch.setenv("ENVOY_LISTEN", "127.0.0.1:8100")
    monkeypatch.setenv("MESH_GRPC_ADDR", "127.0.0.1:50100")
    monkeypatch.setenv("ENVOY_ADMIN", "127.0.0.1:9100")
    args = generate.parse_args([])
    assert (args.listen, args.upstream, args.admin) == ("127.0.0.1:8100", "127.0.0.1:50100", "127.0.0.1:9100")
    args = generate.parse_args(["--listen", "127.0.0.1:8200"])
    assert args.listen == "127.0.0.1:8200"


def test_cli_writes_the_config(tmp_path):
    out = tmp_path / "sub" / "envoy.yaml"
    env = {k: v for k, v in os.environ.items() if k not in generate.ENV_VARS.values()}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("mesh-envoy-config")), "--descriptor", str(DESCRIPTOR), "--out", str(out),
         "--listen", "127.0.0.1:8000", "--upstream", "127.0.0.1:50051", "--admin", "127.0.0.1:9901"],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(out.read_text())["admin"]["address"]["socket_address"]["port_value"] == 9901


def _request(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, str, dict]:
    request = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("content-type", ""), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("content-type", ""), json.loads(exc.read())


class NeverAnsweringUpstream(grpc.GenericRpcHandler):
    """Accepts every call over HTTP/2; a handler runs only once a whole request message has
    arrived, which never happens for a request Envoy rejects.

    Envoy's transcoder lets a REST request's headers through before it has parsed the body
    (decodeHeaders continues unless the request ends with its headers), so the router
    connects upstream while the body is still to be parsed. With no upstream at all the
    refused connect (503) can beat the parse error (400); with this one the connect always
    succeeds and the answer is Envoy's own. A request that did reach it gets a 500.
    """

    def service(self, handler_call_details):
        return grpc.unary_unary_rpc_method_handler(self.reached)

    @staticmethod
    def reached(request, context):
        context.abort(grpc.StatusCode.INTERNAL, "the request reached the test upstream")


@contextlib.contextmanager
def never_answering_upstream():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[NeverAnsweringUpstream()])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


@contextlib.contextmanager
def envoy_in_front_of(upstream: str, folder: Path):
    """A running Envoy with the generated config; yields its front door."""
    folder.mkdir()
    front, admin = (f"127.0.0.1:{free_port()}" for _ in range(2))
    config = generate.write(DESCRIPTOR, folder / "envoy.yaml", front, upstream, admin)
    proc = run.start_envoy(config, base_id=free_port(), log_path=folder / "envoy.log")
    try:
        run.wait_ready(admin, timeout=15, proc=proc)
        yield front
    finally:
        run.stop_envoy(proc)


def assert_status_json(front: str, cases: list[tuple]) -> None:
    for method, path, body, status, code in cases:
        got_status, content_type, error = _request(f"http://{front}{path}", method, body)
        assert (got_status, content_type) == (status, "application/json"), (method, path, error)
        assert error["code"] == code and error["message"] and error["details"] == [], (method, path, error)


def test_envoy_own_errors_are_status_json(tmp_path):
    """Envoy's own rejections answer google.rpc.Status JSON, as grpc-gateway does.

    Unknown routes and bad requests are answered by Envoy in front of an upstream that
    never answers; a valid call to an upstream that is down gets Envoy's 503, which must
    be JSON too.
    """
    rejected = [
        ("GET", "/api/v1/nope", None, 404, 5),
        ("DELETE", "/api/v1/bandits/select", None, 404, 5),
        ("GET", "/api/v1/bandits/stats?bandit=x&nope=1", None, 400, 3),
        ("POST", "/api/v1/bandits/select", b'{"bandit":', 400, 3),
        ("POST", "/api/v1/bandits/select", b'{"bandit":5}', 400, 3),
    ]
    with never_answering_upstream() as upstream, envoy_in_front_of(upstream, tmp_path / "live") as front:
        assert_status_json(front, rejected)

    with envoy_in_front_of(f"127.0.0.1:{free_port()}", tmp_path / "down") as front:
        assert_status_json(front, [("POST", "/api/v1/bandits/select", b'{"bandit":"x"}', 503, 14)])
        # Native gRPC gets a plain grpc-message, not the JSON meant for REST clients.
        with grpc.insecure_channel(front) as channel:
            with pytest.raises(grpc.RpcError) as failure:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not failure.value.details().startswith("{"), failure.value.details()

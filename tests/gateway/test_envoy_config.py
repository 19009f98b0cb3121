"""The generated Envoy config: valid for the real Envoy, complete, and the generator's inputs.

The REST behaviour behind a real upstream is the e2e tests' business; here Envoy runs in
front of a stand-in upstream or none, only to pin the error shapes Envoy produces itself.
The front door's guards (auth, limits, CORS, TLS, health checks) have their own modules.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mnbara.mlserving.auth.v1 import auth_pb2

from ml_serving_tools.devauth import mint_token
from ml_serving_tools.gateway import generate
from ml_serving_tools.net import free_port

from ..support import make_pki
from .gateway_support import (
    DESCRIPTOR,
    envoy_in_front_of,
    fake_mesh,
    keys_auth,
    request,
    rest_json_error,
    validate,
)

BANDIT = "mnbara.mlserving.bandit.v1.BanditService"
JWT, RBAC = "envoy.filters.http.jwt_authn", "envoy.filters.http.rbac"


def mesh_rpcs_in_descriptor() -> dict[str, str]:
    """Read independently of the generator: '/pkg.Service/Method' -> required scope."""
    fds = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes())
    return {f"/{f.package}.{s.name}/{m.name}": m.options.Extensions[auth_pb2.required_scope]
            for f in fds.file if f.package.startswith("mnbara.mlserving.") for s in f.service for m in s.method}


def mesh_services_in_descriptor() -> set[str]:
    return {path.split("/")[1] for path in mesh_rpcs_in_descriptor()}


def hcm(config: dict) -> dict:
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def routes(config: dict) -> list[dict]:
    return hcm(config)["route_config"]["virtual_hosts"][0]["routes"]


def http_filter(config: dict, name: str) -> dict:
    (found,) = [f for f in hcm(config)["http_filters"] if f["name"] == name]
    return found["typed_config"]


def transcoder(config: dict) -> dict:
    return http_filter(config, "envoy.filters.http.grpc_json_transcoder")


@pytest.fixture()
def config_file(tmp_path, dev_keys) -> Path:
    return generate.write(DESCRIPTOR, tmp_path / "envoy.yaml", "127.0.0.1:18000", "127.0.0.1:15051",
                          "127.0.0.1:19901", auth=keys_auth(dev_keys))


@pytest.fixture()
def config(config_file) -> dict:
    return yaml.safe_load(config_file.read_text())


def test_envoy_validates_the_generated_config(config_file):
    result = validate(config_file)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_upstream_by_name_validates(tmp_path, dev_keys):
    """A Kubernetes Service name as upstream gives a DNS cluster Envoy accepts."""
    out = generate.write(DESCRIPTOR, tmp_path / "envoy.yaml", "0.0.0.0:8000", "mesh-grpc.ml.svc:50051",
                         "127.0.0.1:9901", auth=keys_auth(dev_keys))
    cluster = yaml.safe_load(out.read_text())["static_resources"]["clusters"][0]
    assert cluster["type"] == "STRICT_DNS"
    result = validate(out)
    assert result.returncode == 0, result.stdout + result.stderr


def test_remote_jwks_from_the_issuer_validates(tmp_path):
    """Kubernetes: the JWKS is fetched over TLS from the issuer, through a cluster of its own."""
    auth = generate.JwtAuth(issuer="https://issuer.example", audiences=("ml-serving-mesh",),
                            jwks_url="https://issuer.example/.well-known/jwks.json")
    out = generate.write(DESCRIPTOR, tmp_path / "envoy.yaml", "0.0.0.0:8000", "mesh-grpc.ml.svc:50051",
                         "127.0.0.1:9901", auth=auth)
    result = validate(out)
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(out.read_text())
    provider = http_filter(config, JWT)["providers"]["mesh"]
    assert provider["remote_jwks"]["http_uri"]["uri"] == "https://issuer.example/.well-known/jwks.json"
    (jwks,) = [c for c in config["static_resources"]["clusters"] if c["name"] == "jwks_issuer"]
    assert jwks["transport_socket"]["typed_config"]["sni"] == "issuer.example"


def test_upstream_mtls_validates(tmp_path):
    pki = make_pki(tmp_path / "pki")
    upstream_tls = generate.UpstreamTls(ca=pki.ca, cert=pki.client_cert, key=pki.client_key, server_name="localhost")
    out = generate.write(DESCRIPTOR, tmp_path / "envoy.yaml", "0.0.0.0:8000", "mesh-grpc.ml.svc:50051",
                         "127.0.0.1:9901", auth=None, upstream_tls=upstream_tls)
    result = validate(out)
    assert result.returncode == 0, result.stdout + result.stderr
    cluster = yaml.safe_load(out.read_text())["static_resources"]["clusters"][0]
    assert cluster["transport_socket"]["typed_config"]["sni"] == "localhost"


def test_transcoder_lists_every_mesh_service_and_no_other(config):
    expected = mesh_services_in_descriptor()
    assert BANDIT in expected
    assert set(transcoder(config)["services"]) == expected
    assert not [s for s in transcoder(config)["services"] if s.startswith("org.pytorch.")]


def test_filters_run_cheap_refusals_first_token_before_body_scope_after_transcoding(config):
    names = [f["name"] for f in hcm(config)["http_filters"]]
    assert names == ["envoy.filters.http.local_ratelimit", "envoy.filters.http.cors", "mesh.json_body_guard", JWT,
                     "envoy.filters.http.buffer", "mesh.oip_error_shape", "envoy.filters.http.grpc_json_transcoder", RBAC,
                     "envoy.filters.http.router"]


def test_every_rpc_has_its_own_route_requiring_its_scope(config):
    """Routes match gRPC paths (REST calls are routed after transcoding), one per RPC."""
    by_path = {r["match"]["path"]: r for r in routes(config) if "path" in r["match"]}
    expected = mesh_rpcs_in_descriptor()
    assert set(by_path) == set(expected)
    for path, scope in expected.items():
        route = by_path[path]
        assert route["match"]["grpc"] == {}
        assert route["typed_per_filter_config"][JWT]["requirement_name"] == "bearer"
        policies = route["typed_per_filter_config"][RBAC]["rbac"]["rules"]["policies"]
        ((name, policy),) = policies.items()
        assert name == f"scope {scope}"
        in_scope = policy["principals"][0]["or_ids"]["ids"][0]["sourced_metadata"]["metadata_matcher"]
        assert in_scope["value"]["string_match"]["safe_regex"]["regex"] == f"(.* )?{scope.replace('.', chr(92) + '.')}( .*)?"
        assert route["metadata"]["filter_metadata"]["mesh"]["required_scope"] == scope
    # The filter's own RBAC policy denies every route that has none of its own.
    assert http_filter(config, RBAC)["rules"] == {"action": "ALLOW", "policies": {}}


def test_health_and_reflection_are_open_and_rest_needs_a_token(config):
    by_prefix = {r["match"].get("prefix"): r for r in routes(config)}
    for service in generate.PASSTHROUGH_GRPC_SERVICES:
        per_filter = by_prefix[f"/{service}/"]["typed_per_filter_config"]
        assert per_filter[JWT]["disabled"] is True and "rbac" not in per_filter[RBAC]
    rest = routes(config)[-1]
    assert rest["name"] == "rest-before-transcoding" and "grpc" not in rest["match"]
    assert rest["typed_per_filter_config"][JWT]["requirement_name"] == "bearer"
    provider = http_filter(config, JWT)["providers"]["mesh"]
    assert provider["forward"] is True and provider["payload_in_metadata"] == "jwt_payload"
    assert provider["from_headers"] == [{"name": "authorization", "value_prefix": "Bearer "}]


def test_retries_only_for_idempotent_rpcs(config):
    by_path = {r["match"]["path"]: r["route"] for r in routes(config) if "path" in r["match"]}
    retried = {path for path, route in by_path.items() if "retry_policy" in route}
    reads = {path for path, scope in mesh_rpcs_in_descriptor().items() if scope.endswith(".read")}
    assert retried == reads | {f"/{BANDIT}/Reward", f"/{BANDIT}/BatchReward"}
    for path in (f"/{BANDIT}/Select", f"/{BANDIT}/CreateBandit", f"/{BANDIT}/SelectContextual"):
        assert path not in retried
    policy = by_path[f"/{BANDIT}/GetStats"]["retry_policy"]
    assert set(policy["retry_on"].split(",")) == {"unavailable", "reset", "connect-failure", "refused-stream"}
    assert policy["num_retries"] == 2


def test_upstream_is_health_checked_by_grpc_and_never_used_unhealthy(config):
    cluster = config["static_resources"]["clusters"][0]
    (check,) = cluster["health_checks"]
    assert check["grpc_health_check"] == {"service_name": ""}
    assert (check["interval"], check["no_traffic_interval"], check["unhealthy_threshold"]) == ("1s", "1s", 2)
    assert cluster["common_lb_config"]["healthy_panic_threshold"] == {"value": 0}


def test_an_rpc_without_a_scope_fails_generation(tmp_path):
    fds = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR.read_bytes())
    (service,) = [s for f in fds.file if f.package == "mnbara.mlserving.bandit.v1" for s in f.service]
    (select,) = [m for m in service.method if m.name == "Select"]
    select.options.ClearExtension(auth_pb2.required_scope)
    unscoped = tmp_path / "unscoped.binpb"
    unscoped.write_bytes(fds.SerializeToString())
    with pytest.raises(generate.ConfigError, match=rf"required_scope.*{BANDIT}/Select"):
        generate.build_config(unscoped, auth=None)


def test_auth_off_is_explicit_and_warns(tmp_path, caplog):
    with pytest.raises(TypeError):
        generate.build_config(DESCRIPTOR)  # no `auth`: a caller must choose
    with caplog.at_level(logging.WARNING, logger="ml_serving_tools.gateway.generate"):
        config = generate.build_config(DESCRIPTOR, auth=None)
    assert "authentication is OFF" in caplog.text
    names = [f["name"] for f in hcm(config)["http_filters"]]
    assert JWT not in names and RBAC not in names
    result = validate(generate.write(DESCRIPTOR, tmp_path / "open.yaml", auth=None))
    assert result.returncode == 0, result.stdout + result.stderr

    out = tmp_path / "cli.yaml"
    cli = subprocess.run([str(Path(sys.executable).with_name("mesh-envoy-config")), "--descriptor", str(DESCRIPTOR),
                          "--out", str(out), "--no-auth"], capture_output=True, text=True, timeout=60, check=False)
    assert cli.returncode == 0, cli.stderr
    assert "authentication is OFF" in cli.stderr


def test_transcoder_options_match_grpc_gateway(config):
    options = transcoder(config)
    assert options["proto_descriptor"] == str(DESCRIPTOR.resolve())
    assert options["print_options"] == {
        "add_whitespace": False,
        "always_print_primitive_fields": True,
        "always_print_enums_as_ints": False,
        "preserve_proto_field_names": False,
    }
    assert options["request_validation_options"] == {
        "reject_unknown_method": True, "reject_unknown_query_parameters": True,
        "reject_binding_body_field_collisions": True}
    assert options["convert_grpc_status"] is True
    assert options["auto_mapping"] is False
    assert options["max_request_body_size"] == 4 * 1024 * 1024
    assert options["max_response_body_size"] == 16 * 1024 * 1024


def test_limits_are_below_the_meshs(config):
    manager = hcm(config)
    assert manager["max_request_headers_kb"] == 8  # the mesh accepts 16 KiB
    assert manager["request_headers_timeout"] == "10s"
    assert http_filter(config, "envoy.filters.http.buffer")["max_request_bytes"] == 4 * 1024 * 1024
    monitor = config["overload_manager"]["resource_monitors"][0]
    assert monitor["typed_config"]["max_active_downstream_connections"] == 10_000
    with pytest.raises(generate.ConfigError, match="16 KiB"):
        generate.Limits(max_request_headers_kb=16)
    with pytest.raises(generate.ConfigError, match="the mesh's limit"):
        generate.Limits(max_request_body_bytes=17 * 1024 * 1024)


def test_upstream_is_http2_and_admin_is_loopback(config):
    cluster = config["static_resources"]["clusters"][0]
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in options["explicit_http_config"]
    assert cluster["connect_timeout"] == "1s"
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    with pytest.raises(generate.ConfigError, match="loopback"):
        generate.build_config(DESCRIPTOR, admin_addr="0.0.0.0:9901", auth=None)


def test_cors_origins_must_be_exact(tmp_path):
    with pytest.raises(generate.ConfigError, match="wildcard"):
        generate.build_config(DESCRIPTOR, auth=None, cors_origins=["*"])
    with pytest.raises(generate.ConfigError, match="wildcard"):
        generate.build_config(DESCRIPTOR, auth=None, cors_origins=["https://app.example/path"])


def test_missing_descriptor_fails_clearly(tmp_path, capsys):
    with pytest.raises(generate.ConfigError, match="not found"):
        generate.build_config(tmp_path / "absent.binpb", auth=None)
    assert generate.main(["--descriptor", str(tmp_path / "absent.binpb"), "--out", str(tmp_path / "e.yaml"),
                          "--no-auth"]) == 2
    assert "mesh-proto" in capsys.readouterr().err
    assert not (tmp_path / "e.yaml").exists()


def test_cli_addresses_come_from_env_unless_flags_given(monkeypatch):
    monkeypatch.setenv("ENVOY_LISTEN", "127.0.0.1:8100")
    monkeypatch.setenv("MESH_GRPC_ADDR", "127.0.0.1:50100")
    monkeypatch.setenv("ENVOY_ADMIN", "127.0.0.1:9100")
    monkeypatch.setenv("AUTH_ISSUER", "https://issuer.example")
    args = generate.parse_args([])
    assert (args.listen, args.upstream, args.admin) == ("127.0.0.1:8100", "127.0.0.1:50100", "127.0.0.1:9100")
    assert args.issuer == "https://issuer.example"
    args = generate.parse_args(["--listen", "127.0.0.1:8200"])
    assert args.listen == "127.0.0.1:8200"


def test_cli_writes_the_config(tmp_path, dev_keys):
    out = tmp_path / "sub" / "envoy.yaml"
    env = {k: v for k, v in os.environ.items() if k not in generate.ENV_VARS.values() and not k.startswith("AUTH_")}
    result = subprocess.run(
        [str(Path(sys.executable).with_name("mesh-envoy-config")), "--descriptor", str(DESCRIPTOR), "--out", str(out),
         "--listen", "127.0.0.1:8000", "--upstream", "127.0.0.1:50051", "--admin", "127.0.0.1:9901",
         "--jwks-file", str(dev_keys.jwks), "--issuer", dev_keys.issuer, "--audience", dev_keys.audience,
         "--cors-origin", "https://app.example", "--rate-limit-per-second", "5", "--rate-limit-burst", "10"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(out.read_text())
    assert config["admin"]["address"]["socket_address"]["port_value"] == 9901
    provider = http_filter(config, JWT)["providers"]["mesh"]
    assert provider["local_jwks"]["filename"] == str(dev_keys.jwks.resolve())
    assert provider["issuer"] == dev_keys.issuer and provider["audiences"] == [dev_keys.audience]
    bucket = http_filter(config, "envoy.filters.http.local_ratelimit")["descriptors"][0]["token_bucket"]
    assert (bucket["tokens_per_fill"], bucket["max_tokens"]) == (5, 10)
    assert validate(out).returncode == 0


def test_envoy_own_errors_are_status_json(tmp_path, dev_keys):
    """Envoy's own rejections answer google.rpc.Status JSON, as grpc-gateway does.

    Unknown routes and bad requests are answered by Envoy in front of a stand-in mesh; a
    valid call to an upstream that is down gets Envoy's 503, which must be JSON too.
    """
    token = mint_token(dev_keys)
    rejected = [
        ("GET", "/api/v1/nope", None, 404, 5),
        ("DELETE", "/api/v1/bandits/select", None, 404, 5),
        ("GET", "/api/v1/bandits/stats?bandit=x&nope=1", None, 400, 3),
        ("POST", "/api/v1/bandits/select", b'{"bandit":', 400, 3),
        ("POST", "/api/v1/bandits/select", b'{"bandit":5}', 400, 3),
    ]
    json_type = {"content-type": "application/json"}
    with fake_mesh() as mesh, envoy_in_front_of(mesh.address, tmp_path / "live", auth=keys_auth(dev_keys)) as front:
        for method, path, body, status, code in rejected:
            rest_json_error(request(front, method, path, body, json_type, token=token), status, code)
        assert not mesh.calls  # none of them reached the mesh

    down = f"127.0.0.1:{free_port()}"
    with envoy_in_front_of(down, tmp_path / "down", auth=keys_auth(dev_keys)) as front:
        reply = request(front, "POST", "/api/v1/bandits/select", {"bandit": "x"}, json_type, token=token)
        assert rest_json_error(reply, 503, 14)["message"] == "no healthy upstream"
        # Native gRPC gets a plain grpc-message, not the JSON meant for REST clients.
        with grpc.insecure_channel(front.address) as channel, pytest.raises(grpc.RpcError) as failure:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not failure.value.details().startswith("{"), failure.value.details()

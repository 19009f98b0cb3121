"""What browsers may do through the front door: CORS only for listed origins, and no
cross-site form posts (a mutating call with a body must be JSON, else 415)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .gateway_support import envoy_in_front_of, fake_mesh, grpc_unary, keys_auth, request, rest_json_error

LISTED, UNLISTED = "https://app.example", "https://evil.example"
SELECT_PATH = "/api/v1/bandits/select"
BODY = b'{"bandit": "b"}'


@pytest.fixture(scope="module")
def door(tmp_path_factory, dev_keys):
    with fake_mesh() as mesh, envoy_in_front_of(mesh.address, tmp_path_factory.mktemp("browser"),
                                                auth=keys_auth(dev_keys), cors_origins=[LISTED]) as front:
        yield front, mesh


@pytest.fixture(scope="module")
def door_without_cors(tmp_path_factory, dev_keys):
    with fake_mesh() as mesh, envoy_in_front_of(mesh.address, tmp_path_factory.mktemp("no-cors"),
                                                auth=keys_auth(dev_keys)) as front:
        yield front, mesh


def preflight(front, origin):
    return request(front, "OPTIONS", SELECT_PATH, headers={
        "origin": origin, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type"})


def test_a_listed_origin_is_allowed(door, token):
    front, _ = door
    reply = preflight(front, LISTED)
    assert reply.status == 200
    assert reply.headers["access-control-allow-origin"] == LISTED
    assert "authorization" in reply.headers["access-control-allow-headers"]
    actual = request(front, "POST", SELECT_PATH, BODY, {"content-type": "application/json", "origin": LISTED},
                     token=token)
    assert actual.status == 200 and actual.headers["access-control-allow-origin"] == LISTED


def test_an_unlisted_origin_gets_no_cors_headers(door, door_without_cors, token):
    for front, _ in (door, door_without_cors):
        for origin in (UNLISTED, "null", LISTED + ".evil.example"):
            reply = preflight(front, origin)
            assert reply.status != 200 and "access-control-allow-origin" not in reply.headers, (origin, reply.status)
            actual = request(front, "POST", SELECT_PATH, BODY,
                             {"content-type": "application/json", "origin": origin}, token=token)
            assert "access-control-allow-origin" not in actual.headers
    # Without configured origins not even the usual one is allowed.
    assert "access-control-allow-origin" not in preflight(door_without_cors[0], LISTED).headers


@pytest.mark.parametrize("content_type", [None, "text/plain", "text/plain;charset=UTF-8",
                                          "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "application/jsonp", "application/json-patch+json"])
@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_a_mutating_call_with_a_non_json_body_is_415(door, token, method, content_type):
    front, mesh = door
    before = len(mesh.calls)
    headers = {"content-type": content_type} if content_type else {}
    reply = request(front, method, SELECT_PATH, BODY, headers, token=token)
    error = rest_json_error(reply, 415, 3)
    assert "application/json" in error["message"]
    chunked = request(front, method, SELECT_PATH, iter([BODY]), {**headers, "transfer-encoding": "chunked"},
                      token=token)
    rest_json_error(chunked, 415, 3)
    assert len(mesh.calls) == before


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl for HTTP/2 without a content-length")
def test_an_http2_body_without_a_length_is_checked_too(door, token):
    """Over HTTP/2 a body may come without content-length: the guard reads it to know."""
    front, mesh = door
    before = len(mesh.calls)
    base = ["curl", "-s", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_code}", "-X", "POST",
            f"http://{front.address}{SELECT_PATH}", "-H", f"authorization: Bearer {token}", "-H", "content-length:"]
    refused = subprocess.run([*base, "-H", "content-type: text/plain", "--data-binary", BODY.decode()],
                             capture_output=True, text=True, timeout=30, check=False)
    assert refused.stdout.rsplit("\n", 1)[1] == "415", refused
    assert len(mesh.calls) == before
    accepted = subprocess.run([*base, "-H", "content-type: application/json", "--data-binary", BODY.decode()],
                              capture_output=True, text=True, timeout=30, check=False)
    assert accepted.stdout.rsplit("\n", 1)[1] == "200", accepted


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_json_passes(door, token, content_type):
    front, _ = door
    assert request(front, "POST", SELECT_PATH, BODY, {"content-type": content_type}, token=token).status == 200


def test_calls_without_a_body_and_grpc_pass(door, token):
    front, _ = door
    # No body, so nothing for a content type to describe.
    assert request(front, "POST", "/api/v1/ml/retraining/trigger", None, {}, token=token).status == 200
    assert request(front, "POST", "/api/v1/ml/retraining/trigger", b"", {}, token=token).status == 200
    assert request(front, "DELETE", "/api/v1/bandits/definitions/b", None, {}, token=token).status == 200
    assert request(front, "GET", "/api/v1/bandits/stats?bandit=b", None, {}, token=token).status == 200
    # Native gRPC (application/grpc) is not REST.
    assert grpc_unary(front.address, "/mnbara.mlserving.bandit.v1.BanditService/Select",
                      (("authorization", f"Bearer {token}"),)) == b""

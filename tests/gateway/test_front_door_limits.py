"""Limits at the front door, each hit through a real Envoy in front of a stand-in mesh.

Every limit is smaller than the mesh's own, so the client is told by Envoy what it exceeded
(431, 413, 429, 408) and the request never reaches the mesh, whose answer would be a
confusing RESOURCE_EXHAUSTED (429).
"""

from __future__ import annotations

import contextlib
import socket
import time

import grpc
import pytest
from mnbara.mlserving.bandit.v1 import bandit_pb2 as pb

from ml_serving_tools.gateway.generate import Limits

from .gateway_support import (
    envoy_in_front_of,
    fake_mesh,
    grpc_health_check,
    grpc_unary,
    keys_auth,
    request,
    request_with_large_body,
    rest_json_error,
)

BANDIT = "/mnbara.mlserving.bandit.v1.BanditService"
JSON = {"content-type": "application/json"}
STATS = "/api/v1/bandits/stats?bandit=b"


@contextlib.contextmanager
def door(folder, keys, **limits):
    with fake_mesh() as mesh, envoy_in_front_of(mesh.address, folder, auth=keys_auth(keys),
                                                limits=Limits(**limits)) as front:
        yield front, mesh


@pytest.fixture(scope="module")
def default_door(tmp_path_factory, dev_keys):
    with door(tmp_path_factory.mktemp("limits"), dev_keys) as opened:
        yield opened


def test_a_12_kb_header_is_431_from_envoy(default_door, token):
    front, mesh = default_door
    assert request(front, "GET", STATS, headers={"x-big": "a" * 7_000}, token=token).status == 200
    before = len(mesh.calls)
    reply = request(front, "GET", STATS, headers={"x-big": "a" * 12_000}, token=token)
    rest_json_error(reply, 431, 8)
    # Over HTTP/2 (gRPC) Envoy's codec resets the stream instead: INTERNAL, not the mesh's RESOURCE_EXHAUSTED.
    with pytest.raises(grpc.RpcError) as reset:
        grpc_unary(front.address, f"{BANDIT}/GetStats", (("authorization", f"Bearer {token}"), ("x-big", "a" * 12_000)))
    assert reset.value.code() == grpc.StatusCode.INTERNAL
    assert len(mesh.calls) == before


def test_a_20_mb_body_is_413_from_envoy(default_door, token):
    front, mesh = default_door
    headers = {**JSON, "authorization": f"Bearer {token}"}
    assert request_with_large_body(front, "/api/v1/bandits/select", 3 * 1024 * 1024, headers).status == 200
    before = len(mesh.calls)
    reply = request_with_large_body(front, "/api/v1/bandits/select", 20 * 1024 * 1024, headers)
    rest_json_error(reply, 413, 8)
    assert len(mesh.calls) == before


def test_a_response_over_the_transcoders_limit_is_a_json_500(tmp_path, dev_keys, token):
    with door(tmp_path, dev_keys, max_response_body_bytes=1024) as (front, mesh):
        mesh.answers[f"{BANDIT}/GetStats"] = pb.GetStatsResponse(bandit="x" * 500).SerializeToString()
        assert request(front, "GET", STATS, token=token).status == 200
        mesh.answers[f"{BANDIT}/GetStats"] = pb.GetStatsResponse(bandit="x" * 5000).SerializeToString()
        rest_json_error(request(front, "GET", STATS, token=token), 500, 2)


def test_a_client_over_its_rate_gets_429_and_others_do_not(tmp_path, dev_keys, token):
    with door(tmp_path, dev_keys, rate_limit_per_second=1, rate_limit_burst=3) as (front, _):
        statuses = []
        while 429 not in statuses:  # the bucket holds 3; at most one more token a second
            statuses.append(request(front, "GET", STATS, token=token).status)
            assert len(statuses) < 30, statuses
        assert statuses[:3] == [200, 200, 200]
        limited = request(front, "GET", STATS, token=token)
        if limited.status == 429:  # (unless a second passed and refilled the bucket)
            assert limited.json()["code"] == 8 and "x-ratelimit-limit" in limited.headers
        # Another client address (any 127.x is loopback) has a bucket of its own.
        assert request(front, "GET", STATS, token=token, source="127.0.0.2").status == 200
        # Native gRPC callers get RESOURCE_EXHAUSTED (not UNAVAILABLE, which they would retry).
        with pytest.raises(grpc.RpcError) as limited_grpc:
            for _ in range(30):
                grpc_health_check(front.address)
        assert limited_grpc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_half_sent_request_is_closed_after_the_header_timeout(tmp_path, dev_keys):
    with door(tmp_path, dev_keys, request_headers_timeout_seconds=0.5) as (front, mesh), \
            socket.create_connection((front.host, front.port), timeout=20) as sock:
        sock.sendall(b"GET /api/v1/bandits/stats?bandit=b HTTP/1.1\r\nhost: mesh\r\nx-still-coming: ")
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        waited = time.monotonic() - started
        assert waited >= 0.4, waited
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b'"code":4' in answer and b"connection: close" in answer
        assert not mesh.calls


def test_a_half_sent_body_is_closed_after_the_request_timeout(tmp_path, dev_keys, token):
    with door(tmp_path, dev_keys, request_timeout_seconds=0.5) as (front, mesh), \
            socket.create_connection((front.host, front.port), timeout=20) as sock:
        sock.sendall(b"POST /api/v1/bandits/select HTTP/1.1\r\nhost: mesh\r\ncontent-type: application/json\r\n"
                     b"authorization: Bearer " + token.encode() + b"\r\ncontent-length: 100\r\n\r\n{\"bandit\"")
        started = time.monotonic()
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        assert time.monotonic() - started >= 0.4
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert not mesh.calls


def test_an_idle_connection_is_closed(tmp_path, dev_keys):
    with door(tmp_path, dev_keys, connection_idle_timeout_seconds=0.5) as (front, _), \
            socket.create_connection((front.host, front.port), timeout=20) as sock:
        started = time.monotonic()
        assert sock.recv(4096) == b""  # closed by Envoy, nothing sent
        assert time.monotonic() - started < 15


def test_connections_beyond_the_cap_are_refused(tmp_path, dev_keys, token):
    with door(tmp_path, dev_keys, max_connections=3) as (front, _):
        held = [socket.create_connection((front.host, front.port), timeout=20) for _ in range(3)]
        try:
            for sock in held:  # each is served
                sock.sendall(b"GET /api/v1/nope HTTP/1.1\r\nhost: mesh\r\n\r\n")
                assert sock.recv(4096).startswith(b"HTTP/1.1 401")
            with socket.create_connection((front.host, front.port), timeout=20) as extra, \
                    contextlib.suppress(ConnectionResetError):
                extra.sendall(b"GET /api/v1/nope HTTP/1.1\r\nhost: mesh\r\n\r\n")
                assert extra.recv(4096) == b""  # closed without an answer
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 15
        while True:  # once Envoy has seen them close, there is room again
            try:
                reply = request(front, "GET", STATS, token=token)
                break
            except ConnectionError:  # refused, reset or closed (RemoteDisconnected is one)
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert reply.status == 200

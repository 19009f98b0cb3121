"""Envoy and its upstream: a mesh that says NOT_SERVING stops getting traffic (and gets it
back when it serves again); failed idempotent calls are retried, others never are."""

from __future__ import annotations

import time

import grpc
import pytest

from .gateway_support import envoy_in_front_of, fake_mesh, grpc_unary, keys_auth, request, rest_json_error

BANDIT = "/mnbara.mlserving.bandit.v1.BanditService"
JSON = {"content-type": "application/json"}
CHECK_WITHIN_SECONDS = 20  # health checks run every second; generous for a loaded machine


@pytest.fixture()
def door(tmp_path, dev_keys):
    with fake_mesh() as mesh, envoy_in_front_of(mesh.address, tmp_path, auth=keys_auth(dev_keys)) as front:
        yield front, mesh


def wait_for_status(front, token, status: int):
    deadline = time.monotonic() + CHECK_WITHIN_SECONDS
    while True:
        reply = request(front, "GET", "/api/v1/bandits/stats?bandit=b", token=token)
        if reply.status == status or time.monotonic() > deadline:
            return reply
        time.sleep(0.1)


def test_a_mesh_reporting_not_serving_gets_no_traffic_until_it_serves_again(door, token):
    front, mesh = door
    assert wait_for_status(front, token, 200).status == 200
    mesh.set_serving(False)  # what a draining mesh reports on SIGTERM
    reply = wait_for_status(front, token, 503)
    assert rest_json_error(reply, 503, 14)["message"] == "no healthy upstream"
    calls = len(mesh.calls)
    with pytest.raises(grpc.RpcError) as native:
        grpc_unary(front.address, f"{BANDIT}/GetStats", (("authorization", f"Bearer {token}"),))
    assert native.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(mesh.calls) == calls  # nothing was sent to it

    mesh.set_serving(True)
    assert wait_for_status(front, token, 200).status == 200


@pytest.mark.parametrize("path, rpc, body", [
    ("/api/v1/bandits/stats?bandit=b", "GetStats", None),  # a read
    ("/api/v1/bandits/reward", "Reward", {"bandit": "b", "armId": "a", "reward": 1, "eventId": "e"}),  # by event id
])
def test_an_idempotent_call_is_retried_when_unavailable(door, token, path, rpc, body):
    front, mesh = door
    mesh.fail_next(f"{BANDIT}/{rpc}", grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAVAILABLE)
    reply = request(front, "POST" if body else "GET", path, body, JSON, token=token)
    assert reply.status == 200, reply.body
    assert len(mesh.calls_of(f"{BANDIT}/{rpc}")) == 3  # two failures, then the answer


def test_retries_give_up_after_two(door, token):
    front, mesh = door
    mesh.fail_next(f"{BANDIT}/GetStats", *[grpc.StatusCode.UNAVAILABLE] * 3)
    reply = request(front, "GET", "/api/v1/bandits/stats?bandit=b", token=token)
    assert reply.status == 503 and reply.json()["code"] == 14
    assert len(mesh.calls_of(f"{BANDIT}/GetStats")) == 3


@pytest.mark.parametrize("path, rpc, body", [
    ("/api/v1/bandits/select", "Select", {"bandit": "b"}),
    ("/api/v1/bandits/definitions", "CreateBandit", {"name": "b", "arms": [{"id": "a"}]}),
])
def test_a_call_that_must_not_run_twice_is_not_retried(door, token, path, rpc, body):
    front, mesh = door
    mesh.fail_next(f"{BANDIT}/{rpc}", grpc.StatusCode.UNAVAILABLE)
    reply = request(front, "POST", path, body, JSON, token=token)
    assert reply.status == 503 and reply.json()["code"] == 14
    assert len(mesh.calls_of(f"{BANDIT}/{rpc}")) == 1


def test_other_failures_are_not_retried(door, token):
    front, mesh = door
    mesh.fail_next(f"{BANDIT}/GetStats", grpc.StatusCode.INTERNAL)
    reply = request(front, "GET", "/api/v1/bandits/stats?bandit=b", token=token)
    assert reply.status == 500
    assert len(mesh.calls_of(f"{BANDIT}/GetStats")) == 1

"""Authentication and scopes at the front door: a real Envoy in front of a stand-in mesh.

Every mesh RPC needs a valid bearer token (401 with WWW-Authenticate otherwise) carrying
the RPC's required_scope (403 otherwise), for REST and native gRPC alike; the token is
forwarded to the mesh unchanged; health checking and reflection need none.
"""

from __future__ import annotations

import grpc
import pytest

from ml_serving_tools.devauth import ensure_dev_keys, mint_token

from .gateway_support import (
    envoy_in_front_of,
    fake_mesh,
    grpc_health_check,
    grpc_unary,
    keys_auth,
    request,
    rest_json_error,
)

BANDIT = "mnbara.mlserving.bandit.v1.BanditService"
JSON = {"content-type": "application/json"}
SELECT = ("POST", "/api/v1/bandits/select", {"bandit": "b"})  # bandit.write
STATS = ("GET", "/api/v1/bandits/stats?bandit=b", None)  # bandit.read


@pytest.fixture(scope="module")
def door(tmp_path_factory, dev_keys):
    with fake_mesh() as mesh, \
            envoy_in_front_of(mesh.address, tmp_path_factory.mktemp("auth"), auth=keys_auth(dev_keys)) as front:
        yield front, mesh


def call(door, what, token=None, headers=None):
    front, _ = door
    method, path, body = what
    return request(front, method, path, body, {**JSON, **(headers or {})}, token=token)


def test_a_valid_token_with_the_scope_passes_and_reaches_the_mesh_unchanged(door, dev_keys):
    _, mesh = door
    token = mint_token(dev_keys, scopes=["bandit.write"])
    reply = call(door, SELECT, token, headers={"x-request-id": "caller-chosen-id"})
    assert reply.status == 200, reply.body
    (seen,) = [c for c in mesh.calls_of(f"/{BANDIT}/Select") if c.metadata.get("authorization") == f"Bearer {token}"]
    assert seen.metadata["x-request-id"] == "caller-chosen-id"  # the id the mesh logs is the caller's


def test_a_missing_token_is_401_with_www_authenticate(door):
    _, mesh = door
    before = len(mesh.calls)
    for what in (SELECT, STATS, ("GET", "/api/v1/no/such/path", None)):
        reply = call(door, what)
        rest_json_error(reply, 401, 16)
        assert reply.headers["www-authenticate"].startswith("Bearer realm=")
    assert len(mesh.calls) == before


@pytest.mark.parametrize("how", ["garbage", "expired", "other issuer", "other audience", "other key", "not bearer",
                                 "in the query string"])
def test_a_bad_token_is_401(door, dev_keys, tmp_path, how):
    front, mesh = door
    before = len(mesh.calls)
    tokens = {
        "garbage": "not.a.jwt",
        "expired": mint_token(dev_keys, ttl_seconds=-600),
        "other issuer": mint_token(dev_keys, iss="https://someone-else.example"),
        "other audience": mint_token(dev_keys, aud="another-api"),
        "other key": mint_token(ensure_dev_keys(tmp_path / "other")),
    }
    if how == "not bearer":
        reply = call(door, STATS, headers={"authorization": f"Basic {mint_token(dev_keys)}"})
    elif how == "in the query string":  # tokens in URLs end up in logs: not accepted
        reply = request(front, "GET", f"/api/v1/bandits/stats?bandit=b&access_token={mint_token(dev_keys)}")
    else:
        reply = call(door, STATS, tokens[how])
    rest_json_error(reply, 401, 16)
    assert reply.headers["www-authenticate"].startswith("Bearer")
    if how in tokens:
        assert 'error="invalid_token"' in reply.headers["www-authenticate"]
    assert len(mesh.calls) == before


@pytest.mark.parametrize("scopes", [["bandit.read"], ["bandit.writer"], ["xbandit.write"], ["registry.write"], []])
def test_a_token_without_the_rpcs_scope_is_403(door, dev_keys, scopes):
    _, mesh = door
    before = len(mesh.calls)
    reply = call(door, SELECT, mint_token(dev_keys, scopes=scopes))
    error = rest_json_error(reply, 403, 7)
    assert "bandit.write" in error["message"]
    assert len(mesh.calls) == before


def test_the_scope_may_be_one_of_many_or_in_scp(door, dev_keys):
    many = mint_token(dev_keys, scopes=["registry.read", "bandit.write", "router.admin"])
    assert call(door, SELECT, many).status == 200
    as_list = mint_token(dev_keys, scopes=[], scp=["bandit.read", "bandit.write"])
    assert call(door, SELECT, as_list).status == 200
    read_only = mint_token(dev_keys, scopes=["bandit.read"])
    assert call(door, STATS, read_only).status == 200


def test_native_grpc_is_checked_the_same_way(door, dev_keys):
    front, _ = door
    select = f"/{BANDIT}/Select"
    with pytest.raises(grpc.RpcError) as missing:
        grpc_unary(front.address, select)
    assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
    other_audience = (("authorization", f"Bearer {mint_token(dev_keys, aud='another-api')}"),)
    with pytest.raises(grpc.RpcError) as rejected:
        grpc_unary(front.address, select, other_audience)
    assert rejected.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert not rejected.value.details().startswith("{")
    read_only = (("authorization", f"Bearer {mint_token(dev_keys, scopes=['bandit.read'])}"),)
    with pytest.raises(grpc.RpcError) as denied:
        grpc_unary(front.address, select, read_only)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    allowed = (("authorization", f"Bearer {mint_token(dev_keys, scopes=['bandit.write'])}"),)
    assert grpc_unary(front.address, select, allowed) == b""


def test_health_checking_needs_no_token(door):
    front, _ = door
    assert grpc_health_check(front.address).status == 1  # SERVING

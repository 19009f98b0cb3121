"""The mesh checks bearer tokens itself: its direct port is no back door."""

from __future__ import annotations

import io
import json
import logging
import time

import grpc
import jwt
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mnbara.mlserving.bandit.v1 import bandit_pb2 as pb
from mnbara.mlserving.bandit.v1 import bandit_pb2_grpc

from ml_serving_server.app import build_server
from ml_serving_server.runtime.auth import JwksFile, TokenVerifier
from ml_serving_server.runtime.observability import JsonFormatter
from ml_serving_tools.devauth import DevKeys, ensure_dev_keys, mint_token

from ...support import error_info, test_runtime


async def get_stats(mesh_or_port, token: str | None = None, header: str | None = None):
    port = getattr(mesh_or_port, "port", mesh_or_port)
    metadata = [("authorization", header or f"Bearer {token}")] if (token or header) else None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        return await bandit_pb2_grpc.BanditServiceStub(channel).GetStats(pb.GetStatsRequest(bandit="no-such-bandit"),
                                                                          metadata=metadata, timeout=5)


async def rejected(mesh, **kwargs) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get_stats(mesh, **kwargs)
    return caught.value


async def test_no_token_is_unauthenticated_and_says_how_to_authenticate(mesh):
    error = await rejected(mesh)
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    info = error_info(error)
    assert (info.reason, info.domain) == ("UNAUTHENTICATED", "bandit.mlserving.mnbara")
    assert dict(error.trailing_metadata())["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("case", ["not-bearer", "garbage", "expired", "audience", "issuer", "foreign-key",
                                  "hmac-forgery", "no-subject"])
async def test_bad_tokens_are_unauthenticated(mesh, dev_keys, tmp_path, case):
    foreign = ensure_dev_keys(tmp_path / "foreign")
    other_audience = DevKeys(dev_keys.private_key_pem, dev_keys.jwks, dev_keys.key_id, audience="someone-else")
    other_issuer = DevKeys(dev_keys.private_key_pem, dev_keys.jwks, dev_keys.key_id, issuer="https://evil.example")
    claims = {"sub": "x", "aud": dev_keys.audience, "iss": dev_keys.issuer, "exp": time.time() + 60,
              "scope": "bandit.read"}
    tokens = {
        "not-bearer": lambda: {"header": "Basic dXNlcjpwYXNz"},
        "garbage": lambda: {"token": "not.a.jwt"},
        "expired": lambda: {"token": mint_token(dev_keys, ttl_seconds=-120)},
        "audience": lambda: {"token": mint_token(other_audience)},
        "issuer": lambda: {"token": mint_token(other_issuer)},
        "foreign-key": lambda: {"token": mint_token(DevKeys(foreign.private_key_pem, foreign.jwks, dev_keys.key_id))},
        # The classic confusion attack: HS256 "signed" with material the attacker knows.
        "hmac-forgery": lambda: {"token": jwt.encode(claims, b"public-key-material-known-to-all", algorithm="HS256",
                                                     headers={"kid": dev_keys.key_id})},
        "no-subject": lambda: {"token": jwt.encode({k: v for k, v in claims.items() if k != "sub"},
                                                   dev_keys.private_key_pem.read_bytes(), algorithm="ES256",
                                                   headers={"kid": dev_keys.key_id})},
    }
    error = await rejected(mesh, **tokens[case]())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.details()
    assert error_info(error).reason == "UNAUTHENTICATED"


async def test_a_token_without_the_rpc_s_scope_is_permission_denied(mesh, dev_keys):
    error = await rejected(mesh, token=mint_token(dev_keys, scopes=["bandit.write", "router.read"]))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(error)
    assert (info.reason, info.metadata["scope"]) == ("SCOPE_REQUIRED", "bandit.read")


@pytest.mark.parametrize("claims", [{"scope": "bandit.read"}, {"scope": "", "scp": ["bandit.read"]}])
async def test_the_scope_may_come_in_scope_or_scp(mesh, dev_keys, claims):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await get_stats(mesh, token=mint_token(dev_keys, **claims))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # let in: the bandit is simply unknown


async def test_health_and_reflection_need_no_token(mesh):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_caller_s_subject_is_in_the_access_log(redis_url, key_prefix, dev_keys):
    # Formatted as the server's stderr handler does: at emit time, inside the RPC.
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    rpc_log = logging.getLogger("ml_serving_server.rpc")
    rpc_log.addHandler(handler)
    level, rpc_log.level = rpc_log.level, logging.INFO
    mesh = await build_server(test_runtime(redis_url, key_prefix, keys=dev_keys, access_log=True,
                                           services=("bandit",)))
    try:
        with pytest.raises(grpc.aio.AioRpcError):
            await get_stats(mesh, token=mint_token(dev_keys, subject="alice@example.com"))
    finally:
        await mesh.stop(0)
        rpc_log.removeHandler(handler)
        rpc_log.setLevel(level)
    access = [json.loads(line) for line in lines.getvalue().splitlines() if '"msg": "rpc"' in line]
    assert access and access[-1]["subject"] == "alice@example.com" and access[-1]["method"].endswith("/GetStats")


async def test_auth_turned_off_is_explicit_and_loud(redis_url, key_prefix, caplog):
    with caplog.at_level(logging.WARNING):
        mesh = await build_server(test_runtime(redis_url, key_prefix, services=("bandit",)))
    try:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await get_stats(mesh)
    finally:
        await mesh.stop(0)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "AUTH_ENABLED=false" in caplog.text


async def test_auth_on_without_keys_refuses_to_start(redis_url, key_prefix):
    runtime = test_runtime(redis_url, key_prefix, services=("bandit",))
    runtime = type(runtime)(runtime.mesh, runtime.redis, runtime.database, type(runtime.auth)())
    with pytest.raises(ValueError, match="AUTH_JWKS_FILE"):
        await build_server(runtime)


async def test_verified_tokens_are_cached_until_they_expire(dev_keys):
    now = [time.time()]
    verifier = TokenVerifier(JwksFile(str(dev_keys.jwks)), dev_keys.issuer, dev_keys.audience, leeway_s=0,
                             clock=lambda: now[0])
    token = mint_token(dev_keys, ttl_seconds=60)
    decoded = []
    real_decode = verifier._decode

    async def counting_decode(t):
        decoded.append(t)
        return await real_decode(t)

    verifier._decode = counting_decode
    first, second = await verifier.verify(token), await verifier.verify(token)
    assert first == second and len(decoded) == 1
    now[0] += 120  # past its expiry (by the cache's clock): checked again, not served from the cache
    await verifier.verify(token)
    assert len(decoded) == 2


async def test_a_rotated_key_is_picked_up_from_the_jwks_file(tmp_path):
    keys = ensure_dev_keys(tmp_path / "a")
    verifier = TokenVerifier(JwksFile(str(keys.jwks)), keys.issuer, keys.audience)
    assert (await verifier.verify(mint_token(keys, subject="before"))).subject == "before"
    rotated = ensure_dev_keys(tmp_path / "b")
    time.sleep(0.01)  # a new modification time
    keys.jwks.write_text(rotated.jwks.read_text())
    assert (await verifier.verify(mint_token(rotated, subject="after"))).subject == "after"


async def test_an_unauthenticated_caller_learns_nothing_about_its_request(mesh):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as channel:
        garbage = channel.unary_unary("/mnbara.mlserving.bandit.v1.BanditService/GetStats",
                                      request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await garbage(b"\xff\xff\xff", timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED  # not INVALID_ARGUMENT

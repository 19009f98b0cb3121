"""Keys fetched from the issuer's JWKS URL (how Kubernetes deployments get them), live:
Envoy's remote_jwks and the mesh's AUTH_JWKS_URL, against a JWKS served over HTTP here."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading

import grpc
import pytest
from mnbara.mlserving.bandit.v1 import bandit_pb2 as pb
from mnbara.mlserving.bandit.v1 import bandit_pb2_grpc

from ml_serving_server.app import build_server
from ml_serving_server.runtime.settings import AuthSettings
from ml_serving_tools.devauth import ensure_dev_keys, mint_token
from ml_serving_tools.gateway import generate

from ..support import test_runtime
from .gateway_support import envoy_in_front_of, fake_mesh, request


@contextlib.contextmanager
def jwks_server(folder):
    """Serves `folder` (holding jwks.json) over HTTP on a free loopback port; yields the JWKS URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def issuer(tmp_path_factory):
    keys = ensure_dev_keys(tmp_path_factory.mktemp("issuer"))
    with jwks_server(keys.jwks.parent) as url:
        yield keys, url


def test_envoy_fetches_the_issuer_s_keys(issuer, tmp_path):
    keys, url = issuer
    auth = generate.JwtAuth(issuer=keys.issuer, audiences=(keys.audience,), jwks_url=url)
    stranger = ensure_dev_keys(tmp_path / "stranger")
    with fake_mesh() as mesh, envoy_in_front_of(mesh.address, tmp_path / "envoy", auth=auth) as front:
        path = "/api/v1/bandits/stats?bandit=b"
        assert request(front, "GET", path, token=mint_token(keys, scopes=["bandit.read"])).status == 200
        assert request(front, "GET", path, token=mint_token(stranger, scopes=["bandit.read"])).status == 401


async def test_the_mesh_fetches_the_issuer_s_keys(issuer, redis_url, key_prefix):
    keys, url = issuer
    runtime = test_runtime(redis_url, key_prefix, services=("bandit",))
    runtime = type(runtime)(runtime.mesh, runtime.redis, runtime.database,
                            AuthSettings(jwks_url=url, issuer=keys.issuer, audience=keys.audience))
    mesh = await build_server(runtime)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as channel:
            stub = bandit_pb2_grpc.BanditServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetStats(pb.GetStatsRequest(bandit="none"), timeout=10,
                                    metadata=[("authorization", f"Bearer {mint_token(keys, scopes=['bandit.read'])}")])
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # let in: the bandit is simply unknown
    finally:
        await mesh.stop(0)

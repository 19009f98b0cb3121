"""The mesh's own port over TLS, and over mutual TLS (in Kubernetes: only Envoy may connect)."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from ml_serving_server.app import build_server
from ml_serving_server.runtime.settings import MeshSettings

from ...support import make_pki, test_runtime


async def health(port: int, credentials: grpc.ChannelCredentials):
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        return await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)


async def test_tls_serves_a_client_that_trusts_the_ca(tmp_path, redis_url, key_prefix):
    pki = make_pki(tmp_path)
    mesh = await build_server(test_runtime(redis_url, key_prefix, services=("bandit",),
                                           tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key)))
    try:
        reply = await health(mesh.port, grpc.ssl_channel_credentials(pki.ca.read_bytes()))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as plaintext:
            with pytest.raises(grpc.aio.AioRpcError):
                await health_pb2_grpc.HealthStub(plaintext).Check(health_pb2.HealthCheckRequest(), timeout=2)
    finally:
        await mesh.stop(0)


async def test_mutual_tls_refuses_a_client_without_a_certificate(tmp_path, redis_url, key_prefix):
    pki = make_pki(tmp_path)
    mesh = await build_server(test_runtime(redis_url, key_prefix, services=("bandit",),
                                           tls_cert_file=str(pki.server_cert), tls_key_file=str(pki.server_key),
                                           tls_client_ca_file=str(pki.ca)))
    try:
        with pytest.raises(grpc.aio.AioRpcError):
            await health(mesh.port, grpc.ssl_channel_credentials(pki.ca.read_bytes()))
        with_certificate = grpc.ssl_channel_credentials(pki.ca.read_bytes(), pki.client_key.read_bytes(),
                                                        pki.client_cert.read_bytes())
        assert (await health(mesh.port, with_certificate)).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await mesh.stop(0)


def test_half_a_tls_configuration_is_refused():
    with pytest.raises(ValidationError, match="MESH_TLS_KEY_FILE"):
        MeshSettings(tls_cert_file="/some/cert.pem")
    with pytest.raises(ValidationError, match="MESH_TLS_CLIENT_CA_FILE"):
        MeshSettings(tls_client_ca_file="/some/ca.pem")

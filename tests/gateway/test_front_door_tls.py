"""TLS at the front door when given a certificate (REST and gRPC over https), and mutual
TLS from Envoy to the mesh; certificates from a throwaway CA made by the test."""

from __future__ import annotations

import http.client
import ssl

import grpc
import pytest

from ml_serving_tools.gateway.generate import ServerTls, UpstreamTls

from ..support import make_pki
from .gateway_support import envoy_in_front_of, fake_mesh, grpc_health_check, keys_auth, request

SELECT = "/mnbara.mlserving.bandit.v1.BanditService/Select"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def door(tmp_path_factory, dev_keys, pki):
    with fake_mesh() as mesh, envoy_in_front_of(mesh.address, tmp_path_factory.mktemp("tls"), auth=keys_auth(dev_keys),
                                                tls=ServerTls(pki.server_cert, pki.server_key)) as front:
        yield front, mesh


def test_rest_over_https_with_the_ca(door, pki, token):
    front, _ = door
    trusting = ssl.create_default_context(cafile=str(pki.ca))
    reply = request(front, "GET", "/api/v1/bandits/stats?bandit=b", token=token, tls=trusting)
    assert reply.status == 200, reply.body
    assert request(front, "GET", "/api/v1/bandits/stats?bandit=b", tls=trusting).status == 401


def test_an_untrusted_certificate_or_plaintext_is_refused(door):
    front, _ = door
    with pytest.raises(ssl.SSLCertVerificationError):
        request(front, "GET", "/api/v1/bandits/stats?bandit=b", tls=ssl.create_default_context())
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        request(front, "GET", "/api/v1/bandits/stats?bandit=b")


def test_grpc_over_tls(door, pki, token):
    front, _ = door
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    assert grpc_health_check(front.address, credentials=credentials).status == 1  # SERVING, over h2 by ALPN
    with grpc.secure_channel(front.address, credentials) as channel:
        assert channel.unary_unary(SELECT)(b"", metadata=(("authorization", f"Bearer {token}"),), timeout=10) == b""


def test_mutual_tls_to_the_mesh(tmp_path, dev_keys, pki, token):
    """The mesh side asks for a client certificate; Envoy presents its own and checks the mesh's."""
    server_credentials = grpc.ssl_server_credentials(
        [(pki.server_key.read_bytes(), pki.server_cert.read_bytes())],
        root_certificates=pki.ca.read_bytes(), require_client_auth=True)
    upstream_tls = UpstreamTls(ca=pki.ca, cert=pki.client_cert, key=pki.client_key, server_name="localhost")
    with fake_mesh(server_credentials) as mesh, envoy_in_front_of(mesh.address, tmp_path, auth=keys_auth(dev_keys),
                                                                  upstream_tls=upstream_tls) as front:
        reply = request(front, "GET", "/api/v1/bandits/stats?bandit=b", token=token)
        assert reply.status == 200, reply.body
        assert mesh.calls

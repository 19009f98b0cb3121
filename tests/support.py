"""Helpers shared by the test suites (fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ml_serving_server.runtime.service import Runtime
from ml_serving_server.runtime.settings import AuthSettings, DatabaseSettings, MeshSettings, RedisSettings
from ml_serving_tools import devservices
from ml_serving_tools import stack as stack_module
from ml_serving_tools.devauth import DevKeys

TEST_DATABASE_PREFIX = "mlserving_test_"


@contextlib.contextmanager
def private_database(server: str):
    """A new database on `server`, dropped on leaving. The session's database is shared with the
    session mesh, whose background loops (canary drivers, allocators) act on what they find."""
    dbname = f"{TEST_DATABASE_PREFIX}{int(time.time())}_{uuid.uuid4().hex[:8]}"
    try:
        yield devservices.create_database_if_missing(server, dbname)
    finally:
        devservices.drop_database(server, dbname)


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo:
    """The one google.rpc.ErrorInfo a mesh error carries."""
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in trailers"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


def auth_settings(keys: DevKeys | None) -> AuthSettings:
    """Token checks against the test's development keys; None: auth explicitly off."""
    if keys is None:
        return AuthSettings(enabled=False)
    return AuthSettings(jwks_file=str(keys.jwks), issuer=keys.issuer, audience=keys.audience)


def test_runtime(redis_url: str = "redis://127.0.0.1:6379/0", key_prefix: str = "mlserving-test",
                 redis_timeout_seconds: float = 2.0, keys: DevKeys | None = None, database_url: str = "",
                 redis_cluster: bool = False, **mesh) -> Runtime:
    """Settings for an in-process server on a free port, without metrics endpoint or access log,
    checking tokens against `keys` (None: auth off, for tests about something else);
    `redis_cluster`: `redis_url` is a node of a Redis Cluster."""
    mesh = {"grpc_addr": "127.0.0.1:0", "metrics_addr": "", "access_log": False, "key_prefix": key_prefix,
            "shutdown_grace_seconds": 1.0, **mesh}
    redis = RedisSettings(url=redis_url, timeout_seconds=redis_timeout_seconds, cluster=redis_cluster)
    return Runtime(MeshSettings(**mesh), redis, DatabaseSettings(url=database_url), auth_settings(keys))


def _with_token(details, token: str):
    metadata = grpc.aio.Metadata(*(details.metadata or ()), ("authorization", f"Bearer {token}"))
    return details._replace(metadata=metadata)


class BearerToken(grpc.aio.UnaryUnaryClientInterceptor):
    """Sends `authorization: Bearer <token>` with every unary call of a grpc.aio channel. (A
    channel files an interceptor under its first kind only: `bearer` gives one of each kind.)"""

    def __init__(self, token: str):
        self.token = token

    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(_with_token(details, self.token), request)


class StreamBearerToken(grpc.aio.UnaryStreamClientInterceptor):
    """The same for server-streaming calls."""

    def __init__(self, token: str):
        self.token = token

    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(_with_token(details, self.token), request)


def bearer(token: str) -> list:
    """Interceptors sending the token with unary and server-streaming calls."""
    return [BearerToken(token), StreamBearerToken(token)]


test_runtime.__test__ = False  # a helper, not a test


@dataclass
class Reply:
    status: int
    content_type: str
    body: bytes

    def json(self):
        return json.loads(self.body)


def call(front_door: str, method: str, path: str, body=None, raw: bytes | None = None, *, token: str | None = None,
         headers: dict[str, str] | None = None) -> Reply:
    """One REST call through Envoy, by the standard library, so a test sees exactly what Envoy sends;
    with `authorization: Bearer <token>` when a token is given."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {token}"} if token else {}),
               **(headers or {})}
    request = urllib.request.Request(f"http://{front_door}{path}", data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Reply(response.status, response.headers.get("content-type", ""), response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers.get("content-type", ""), error.read())


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _issue(ca_key, ca_name, subject: str, sans: list, key, client: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    usage = x509.ExtendedKeyUsageOID.CLIENT_AUTH if client else x509.ExtendedKeyUsageOID.SERVER_AUTH
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))


def make_pki(folder: Path) -> Pki:
    """A throwaway CA, a server certificate for localhost / 127.0.0.1, and a client certificate."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mesh test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = _issue(ca_key, ca_name, "localhost", sans, server_key, client=False)
    client = _issue(ca_key, ca_name, "envoy", [x509.DNSName("envoy")], client_key, client=True)
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key", folder / "client.pem",
              folder / "client.key")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
    pki.server_key.write_bytes(_key_pem(server_key))
    pki.client_cert.write_bytes(client.public_bytes(serialization.Encoding.PEM))
    pki.client_key.write_bytes(_key_pem(client_key))
    return pki


def start_stack_on_free_ports(state: Path, env: dict[str, str], keys: DevKeys) -> stack_module.Stack:
    """A mesh server process and Envoy in front of it, on free loopback ports, checking tokens
    signed with `keys`."""
    def free() -> str:
        return f"127.0.0.1:{stack_module.free_port()}"

    return stack_module.start_stack(state, env, grpc_addr=free(), front_door=free(), admin_addr=free(),
                                    metrics_addr=free(), base_id=stack_module.free_port(), auth=keys)

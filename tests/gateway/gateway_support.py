"""Helpers for the front-door tests: a real Envoy from the generated config, a stand-in mesh
whose health and answers a test controls, raw HTTP clients, and a throwaway CA."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import subprocess
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ml_serving_tools.gateway import envoy_process as run
from ml_serving_tools.gateway import generate
from ml_serving_tools.net import free_port
from ml_serving_tools.paths import ROOT

DESCRIPTOR = ROOT / "gen" / "descriptor.binpb"
HEALTH_SERVICE_PREFIX = "/grpc.health.v1.Health/"


def validate(config: Path) -> subprocess.CompletedProcess:
    """`envoy --mode validate` on a config file."""
    return subprocess.run([run.envoy_binary(), "--mode", "validate", "-c", str(config), "--log-level", "warn"],
                          capture_output=True, text=True, timeout=60, check=False)


def keys_auth(keys) -> generate.JwtAuth:
    return generate.JwtAuth(issuer=keys.issuer, audiences=(keys.audience,), jwks_file=keys.jwks)


# ---------------------------------------------------------------------------- a stand-in mesh


@dataclass
class Call:
    method: str
    metadata: dict[str, str]


@dataclass
class FakeMesh:
    """Serves gRPC health (status set by the test) and answers every other method with an
    empty message, which is a valid answer of every proto3 type; a test may make the next
    calls of a method fail. Records each call with its metadata."""

    address: str = ""
    health: health.HealthServicer = field(default_factory=health.HealthServicer)
    calls: list[Call] = field(default_factory=list)
    failures: dict[str, list[grpc.StatusCode]] = field(default_factory=dict)
    answers: dict[str, bytes] = field(default_factory=dict)  # method -> serialized answer (default: empty)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set("", status)

    def fail_next(self, method: str, *codes: grpc.StatusCode) -> None:
        """The next calls of ``method`` (``/pkg.Service/Method``) fail with these codes, in order."""
        with self.lock:
            self.failures[method] = list(codes)

    def calls_of(self, method: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method]

    def answer(self, method: str, context: grpc.ServicerContext) -> bytes:
        with self.lock:
            self.calls.append(Call(method, dict(context.invocation_metadata())))
            pending = self.failures.get(method)
            code = pending.pop(0) if pending else None
        if code is not None:
            context.abort(code, f"made to fail by the test ({code.name})")
        return self.answers.get(method, b"")


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, mesh: FakeMesh):
        self.mesh = mesh

    def service(self, details):
        if details.method.startswith(HEALTH_SERVICE_PREFIX):
            return None  # the health servicer's
        method = details.method
        return grpc.unary_unary_rpc_method_handler(lambda _request, context: self.mesh.answer(method, context))


@contextlib.contextmanager
def fake_mesh(credentials: grpc.ServerCredentials | None = None):
    """A running FakeMesh, SERVING; yields it (its ``address`` set)."""
    mesh = FakeMesh()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[_Handler(mesh)])
    health_pb2_grpc.add_HealthServicer_to_server(mesh.health, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    mesh.address = f"127.0.0.1:{port}"
    mesh.set_serving(True)
    server.start()
    try:
        yield mesh
    finally:
        server.stop(None)


# ---------------------------------------------------------------------------- a real Envoy


@dataclass(frozen=True)
class Front:
    address: str  # HOST:PORT of the front door
    admin: str
    log: Path

    @property
    def host(self) -> str:
        return self.address.rpartition(":")[0]

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])


@contextlib.contextmanager
def envoy_in_front_of(upstream: str, folder: Path, **options):
    """A running Envoy with the generated config (``options``: build_config's); yields a Front.

    Ready means Envoy has finished its first health check of the upstream.
    """
    folder.mkdir(parents=True, exist_ok=True)
    front, admin = (f"127.0.0.1:{free_port()}" for _ in range(2))
    config = generate.write(DESCRIPTOR, folder / "envoy.yaml", front, upstream, admin, **options)
    proc = run.start_envoy(config, base_id=free_port(), log_path=folder / "envoy.log")
    try:
        run.wait_ready(admin, timeout=30, proc=proc)
        yield Front(front, admin, folder / "envoy.log")
    finally:
        run.stop_envoy(proc)


# ---------------------------------------------------------------------------- HTTP clients


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def request(front: Front | str, method: str, path: str, body: bytes | dict | None = None,
            headers: dict[str, str] | None = None, *, token: str | None = None, tls: ssl.SSLContext | None = None,
            source: str | None = None, timeout: float = 15) -> Reply:
    """One HTTP/1.1 request with exactly the headers given (plus Host and, with a body,
    Content-Length unless chunked), over TLS when given a context, from a chosen source address."""
    address = front.address if isinstance(front, Front) else front
    host, _, port = address.rpartition(":")
    source_address = (source, 0) if source else None
    if tls is not None:
        conn = http.client.HTTPSConnection(host, int(port), timeout=timeout, context=tls,
                                           source_address=source_address)
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout, source_address=source_address)
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    headers = dict(headers or {})
    if token:
        headers["authorization"] = f"Bearer {token}"
    try:
        chunked = headers.get("transfer-encoding") == "chunked"
        conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def request_with_large_body(front: Front, path: str, size: int, headers: dict[str, str]) -> Reply:
    """POST ``size`` bytes, reading the answer while still sending: Envoy may refuse the
    request (and stop reading) long before the body is sent."""
    sock = socket.create_connection((front.host, front.port), timeout=30)
    head = "".join(f"{k}: {v}\r\n" for k, v in {**headers, "content-length": str(size)}.items())
    chunk = b'{"bandit": "' + b"x" * (size - 15) + b'"}'
    assert len(chunk) == size - 1
    chunk += b" "

    def send() -> None:
        with contextlib.suppress(OSError):  # Envoy closes the connection once it has answered
            sock.sendall(f"POST {path} HTTP/1.1\r\nhost: mesh\r\n{head}\r\n".encode() + chunk)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        response = http.client.HTTPResponse(sock)
        response.begin()
        return Reply(response.status, response.headers, response.read())
    finally:
        sock.close()
        sender.join(10)


def rest_json_error(reply: Reply, status: int, code: int) -> dict:
    """Assert an Envoy error in google.rpc.Status JSON; returns the body."""
    assert (reply.status, reply.content_type) == (status, "application/json"), (reply.status, reply.body)
    error = reply.json()
    assert error["code"] == code and error["message"] and error["details"] == [], error
    return error


def grpc_health_check(address: str, metadata=(), credentials: grpc.ChannelCredentials | None = None,
                      timeout: float = 10):
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), metadata=metadata,
                                                         timeout=timeout)


def grpc_unary(address: str, method: str, metadata=(), timeout: float = 10) -> bytes:
    """A raw unary call with an empty request (a valid message of every proto3 type)."""
    with grpc.insecure_channel(address) as channel:
        return channel.unary_unary(method)(b"", metadata=metadata, timeout=timeout)

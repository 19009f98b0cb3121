"""Helpers shared by the test suites (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ml_serving_server.runtime.service import Runtime
from ml_serving_server.runtime.settings import AuthSettings, DatabaseSettings, MeshSettings, RedisSettings
from ml_serving_tools.devauth import DevKeys


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
                 redis_timeout_seconds: float = 2.0, keys: DevKeys | None = None, **mesh) -> Runtime:
    """Settings for an in-process server on a free port, without metrics endpoint or access log,
    checking tokens against `keys` (None: auth off, for tests about something else)."""
    mesh = {"grpc_addr": "127.0.0.1:0", "metrics_addr": "", "access_log": False, "key_prefix": key_prefix,
            "shutdown_grace_seconds": 1.0, **mesh}
    return Runtime(MeshSettings(**mesh), RedisSettings(url=redis_url, timeout_seconds=redis_timeout_seconds),
                   DatabaseSettings(), auth_settings(keys))


class BearerToken(grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    """Sends `authorization: Bearer <token>` with every call of a grpc.aio channel."""

    def __init__(self, token: str):
        self.header = ("authorization", f"Bearer {token}")

    def _with_token(self, details):
        metadata = grpc.aio.Metadata(*(details.metadata or ()), self.header)
        return details._replace(metadata=metadata)

    async def intercept_unary_unary(self, continuation, details, request):
        return await continuation(self._with_token(details), request)

    async def intercept_unary_stream(self, continuation, details, request):
        return await continuation(self._with_token(details), request)


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

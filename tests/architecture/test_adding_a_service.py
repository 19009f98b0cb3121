"""A sixth service joins the mesh the way the README's "Adding a service" says: a contract,
one package exporting SERVICE, and one entry in the composition root's list. Here the
contract is compiled into a temporary folder and the package written beside it."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import grpc
import grpc_tools
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_tools import protoc

from ml_serving_server.app import SERVICE_PACKAGES, build_server
from ml_serving_server.errors import CommonReason
from ml_serving_tools.devauth import mint_token
from ml_serving_tools.paths import ROOT

from ..support import BearerToken, error_info, test_runtime

ECHO_PROTO = """
syntax = "proto3";
package throwaway.echo.v1;
import "mnbara/mlserving/auth/v1/auth.proto";
service EchoService {
  rpc Echo(EchoRequest) returns (EchoResponse) { option (mnbara.mlserving.auth.v1.required_scope) = "echo.read"; }
  rpc Shout(EchoRequest) returns (EchoResponse) { option (mnbara.mlserving.auth.v1.required_scope) = "echo.write"; }
}
message EchoRequest { string text = 1; }
message EchoResponse { string text = 1; }
enum ErrorReason { ERROR_REASON_UNSPECIFIED = 0; %s }
""" % " ".join(f"{reason.name} = {number};" for number, reason in enumerate(CommonReason, start=1))

ECHO_PACKAGE = '''
"""A throwaway service, shaped like services/bandit: settings, servicer, build, SERVICE."""
import enum

from mnbara.mlserving.catalog import ServiceEntry
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ml_serving_server.errors import CommonReason, InvalidArgument
from ml_serving_server.runtime.service import BuiltService, ServicePackage
from ml_serving_server.runtime.settings import SettingsBase

import echo_pb2, echo_pb2_grpc

ErrorReason = enum.Enum("ErrorReason", [r.name for r in CommonReason])


class EchoSettings(SettingsBase):
    model_config = SettingsConfigDict(env_prefix="ECHO_")
    prefix: str = Field("", description="put before every echo")


class EchoServicer(echo_pb2_grpc.EchoServiceServicer):  # Shout stays UNIMPLEMENTED
    def __init__(self, prefix):
        self.prefix = prefix

    async def Echo(self, request, context):
        if not request.text:
            raise InvalidArgument("text", "is required", reason=ErrorReason.INVALID_FIELD)
        return echo_pb2.EchoResponse(text=self.prefix + request.text)


def build(settings, runtime):
    return BuiltService(EchoServicer(settings.prefix))


ENTRY = ServiceEntry("echo", "throwaway.echo.v1.EchoService", echo_pb2, echo_pb2_grpc, "echo.mlserving.mnbara",
                     echo_pb2.ErrorReason)
SERVICE = ServicePackage(ENTRY, EchoSettings, build, ErrorReason)
'''


@pytest.fixture
def echo_package(tmp_path, monkeypatch):
    (tmp_path / "echo.proto").write_text(ECHO_PROTO)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    assert protoc.main(["protoc", f"-I{tmp_path}", f"-I{ROOT / 'proto'}", f"-I{well_known}",
                        f"--python_out={tmp_path}", f"--grpc_python_out={tmp_path}", "echo.proto"]) == 0
    (tmp_path / "echo_service").mkdir()
    (tmp_path / "echo_service" / "__init__.py").write_text(textwrap.dedent(ECHO_PACKAGE))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ECHO_PREFIX", "echo: ")
    yield importlib.import_module("echo_service")
    for name in ("echo_service", "echo_pb2", "echo_pb2_grpc"):
        sys.modules.pop(name, None)


async def test_a_new_service_is_served_with_the_runtime_s_health_errors_settings_and_auth(
        echo_package, redis_url, key_prefix, dev_keys):
    echo_pb2, echo_pb2_grpc = echo_package.echo_pb2, echo_package.echo_pb2_grpc
    runtime = test_runtime(redis_url, key_prefix, keys=dev_keys, services=("bandit", "echo"))
    mesh = await build_server(runtime, packages=(*SERVICE_PACKAGES, echo_package.SERVICE))
    token = mint_token(dev_keys, scopes=["echo.read", "echo.write"])
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}", interceptors=[BearerToken(token)]) as channel:
            echo = echo_pb2_grpc.EchoServiceStub(channel)
            assert (await echo.Echo(echo_pb2.EchoRequest(text="hi"))).text == "echo: hi"  # ECHO_PREFIX
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await echo.Echo(echo_pb2.EchoRequest())
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            info = error_info(caught.value)
            assert (info.domain, info.reason, info.metadata["field"]) == ("echo.mlserving.mnbara", "INVALID_FIELD",
                                                                          "text")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await echo.Shout(echo_pb2.EchoRequest(text="hi"))
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="throwaway.echo.v1.EchoService"))
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await mesh.stop(0)


async def test_an_unknown_service_name_is_refused_at_start(redis_url, key_prefix):
    with pytest.raises(ValueError, match="unknown service"):
        await build_server(test_runtime(redis_url, key_prefix, services=("bandit", "echo")))

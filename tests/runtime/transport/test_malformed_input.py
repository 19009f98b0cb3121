"""Malformed input at the transport, the same for every service: request bodies that do not
parse, header values that are not UTF-8, and errors too large for HTTP/2 trailers."""

from __future__ import annotations

import asyncio
import logging
import struct
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from mnbara.mlserving.bandit.v1 import bandit_pb2 as pb
from mnbara.mlserving.bandit.v1 import bandit_pb2_grpc
from mnbara.mlserving.catalog import BY_NAME

from ml_serving_server import errors
from ml_serving_server.app import build_server
from ml_serving_server.runtime.server import ServiceBinding, start_server
from ml_serving_server.runtime.settings import MeshSettings
from ml_serving_server.runtime.status import MESH_DOMAIN
from ml_serving_server.services.bandit.domain.errors import ErrorReason
from ml_serving_server.services.bandit.domain.service import BanditService
from ml_serving_server.services.bandit.servicer import BanditServicer

from ...support import error_info, test_runtime

SELECT = "/mnbara.mlserving.bandit.v1.BanditService/Select"
GET_STATS = "/mnbara.mlserving.bandit.v1.BanditService/GetStats"

# A SelectRequest whose `bandit` (field 1, length-delimited) holds bytes that are not UTF-8.
BAD_UTF8_STRING = b"\x0a\x02\xc3\x28"


def tracebacks(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]


async def raw_call(channel: grpc.aio.Channel, path: str, body: bytes) -> grpc.aio.AioRpcError:
    """Sends `body` as the serialized request, bypassing the client's serializer."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await channel.unary_unary(path)(body)
    return caught.value


@pytest.mark.parametrize("body", [b"\xff\xff\xff", BAD_UTF8_STRING, b"\x0a\xff\xff\xff\xff\x0f"],
                         ids=["corrupt", "string not UTF-8", "length past the end"])
async def test_an_undecodable_request_is_invalid_argument_without_a_traceback(channel, caplog, body):
    error = await raw_call(channel, SELECT, body)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(error)
    assert (info.reason, info.domain, info.metadata["field"]) == ("INVALID_FIELD", "bandit.mlserving.mnbara", "request")
    assert error.details().startswith("request: is not a valid mnbara.mlserving.bandit.v1.SelectRequest")
    assert not tracebacks(caplog)


async def test_every_service_refuses_undecodable_requests_alike(channel, caplog):
    unbuilt = await raw_call(channel, "/mnbara.mlserving.pipeline.v1.PipelineService/TriggerRetraining", b"\xff")
    assert unbuilt.code() == grpc.StatusCode.INVALID_ARGUMENT  # before UNIMPLEMENTED: nothing ran
    assert error_info(unbuilt).domain == "pipeline.mlserving.mnbara"
    health = await raw_call(channel, "/grpc.health.v1.Health/Check", b"\xff")
    assert health.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(health).domain == MESH_DOMAIN
    assert not tracebacks(caplog)
    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())  # still serving


async def test_a_bidirectional_stream_refuses_an_undecodable_request_alike(channel, caplog):
    call = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")(iter([b"\xff"]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in call:
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(caught.value).metadata["field"] == "request"
    assert not tracebacks(caplog)


# ----- header values that are not UTF-8 (grpc clients refuse to send them: raw HTTP/2) -----

DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def _literal(name: bytes, value: bytes) -> bytes:
    """An HPACK header field, literal without indexing, with a literal name (both shorter than 127)."""
    return b"\x00" + bytes([len(name)]) + name + bytes([len(value)]) + value


async def http2_grpc_call(port: int, path: str, headers: list[tuple[bytes, bytes]], message: bytes) -> list[tuple]:
    """One gRPC call over a hand-written HTTP/2 connection; the frames received for it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", path.encode()),
               (b":authority", b"localhost"), (b"content-type", b"application/grpc"), (b"te", b"trailers"), *headers]
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(SETTINGS, 0, 0, b"")
                 + _frame(HEADERS, END_HEADERS, 1, b"".join(_literal(n, v) for n, v in request))
                 + _frame(DATA, END_STREAM, 1, struct.pack(">BI", 0, len(message)) + message))
    frames = []
    try:
        while True:
            head = await asyncio.wait_for(reader.readexactly(9), 5)
            kind, flags, stream = head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            frames.append((kind, flags, stream, await reader.readexactly(int.from_bytes(head[:3], "big"))))
            if kind == SETTINGS and not flags & ACK:
                writer.write(_frame(SETTINGS, ACK, 0, b""))
            if kind == GOAWAY or (stream == 1 and (kind == RST_STREAM or (kind == HEADERS and flags & END_STREAM))):
                return frames
    finally:
        writer.close()


async def test_a_header_value_that_is_not_utf8_is_served_and_logs_nothing(redis_url, key_prefix, caplog):
    mesh = await build_server(test_runtime(redis_url, key_prefix, services=("bandit",), access_log=True))
    caplog.set_level(logging.INFO)
    try:
        frames = await http2_grpc_call(mesh.port, GET_STATS, [(b"traceparent", b"00-\xff\xfe-not-utf8"),
                                                              (b"x-request-id", b"req-\xe9\xff")],
                                       pb.GetStatsRequest(bandit=f"no-{uuid.uuid4().hex[:8]}").SerializeToString())
    finally:
        await mesh.stop(0)
    kind, flags, _, _ = frames[-1]
    assert (kind, flags & END_STREAM) == (HEADERS, END_STREAM)  # trailers: answered, not reset
    access = [r for r in caplog.records if r.name == "ml_serving_server.rpc" and r.getMessage() == "rpc"]
    assert [r.fields["code"] for r in access] == ["NOT_FOUND"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("grpc")]
    assert not tracebacks(caplog)


# ----- statuses stay small, whatever a handler puts in them -----

class _VerboseStore:
    """Fails with an error message and metadata far larger than HTTP/2 trailers allow."""

    async def load_counts(self, name):
        raise errors.NotFound("x" * 100_000, reason=ErrorReason.BANDIT_NOT_FOUND,
                              metadata={f"key-{i}-" + "k" * 200: "é" * 10_000 for i in range(50)})


async def test_an_oversized_error_is_cut_to_fit_the_trailers():
    binding = ServiceBinding(BY_NAME["bandit"], BanditServicer(BanditService(_VerboseStore())), built=True)
    settings = MeshSettings(grpc_addr="127.0.0.1:0", metrics_addr="", access_log=False)
    mesh = await start_server(settings, [binding], tracer_provider=None, verifier=None)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}") as chan:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await bandit_pb2_grpc.BanditServiceStub(chan).GetStats(pb.GetStatsRequest(bandit="verbose"))
    finally:
        await mesh.stop(0)
    error = caught.value
    assert error.code() == grpc.StatusCode.NOT_FOUND  # not a reset stream
    info = error_info(error)
    assert info.reason == "BANDIT_NOT_FOUND" and 0 < len(info.metadata) <= 6
    assert len(error.details().encode()) <= 512 and error.details().endswith("…")
    assert sum(len(k) + len(v) for k, v in error.trailing_metadata()) < 4096

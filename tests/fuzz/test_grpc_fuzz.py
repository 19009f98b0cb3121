"""Generated bad and random requests against every method of the Bandit service, over gRPC,
to the in-process server with the production interceptors (the `channel` fixture).

Three kinds of request per method: random bytes as the serialized request; structured
messages whose fields are drawn from strategies built from the message descriptor (with
real bandit names, arm ids and decision ids mixed in, so requests also get past the first
checks); and such messages with a stretch of their bytes overwritten.

Whatever is sent, the server answers with a status it means (never INTERNAL or UNKNOWN,
never a reset stream), carrying an ErrorInfo, in trailers of bounded size; every
INVALID_ARGUMENT names its field; nothing logs a traceback; the server stays healthy.

Deterministic (derandomize, no example database) and bounded: the file runs in seconds.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mnbara.mlserving.bandit.v1 import bandit_pb2 as pb
from mnbara.mlserving.bandit.v1 import bandit_pb2_grpc

from ..support import error_info

SERVICE = pb.DESCRIPTOR.services_by_name["BanditService"]
METHODS = list(SERVICE.methods)

PREFIX = f"fuzz-{uuid.uuid4().hex[:6]}-"
"""Every bandit the fuzzer names starts with this, so it cannot touch another test's bandits."""

EXPECTED_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
                  grpc.StatusCode.UNIMPLEMENTED}
TRAILERS_BOUND = 5 * 1024
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


@dataclass(frozen=True)
class Known:
    """Values the server knows, so generated requests also reach past the first checks."""

    bandit: str
    arm_ids: tuple[str, ...]
    decision_ids: tuple[str, ...]


@pytest.fixture(scope="module")
async def known(channel) -> Known:
    stub = bandit_pb2_grpc.BanditServiceStub(channel)
    name, arms = f"{PREFIX}known", ("a", "b", "c")
    await stub.CreateBandit(pb.CreateBanditRequest(bandit=pb.Bandit(
        name=name, arms=[pb.Arm(id=a) for a in arms], context_dimension=2)))
    plain = (await stub.Select(pb.SelectRequest(bandit=name, k=2))).decision_id
    contextual = (await stub.SelectContextual(pb.SelectContextualRequest(bandit=name, context=[0.5, 1.0]))).decision_id
    return Known(name, arms, (plain, contextual, plain[:-3], plain.replace(".", "..", 1)))


# ----- strategies from the descriptor -----

def long_strings() -> st.SearchStrategy[str]:
    """Strings past the limits (128, 256, 512, 1024 characters, 64 KiB) without drawing each character."""
    return st.builds(lambda char, n: char * n, st.sampled_from("xé\x00:-"), st.sampled_from([129, 257, 513, 1025,
                                                                                            70_000]))


def text(small: bool) -> st.SearchStrategy[str]:
    """Short strings, odd ones, and (unless `small`) strings past the limits."""
    short = st.one_of(st.text(max_size=20), st.sampled_from(["", " ", "a b", "é", "\x00", "../", "%s"]))
    return short if small else st.one_of(short, long_strings())


def string_values(field: FieldDescriptor, known: Known, deletes: bool, small: bool) -> st.SearchStrategy[str]:
    """Strings for a field, by what its name says it holds."""
    if field.name in ("name", "bandit"):
        fuzz_names = st.builds(lambda suffix: PREFIX + suffix, text(small))
        return fuzz_names if deletes else st.one_of(st.just(known.bandit), fuzz_names)
    if field.name in ("id", "arm_id", "candidate_arm_ids", "disable_arm_ids", "enable_arm_ids", "key"):
        return st.one_of(st.sampled_from(known.arm_ids), text(small))
    if field.name == "decision_id":
        return st.one_of(st.sampled_from(known.decision_ids), text(small))
    if field.name == "event_id":
        return st.one_of(st.sampled_from(["e1", "e2"]), text(small))
    return text(small)


def scalar_values(field: FieldDescriptor) -> st.SearchStrategy:
    kind = field.type
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.one_of(st.floats(), st.sampled_from([0.0, 0.5, 1.0, -1.0, 1e7]))
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=64)
    if kind == FieldDescriptor.TYPE_ENUM:
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), st.integers(-3, 1000))
    bits = 64 if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
                          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64) else 32
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED32,
                FieldDescriptor.TYPE_FIXED64):
        return st.one_of(st.integers(0, 10), st.integers(0, 2 ** bits - 1))
    return st.one_of(st.integers(-2, 10), st.integers(-2 ** (bits - 1), 2 ** (bits - 1) - 1))


def repeated(values: st.SearchStrategy, small_values: st.SearchStrategy, small: bool) -> st.SearchStrategy[list]:
    """Short lists, and (unless `small`) now and then one past a limit (1000 arms, 256 context
    values, 10,000 rewards) of one small value repeated, so the message stays within a few MiB."""
    short = st.lists(values, max_size=4)
    if small:
        return short
    return st.one_of(short, st.builds(lambda value, n: [value] * n, small_values, st.sampled_from([257, 1001, 10_001])))


def messages(descriptor: Descriptor, known: Known, deletes: bool = False, depth: int = 0,
             small: bool = False) -> st.SearchStrategy:
    """Messages of `descriptor` with any subset of their fields set to generated values;
    `small` ones hold neither long strings nor long lists."""
    def values_of(field: FieldDescriptor, small: bool) -> st.SearchStrategy:
        if field.message_type is not None:
            if field.message_type.GetOptions().map_entry:
                keys = string_values(field.message_type.fields_by_name["key"], known, deletes, small)
                return st.dictionaries(keys, scalar_values(field.message_type.fields_by_name["value"]), max_size=4)
            if depth >= 2:
                return st.nothing()
            return messages(field.message_type, known, deletes, depth + 1, small)
        if field.type == FieldDescriptor.TYPE_STRING:
            return string_values(field, known, deletes, small)
        return scalar_values(field)

    def field_values(field: FieldDescriptor) -> st.SearchStrategy:
        if not field.is_repeated or (field.message_type and field.message_type.GetOptions().map_entry):
            return values_of(field, small)
        return repeated(values_of(field, small), values_of(field, small=True), small)

    fields = {field.name: field_values(field) for field in descriptor.fields}
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: build(descriptor, values))


def build(descriptor: Descriptor, values: dict):
    message = message_factory.GetMessageClass(descriptor)()
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        target = getattr(message, name) if field.is_repeated or field.message_type else None
        if isinstance(value, dict):
            target.update(value)
        elif field.is_repeated:
            target.extend(value)
        elif field.message_type:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def overwritten(data: bytes, start: int, noise: bytes) -> bytes:
    start = start % (len(data) + 1)
    return data[:start] + noise + data[start + len(noise):]


# ----- sending and judging -----

async def send(channel: grpc.aio.Channel, method, body: bytes) -> None:
    """Sends `body` as the method's serialized request and checks the answer."""
    call = channel.unary_unary(f"/{SERVICE.full_name}/{method.name}")  # bytes in, bytes out
    try:
        await call(body, timeout=10)
    except grpc.aio.AioRpcError as error:
        check_error(error)


def check_error(error: grpc.aio.AioRpcError) -> None:
    assert error.code() in EXPECTED_CODES, (error.code(), error.details())
    info = error_info(error)  # a reset stream or a bare status would have none
    assert info.domain == "bandit.mlserving.mnbara"
    details = error.details() or ""
    size = 3 * len(details.encode()) + sum(len(key) + len(value) for key, value in error.trailing_metadata() or ())
    assert size < TRAILERS_BOUND, size
    if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
        field = info.metadata["field"]
        assert field and details.startswith(f"{field}: "), details


def assert_quiet(caplog) -> None:
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not noisy, noisy[0].getMessage()


async def assert_healthy(channel: grpc.aio.Channel, known: Known) -> None:
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE.full_name))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    stub = bandit_pb2_grpc.BanditServiceStub(channel)
    name = f"{PREFIX}after-{uuid.uuid4().hex[:6]}"
    await stub.CreateBandit(pb.CreateBanditRequest(bandit=pb.Bandit(name=name, arms=[pb.Arm(id="a")])))
    decision = await stub.Select(pb.SelectRequest(bandit=name))
    assert not (await stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, reward=1.0))).duplicate


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@settings(max_examples=100, **SETTINGS)
@given(body=st.one_of(st.binary(max_size=64), st.binary(min_size=1, max_size=512)))
async def test_random_bytes(channel, known, caplog, method, body):
    await send(channel, method, body)
    assert_quiet(caplog)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@settings(max_examples=100, **SETTINGS)
@given(data=st.data())
async def test_structured_requests(channel, known, caplog, method, data):
    request = data.draw(messages(method.input_type, known, deletes=method.name == "DeleteBandit"), label="request")
    await send(channel, method, request.SerializeToString())
    assert_quiet(caplog)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.name)
@settings(max_examples=50, **SETTINGS)
@given(data=st.data(), start=st.integers(0, 1 << 16), noise=st.binary(min_size=1, max_size=8))
async def test_corrupted_requests(channel, known, caplog, method, data, start, noise):
    request = data.draw(messages(method.input_type, known, deletes=method.name == "DeleteBandit"), label="request")
    await send(channel, method, overwritten(request.SerializeToString(), start, noise))
    assert_quiet(caplog)


async def test_the_server_is_healthy_after_fuzzing(channel, known, caplog):
    await assert_healthy(channel, known)
    assert_quiet(caplog)

"""ml_serving.errors and ml_serving.config: trailer parsing and environment defaults, no I/O."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

import ml_serving
from ml_serving import config
from ml_serving.errors import ERRORS_BY_CODE, STATUS_DETAILS_KEY, from_rpc_error


def trailer(code: grpc.StatusCode, message: str, reason: str, domain: str, **metadata: str) -> tuple:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata))
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return ((STATUS_DETAILS_KEY, status.SerializeToString()),)


class SyncError(grpc.RpcError, grpc.Call):
    """What a sync stub raises: an RpcError that is also a Call."""

    def __init__(self, code, details, trailers=()):
        self._code, self._details, self._trailers = code, details, trailers

    def code(self): return self._code
    def details(self): return self._details
    def trailing_metadata(self): return self._trailers
    def initial_metadata(self): return ()
    def is_active(self): return False
    def time_remaining(self): return None
    def cancel(self): return False
    def add_callback(self, callback): return False


def aio_error(code, details, trailers=()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details)


@pytest.mark.parametrize("make", [aio_error, SyncError], ids=["aio", "sync"])
def test_trailer_becomes_typed_error_with_error_info(make):
    code = grpc.StatusCode.INVALID_ARGUMENT
    error = from_rpc_error(make(code, "k: must be positive",
                                trailer(code, "k: must be positive", "INVALID_FIELD", "bandit.mlserving.mnbara",
                                        field="k")))
    assert type(error) is ml_serving.InvalidArgumentError
    assert isinstance(error, ml_serving.MLServingError)
    assert error.code is code
    assert error.message == "k: must be positive"
    assert (error.reason, error.domain, error.metadata) == ("INVALID_FIELD", "bandit.mlserving.mnbara", {"field": "k"})
    assert error.status is not None and error.status.code == code.value[0]
    assert str(error) == "INVALID_ARGUMENT [INVALID_FIELD]: k: must be positive"


def test_server_rich_status_round_trips():
    """The server's own trailer builder and the client's parser agree."""
    from ml_serving_server.runtime.status import rich_status

    code = grpc.StatusCode.NOT_FOUND
    status = rich_status(code, "no bandit x", "BANDIT_NOT_FOUND", "bandit.mlserving.mnbara", {"bandit": "x"})
    error = from_rpc_error(aio_error(status.code, status.details, status.trailing_metadata))
    assert type(error) is ml_serving.NotFoundError
    assert (error.reason, error.metadata) == ("BANDIT_NOT_FOUND", {"bandit": "x"})


@pytest.mark.parametrize("code", list(ERRORS_BY_CODE))
def test_each_code_has_its_subclass(code):
    error = from_rpc_error(aio_error(code, "boom"))
    assert type(error) is ERRORS_BY_CODE[code] and error.code is code


def test_requested_subclasses_exist():
    for name in ("InvalidArgumentError", "NotFoundError", "AlreadyExistsError", "FailedPreconditionError",
                 "UnavailableError", "DeadlineExceededError", "UnimplementedError", "InternalError",
                 "PermissionDeniedError", "UnauthenticatedError", "ResourceExhaustedError"):
        assert issubclass(getattr(ml_serving, name), ml_serving.MLServingError)


def test_without_trailer_reason_is_empty_and_message_kept():
    error = from_rpc_error(aio_error(grpc.StatusCode.UNAVAILABLE, "connection refused"))
    assert type(error) is ml_serving.UnavailableError
    assert (error.message, error.reason, error.domain, error.metadata, error.status) == (
        "connection refused", "", "", {}, None)


def test_unknown_code_gives_base_class_and_garbage_trailer_is_ignored():
    error = from_rpc_error(aio_error(grpc.StatusCode.DATA_LOSS, "lost", ((STATUS_DETAILS_KEY, b"\xff\xff"),)))
    assert type(error) is ml_serving.MLServingError
    assert error.code is grpc.StatusCode.DATA_LOSS and error.reason == ""


def test_status_message_used_when_details_empty():
    code = grpc.StatusCode.INTERNAL
    error = from_rpc_error(SyncError(code, None, trailer(code, "internal error (request id r1)", "INTERNAL",
                                                         "router.mlserving.mnbara", request_id="r1")))
    assert type(error) is ml_serving.InternalError
    assert error.message == "internal error (request id r1)" and error.metadata == {"request_id": "r1"}


def test_address_defaults_to_envoy_front_door(monkeypatch):
    monkeypatch.delenv("ML_SERVING_ADDR", raising=False)
    assert config.default_address() == "127.0.0.1:8000" == ml_serving.DEFAULT_ADDRESS
    assert ml_serving.DIRECT_ADDRESS == "127.0.0.1:50051"
    monkeypatch.setenv("ML_SERVING_ADDR", "127.0.0.1:50051")
    assert config.default_address() == "127.0.0.1:50051"
    assert ml_serving.BanditClient().address == "127.0.0.1:50051"
    assert ml_serving.BanditClient(address="h:1").address == "h:1"


def test_timeout_defaults(monkeypatch):
    monkeypatch.delenv("ML_SERVING_TIMEOUT", raising=False)
    assert config.default_timeout() == 10.0
    monkeypatch.setenv("ML_SERVING_TIMEOUT", "2.5")
    assert config.default_timeout() == 2.5 and ml_serving.RegistryClient().timeout == 2.5
    assert ml_serving.RegistryClient(timeout=1).timeout == 1
    monkeypatch.setenv("ML_SERVING_TIMEOUT", "0")
    assert config.default_timeout() is None
    monkeypatch.setenv("ML_SERVING_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="ML_SERVING_TIMEOUT"):
        config.default_timeout()


def test_reason_matches_its_services_error_reason_enum():
    from mnbara.mlserving.bandit.v1.error_reason_pb2 import ErrorReason as BanditReason
    from mnbara.mlserving.registry.v1.error_reason_pb2 import ErrorReason as RegistryReason

    code = grpc.StatusCode.NOT_FOUND
    error = from_rpc_error(aio_error(code, "no bandit x", trailer(code, "no bandit x", "BANDIT_NOT_FOUND",
                                                                  "bandit.mlserving.mnbara")))
    assert error.reason_enum == BanditReason.BANDIT_NOT_FOUND
    assert error.reason_of(BanditReason) == BanditReason.BANDIT_NOT_FOUND
    # the same number is another service's reason: matching names the enum, so it tells them apart
    assert RegistryReason.MODEL_NOT_FOUND == BanditReason.BANDIT_NOT_FOUND
    assert error.reason_of(RegistryReason) is None
    assert error.reason == "BANDIT_NOT_FOUND"


@pytest.mark.parametrize("reason, domain", [
    ("SOMETHING_NEWER", "bandit.mlserving.mnbara"),  # a reason this client's contracts do not know
    ("NOT_IMPLEMENTED", "mlserving.mnbara"),  # the mesh's own domain: no service enum
    ("", ""),  # no ErrorInfo at all
])
def test_reason_enum_is_none_outside_the_known_enums(reason, domain):
    from mnbara.mlserving.bandit.v1.error_reason_pb2 import ErrorReason

    error = ml_serving.MLServingError(grpc.StatusCode.UNKNOWN, "m", reason, domain)
    assert error.reason_enum is None and error.reason_of(ErrorReason) is None


def test_every_mesh_service_domain_has_its_enum():
    from mnbara.mlserving.catalog import SERVICES

    for service in SERVICES:
        error = ml_serving.MLServingError(grpc.StatusCode.INVALID_ARGUMENT, "m", "INVALID_FIELD", service.error_domain)
        assert error.reason_of(service.error_reasons) == service.error_reasons.Value("INVALID_FIELD")

"""Typed exceptions for gRPC error statuses.

The mesh puts a google.rpc.Status with one google.rpc.ErrorInfo in the
`grpc-status-details-bin` trailer of every error; `from_rpc_error` turns that into an
`MLServingError` subclass chosen by status code, carrying the ErrorInfo's reason,
domain and metadata. A mesh service's reasons are the value names of the ErrorReason enum
in its contract, so errors can also be matched on that enum (`reason_of`).
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.rpc import error_details_pb2, status_pb2
from mnbara.mlserving.catalog import SERVICES

STATUS_DETAILS_KEY = "grpc-status-details-bin"

REASONS_BY_DOMAIN: dict[str, EnumTypeWrapper] = {service.error_domain: service.error_reasons for service in SERVICES}
"""Each mesh service's ErrorInfo.domain and its ErrorReason enum."""


class MLServingError(Exception):
    """An RPC failed. `reason`, `domain` and `metadata` come from the status's ErrorInfo
    (empty when the status carried none, e.g. an error raised by a proxy or by gRPC itself)."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "", domain: str = "",
                 metadata: Mapping[str, str] | None = None, status: status_pb2.Status | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.status = status
        """The full google.rpc.Status from the trailer, if there was one."""

    @property
    def reason_enum(self) -> int | None:
        """The reason as a value of its domain's ErrorReason enum; None when the domain is not a mesh
        service's (or is empty) or the reason is not in the enum (a newer server). The numbers repeat
        across services (7 is both bandit's BANDIT_NOT_FOUND and registry's MODEL_NOT_FOUND), so
        compare them only together with the domain, or use `reason_of`."""
        reasons = REASONS_BY_DOMAIN.get(self.domain)
        if reasons is None:
            return None
        try:
            return reasons.Value(self.reason)
        except ValueError:
            return None

    def reason_of(self, reasons: EnumTypeWrapper) -> int | None:
        """The reason as a value of `reasons`, one service's ErrorReason enum; None when the error
        comes from another domain or its reason is not one of the enum's:

        >>> from mnbara.mlserving.bandit.v1.error_reason_pb2 import ErrorReason
        >>> if error.reason_of(ErrorReason) == ErrorReason.BANDIT_NOT_FOUND: ...
        """
        return self.reason_enum if REASONS_BY_DOMAIN.get(self.domain) is reasons else None

    def __str__(self) -> str:
        reason = f" [{self.reason}]" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}"

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(code={self.code.name}, message={self.message!r}, reason={self.reason!r}, "
                f"domain={self.domain!r}, metadata={self.metadata!r})")


class InvalidArgumentError(MLServingError):
    """INVALID_ARGUMENT: the request is wrong; metadata names the field."""


class NotFoundError(MLServingError):
    """NOT_FOUND."""


class AlreadyExistsError(MLServingError):
    """ALREADY_EXISTS."""


class FailedPreconditionError(MLServingError):
    """FAILED_PRECONDITION: not allowed in the current state."""


class AbortedError(MLServingError):
    """ABORTED: a concurrent change won; retry the read-modify-write."""


class OutOfRangeError(MLServingError):
    """OUT_OF_RANGE, e.g. a resume cursor older than the retained history."""


class UnavailableError(MLServingError):
    """UNAVAILABLE: the service or one of its dependencies is down; retryable."""


class DeadlineExceededError(MLServingError):
    """DEADLINE_EXCEEDED."""


class UnimplementedError(MLServingError):
    """UNIMPLEMENTED: the RPC is not built yet (reason NOT_IMPLEMENTED)."""


class InternalError(MLServingError):
    """INTERNAL: a server bug; metadata carries the request_id to look up in logs."""


class PermissionDeniedError(MLServingError):
    """PERMISSION_DENIED."""


class UnauthenticatedError(MLServingError):
    """UNAUTHENTICATED."""


class ResourceExhaustedError(MLServingError):
    """RESOURCE_EXHAUSTED: overloaded or over quota; retry later."""


class CancelledError(MLServingError):
    """CANCELLED."""


ERRORS_BY_CODE: dict[grpc.StatusCode, type[MLServingError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: AbortedError,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRangeError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.CANCELLED: CancelledError,
}


def _rich_status(trailers) -> status_pb2.Status | None:
    """The google.rpc.Status in the trailers. Not grpcio-status's from_call: it discards the
    status when the call's message differs from the status's (a proxy may re-encode or drop
    grpc-message), and with it the ErrorInfo a caller matches on."""
    for key, value in trailers or ():
        if key == STATUS_DETAILS_KEY:
            try:
                return status_pb2.Status.FromString(value)
            except Exception:  # a malformed trailer must not hide the real error
                return None
    return None


def from_rpc_error(error: grpc.RpcError) -> MLServingError:
    """The typed exception for a failed call: grpc.aio.AioRpcError, or a sync grpc.RpcError
    that is also a grpc.Call (what sync stubs raise). Unknown codes give a plain MLServingError."""
    code = (error.code() if hasattr(error, "code") else None) or grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else None) or ""
    status = _rich_status(error.trailing_metadata() if hasattr(error, "trailing_metadata") else None)
    info = error_details_pb2.ErrorInfo()
    if status is not None:
        message = message or status.message
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                detail.Unpack(info)
                break
    kind = ERRORS_BY_CODE.get(code, MLServingError)
    return kind(code, message or str(error), info.reason, info.domain, dict(info.metadata), status)

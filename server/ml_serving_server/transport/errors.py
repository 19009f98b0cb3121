"""The one place that turns exceptions into gRPC statuses.

Every status carries a google.rpc.Status with one google.rpc.ErrorInfo in the
`grpc-status-details-bin` trailer, which Envoy's convert_grpc_status turns into the
JSON body of a REST error, and which the ml_serving client turns into typed exceptions.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

from .. import errors

_CODES: list[tuple[type[errors.DomainError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Aborted, grpc.StatusCode.ABORTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
]

STATUS_DETAILS_KEY = "grpc-status-details-bin"


def error_domain(method: str) -> str:
    """'/mnbara.mlserving.bandit.v1.BanditService/Select' -> 'bandit.mlserving.mnbara'."""
    package = method.lstrip("/").split("/", 1)[0].rsplit(".", 1)[0]  # mnbara.mlserving.bandit.v1
    parts = package.split(".")
    if len(parts) >= 4 and parts[0] == "mnbara":
        return f"{parts[2]}.{parts[1]}.{parts[0]}"
    return "mlserving.mnbara"


def status_code_for(error: errors.DomainError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def rich_status(code: grpc.StatusCode, message: str, reason: str, domain: str,
                metadata: dict[str, str] | None = None) -> tuple[tuple[str, bytes], ...]:
    """The trailing metadata that carries a google.rpc.Status with one ErrorInfo."""
    info = error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata or {})
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    return ((STATUS_DETAILS_KEY, status.SerializeToString()),)


def describe(exc: BaseException, method: str, request_id: str) -> tuple[grpc.StatusCode, str, tuple]:
    """Status code, message and trailers for an exception raised by a handler."""
    domain = error_domain(method)
    if isinstance(exc, errors.DomainError):
        code = status_code_for(exc)
        return code, exc.message, rich_status(code, exc.message, exc.reason, domain, exc.metadata)
    if isinstance(exc, NotImplementedError):
        # The generated servicer bases raise this for RPCs not built yet.
        code = grpc.StatusCode.UNIMPLEMENTED
        message = f"{method} is not implemented yet"
        return code, message, rich_status(code, message, "NOT_IMPLEMENTED", domain)
    code = grpc.StatusCode.INTERNAL
    message = f"internal error (request id {request_id})"
    return code, message, rich_status(code, message, "INTERNAL", domain, {"request_id": request_id})


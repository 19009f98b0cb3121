"""The one place that turns exceptions into gRPC statuses.

Every error status carries a google.rpc.Status with one google.rpc.ErrorInfo (packed by
grpcio-status into the `grpc-status-details-bin` trailer), which Envoy's
convert_grpc_status turns into the JSON body of a REST error and the ml_serving client
turns into typed exceptions. The reason is the name of a member of the service's
ErrorReason enum; the domain is the service's, from its catalog row.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from .. import errors
from ..errors import CommonReason

_CODES: list[tuple[type[errors.DomainError], grpc.StatusCode]] = [
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Aborted, grpc.StatusCode.ABORTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
]

MESH_DOMAIN = "mlserving.mnbara"
"""ErrorInfo.domain of errors outside any service (an unknown method)."""


def status_code_for(error: errors.DomainError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def rich_status(code: grpc.StatusCode, message: str, reason: str, domain: str,
                metadata: dict[str, str] | None = None) -> grpc.Status:
    """A status whose trailers carry a google.rpc.Status with one ErrorInfo."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=metadata or {}))
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=[detail]))


def describe(exc: BaseException, method: str, domain: str, request_id: str) -> grpc.Status:
    """The status for an exception a handler raised in `method` of the service owning `domain`."""
    if isinstance(exc, errors.DomainError):
        code = status_code_for(exc)
        return rich_status(code, exc.message, exc.reason.name, domain, exc.metadata)
    if isinstance(exc, NotImplementedError):
        # The generated servicer bases raise this for RPCs not built yet.
        return rich_status(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented yet",
                           CommonReason.NOT_IMPLEMENTED.name, domain)
    return rich_status(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})",
                       CommonReason.INTERNAL.name, domain, {"request_id": request_id})

"""The one place that turns exceptions into gRPC statuses.

Every error status carries a google.rpc.Status with one google.rpc.ErrorInfo (packed by
grpcio-status into the `grpc-status-details-bin` trailer), which Envoy's
convert_grpc_status turns into the JSON body of a REST error and the ml_serving client
turns into typed exceptions. The reason is the name of a member of the service's
ErrorReason enum; the domain is the service's, from its catalog row.

Trailers are HTTP/2 headers, and clients and Envoy reset a stream whose headers exceed
their limit (8 KiB by default in gRPC). The message travels twice (grpc-message,
percent-encoded, and inside the base64 details), so both it and the metadata are capped
here, whatever a handler put in them: the trailers stay under 5 KiB.
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
    (errors.OutOfRange, grpc.StatusCode.OUT_OF_RANGE),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Internal, grpc.StatusCode.INTERNAL),
]

MAX_MESSAGE_BYTES = 512
MAX_METADATA_ENTRIES = 6
MAX_METADATA_KEY_BYTES = 64
MAX_METADATA_VALUE_BYTES = 256

MESH_DOMAIN = "mlserving.mnbara"
"""ErrorInfo.domain of errors outside any service (an unknown method)."""


def status_code_for(error: errors.DomainError) -> grpc.StatusCode:
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return grpc.StatusCode.INTERNAL


def rich_status(code: grpc.StatusCode, message: str, reason: str, domain: str,
                metadata: dict[str, str] | None = None) -> grpc.Status:
    """A status whose trailers carry a google.rpc.Status with one ErrorInfo, of bounded size."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=domain, metadata=_capped_metadata(metadata)))
    message = _cut(message, MAX_MESSAGE_BYTES)
    return rpc_status.to_status(status_pb2.Status(code=code.value[0], message=message, details=[detail]))


def _cut(text: str, max_bytes: int) -> str:
    """`text` within `max_bytes` of UTF-8, cut on a character boundary and marked with "…"."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes - len("…".encode())].decode(errors="ignore") + "…"


def _capped_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    entries = list((metadata or {}).items())[:MAX_METADATA_ENTRIES]
    return {_cut(key, MAX_METADATA_KEY_BYTES): _cut(value, MAX_METADATA_VALUE_BYTES) for key, value in entries}


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

"""Domain errors: what went wrong, in words the domain knows.

Nothing here knows about gRPC. transport/errors.py maps each kind to a status code
(INVALID_ARGUMENT, NOT_FOUND, ...) and every error to a google.rpc.ErrorInfo whose
reason is the error's `reason` and whose domain names the service that raised it.
"""

from __future__ import annotations

from typing import Mapping


class DomainError(Exception):
    """Base of every error a domain service raises on purpose."""

    reason = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}


class InvalidArgument(DomainError):
    """The caller sent something unacceptable; nothing was changed."""

    reason = "INVALID_FIELD"

    def __init__(self, field: str, message: str, *, reason: str | None = None, **metadata: str):
        super().__init__(f"{field}: {message}", reason=reason, metadata={"field": field, **metadata})
        self.field = field


class NotFound(DomainError):
    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    """A concurrent change won; reading again and retrying may succeed."""

    reason = "CONCURRENT_UPDATE"


class Unavailable(DomainError):
    """A dependency (Redis, PostgreSQL, TorchServe, MLflow) cannot be reached; retrying may help."""

    reason = "DEPENDENCY_UNAVAILABLE"


class DeadlineExceeded(DomainError):
    """A dependency answered too slowly."""

    reason = "DEPENDENCY_TIMEOUT"

"""Domain errors: what went wrong, in words the domain knows.

Nothing here knows about gRPC. Each kind (InvalidArgument, NotFound, ...) decides the
status code (runtime/status.py maps them); each error carries a `reason`, a member of
its service's ErrorReason enum, whose name is the wire's google.rpc.ErrorInfo.reason.
A service's enum mirrors `enum ErrorReason` in its proto (a test keeps them equal).
"""

from __future__ import annotations

import enum
from typing import Iterable, Mapping

QUOTE_CHARS = 64
"""How much of one user-supplied value an error message echoes."""
LISTED_VALUES = 5
"""How many user-supplied values an error message lists."""
METADATA_VALUE_CHARS = 128
"""How much of a value ErrorInfo metadata carries (a valid name or id fits whole)."""


def quoted(value: object) -> str:
    """User input as it may appear in an error message: quoted, escaped, and cut to a
    short prefix, so a message never grows with what a caller sends."""
    text = str(value)
    if len(text) > QUOTE_CHARS:
        return repr(text[:QUOTE_CHARS]) + "…"
    return repr(text)


def listed(values: Iterable[object]) -> str:
    """A few of `values`, quoted, and how many more there are: "'a', 'b' and 7 more"."""
    values = list(values)
    shown = ", ".join(quoted(v) for v in values[:LISTED_VALUES])
    hidden = len(values) - LISTED_VALUES
    return f"{shown} and {hidden} more" if hidden > 0 else shown


def _bounded(value: object) -> str:
    text = str(value)
    return text if len(text) <= METADATA_VALUE_CHARS else text[:METADATA_VALUE_CHARS] + "…"


class CommonReason(enum.Enum):
    """Reasons every service's ErrorReason enum declares (a test checks each proto)."""

    INVALID_FIELD = enum.auto()
    INVALID_PAGE_TOKEN = enum.auto()
    NOT_IMPLEMENTED = enum.auto()
    INTERNAL = enum.auto()
    UNAUTHENTICATED = enum.auto()
    SCOPE_REQUIRED = enum.auto()


class DomainError(Exception):
    """Base of every error a domain service raises on purpose."""

    def __init__(self, message: str, *, reason: enum.Enum, metadata: Mapping[str, object] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.metadata = {k: _bounded(v) for k, v in (metadata or {}).items()}  # user input too


class InvalidArgument(DomainError):
    """The caller sent something unacceptable; nothing was changed."""

    def __init__(self, field: str, message: str, *, reason: enum.Enum = CommonReason.INVALID_FIELD,
                 **metadata: object):
        super().__init__(f"{field}: {message}", reason=reason, metadata={"field": field, **metadata})
        self.field = field


class NotFound(DomainError):
    pass


class AlreadyExists(DomainError):
    pass


class FailedPrecondition(DomainError):
    pass


class Aborted(DomainError):
    """A concurrent change won; reading again and retrying may succeed."""


class Unavailable(DomainError):
    """A dependency (Redis, PostgreSQL, TorchServe, MLflow) cannot be reached; retrying may help."""


class DeadlineExceeded(DomainError):
    """A dependency answered too slowly."""


class OutOfRange(DomainError):
    """A position past what exists or is kept (an expired feed cursor)."""


class ResourceExhausted(DomainError):
    """A dependency is at capacity (a full queue); retrying later may succeed."""


class Internal(DomainError):
    """Something behind the service failed in a way the caller can be told about (a model's own
    code raised); unlike an unexpected error, its message and reason reach the caller."""

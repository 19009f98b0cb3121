"""What the Inference service needs from the outside: a model server that loads, scales and
runs models (TorchServe, through `torchserve_backend.py`).

Adapters raise the exceptions declared here (never their library's own); the domain service
turns them into DomainErrors. Every message they carry is bounded (`MESSAGE_LIMIT` characters):
a handler's message is the handler's text, which we do not control.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import AsyncIterator, Protocol

MESSAGE_LIMIT = 512


def bounded(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """At most `limit` characters, an ellipsis marking a cut."""
    message = message.strip()
    return message if len(message) <= limit else message[: limit - 1] + "…"


class BackendError(Exception):
    """Base of the adapter's errors; `message` is bounded."""

    def __init__(self, message: str = ""):
        self.message = bounded(message or self.__class__.__doc__ or self.__class__.__name__)
        super().__init__(self.message)


class BackendUnavailable(BackendError):
    """The model server cannot be reached (down, refused, connection lost); nothing is known
    to have run. `answered`: it did answer, with a failure this port has no better name for."""

    def __init__(self, message: str = "", answered: bool = False):
        super().__init__(message)
        self.answered = answered


class BackendTimeout(BackendError):
    """The caller's deadline passed before the model server answered. The request may still
    run to its end inside the model server (it does not cancel a running handler)."""


class BackendOverloaded(BackendError):
    """The model server's queue for the model is full (or it has no worker to take the request)."""


class BackendRejected(BackendError):
    """The model server refused a value (e.g. max_workers below min_workers, a message too large)."""


class BackendConflict(BackendError):
    """The change conflicts with the model server's state (e.g. unregistering the default
    version while other versions are loaded)."""


class ModelAlreadyLoaded(BackendConflict):
    """That model version is already registered."""


class ModelNotLoaded(BackendError):
    """No such model (or version) is registered in the model server."""


class ModelLoadFailed(BackendError):
    """The archive could not be fetched or its workers did not start; `message` says which."""


class WorkerDied(BackendError):
    """The worker process running the request died (crashed or was killed); the model server
    starts another one."""


class HandlerError(BackendError):
    """The model's handler raised. `client_fault`: the handler itself said the input was bad
    (TorchServe's PredictionException with a 4xx code); a plain exception's text is hidden
    by TorchServe ("Prediction failed")."""

    def __init__(self, message: str, client_fault: bool = False):
        super().__init__(message)
        self.client_fault = client_fault


class ModelState(str, Enum):
    READY = "READY"  # at least one worker is ready
    LOADING = "LOADING"  # workers are wanted, none is ready yet
    STOPPED = "STOPPED"  # no worker wanted (scaled to zero) or none could start


@dataclass(frozen=True)
class BackendWorker:
    id: str
    status: str  # the model server's own word: READY, STARTING, UNLOADING, ...
    pid: int | None
    memory_usage_bytes: int | None = None


@dataclass(frozen=True)
class BackendModel:
    """One registered model version as the model server reports it."""

    name: str
    version: str
    url: str
    state: ModelState
    min_workers: int
    max_workers: int
    batch_size: int
    max_batch_delay_ms: int
    response_timeout_s: int
    workers: tuple[BackendWorker, ...] = field(default_factory=tuple)
    pending_requests: int = 0
    queue_capacity: int | None = None  # free places in the model's queue


class ModelBackend(Protocol):
    """A model server. A `version` of "" means the model's default version. Every call
    raises BackendUnavailable when the server cannot be reached."""

    async def predict(self, name: str, version: str, payload: bytes, timeout_s: float | None, *,
                      retry_on_worker_death: bool = False) -> bytes:
        """The handler's output for `payload`. Raises ModelNotLoaded, HandlerError, WorkerDied
        (after one retry when `retry_on_worker_death`: only for idempotent requests),
        BackendOverloaded, BackendTimeout (`timeout_s` passed; None: no deadline)."""

    def stream_predict(self, name: str, version: str, payload: bytes,
                       timeout_s: float | None) -> AsyncIterator[bytes]:
        """The handler's partial outputs, in order; errors as `predict` (never retried)."""

    async def register(self, name: str, version: str, url: str, *, initial_workers: int = 1,
                       batch_size: int = 1, max_batch_delay_ms: int = 100, response_timeout_s: int = 120,
                       synchronous: bool = True) -> None:
        """Load the archive at `url` (a file in the model store, or an allowed http(s) URL) as
        `name`; `version` is checked against the archive's ("" accepts any). Raises
        ModelAlreadyLoaded, ModelLoadFailed (nothing stays registered), BackendRejected."""

    async def unregister(self, name: str, version: str) -> None:
        """Raises ModelNotLoaded, BackendConflict (the default version while others remain)."""

    async def set_default(self, name: str, version: str) -> None:
        """Raises ModelNotLoaded."""

    async def scale(self, name: str, version: str, min_workers: int, max_workers: int, *,
                    synchronous: bool = True) -> None:
        """Raises ModelNotLoaded, BackendRejected."""

    async def describe(self, name: str, version: str) -> BackendModel:
        """Raises ModelNotLoaded."""

    async def versions(self, name: str) -> list[BackendModel]:
        """Every registered version of `name`; raises ModelNotLoaded."""

    async def list_models(self) -> list[tuple[str, list[str]]]:
        """Every registered model name with its versions, by name."""

    async def ping(self) -> bool:
        """The model server answers and reports itself healthy (never raises)."""

    async def close(self) -> None: ...

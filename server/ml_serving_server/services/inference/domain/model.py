"""The Inference service's values: which version a request means, and what serving it gives."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class SelectorKind(enum.Enum):
    PRODUCTION = "production"  # nothing named: the model's Production version
    VERSION = "version"
    STAGE = "stage"  # value: DEVELOPMENT, STAGING, PRODUCTION or ARCHIVED
    ALIAS = "alias"


@dataclass(frozen=True)
class Selector:
    kind: SelectorKind = SelectorKind.PRODUCTION
    value: str = ""


PRODUCTION = Selector()


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a model's signature (as the Registry stores it); -1 in the shape is a
    dimension of any size."""

    name: str
    datatype: str
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class ResolvedVersion:
    """A registry version as the Inference service needs it."""

    model_name: str
    version: str
    stage: str  # DEVELOPMENT, STAGING, PRODUCTION, ARCHIVED
    artifact_uri: str = ""
    ready: bool = True  # the registry holds its artifact (status READY)
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()


@dataclass(frozen=True)
class Prediction:
    model: ResolvedVersion
    output: bytes
    latency_ms: float


@dataclass(frozen=True)
class ItemResult:
    index: int
    output: bytes | None = None
    error: Exception | None = None  # a DomainError


@dataclass(frozen=True)
class LoadSpec:
    """How to load a version in the model server; zeros mean the defaults."""

    min_workers: int = 0
    max_workers: int = 0
    batch_size: int = 0
    max_batch_delay_ms: int | None = None
    response_timeout_s: int | None = None
    startup_timeout_s: float | None = None
    wait_until_ready: bool = False


@dataclass(frozen=True)
class Worker:
    id: str
    status: str
    pid: int | None


@dataclass(frozen=True)
class LoadedModel:
    model_name: str
    version: str
    status: str  # LOADING, READY, DEGRADED, UNAVAILABLE
    min_workers: int
    max_workers: int
    batch_size: int
    max_batch_delay_ms: int
    response_timeout_s: int
    workers: tuple[Worker, ...] = field(default_factory=tuple)

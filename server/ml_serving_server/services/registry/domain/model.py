"""The registry's nouns, in plain Python: models, versions, stages, gates, transitions, events.

Times are UTC `datetime`s. Versions are decimal strings ("1", "2", ...) as MLflow assigns them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Stage(enum.Enum):
    """A version's place in the lifecycle; values match the contract's enum."""

    DEVELOPMENT = 1
    STAGING = 2
    PRODUCTION = 3
    ARCHIVED = 4


class ArtifactFormat(enum.Enum):
    UNSPECIFIED = 0
    TORCHSERVE_MAR = 1
    DIRECTORY_ZIP = 2
    DIRECTORY_TAR_GZ = 3


class VersionStatus(enum.Enum):
    PENDING_REGISTRATION = 1
    READY = 2
    FAILED_REGISTRATION = 3


class Comparison(enum.Enum):
    GREATER_THAN = 1
    GREATER_OR_EQUAL = 2
    LESS_THAN = 3
    LESS_OR_EQUAL = 4


class EventType(enum.Enum):
    MODEL_CREATED = 1
    MODEL_UPDATED = 2
    MODEL_DELETED = 3
    VERSION_CREATED = 4
    VERSION_UPDATED = 5
    VERSION_DELETED = 6
    STAGE_CHANGED = 7
    ALIAS_SET = 8
    ALIAS_DELETED = 9


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()


@dataclass(frozen=True)
class MetricGate:
    metric: str
    comparison: Comparison
    threshold: float
    target_stage: Stage = Stage.PRODUCTION


@dataclass(frozen=True)
class GateResult:
    gate: MetricGate
    actual: float | None
    passed: bool


@dataclass
class RegisteredModel:
    name: str
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)  # user tags only
    gates: tuple[MetricGate, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)  # user aliases: alias -> version
    create_time: datetime | None = None
    update_time: datetime | None = None


@dataclass(frozen=True)
class Artifact:
    """A stored, checked artifact."""

    uri: str
    format: ArtifactFormat
    sha256: str
    size_bytes: int


@dataclass
class ModelVersion:
    model_name: str
    version: str
    stage: Stage = Stage.DEVELOPMENT
    description: str = ""
    aliases: tuple[str, ...] = ()  # user aliases pointing here
    artifact: Artifact | None = None
    source_run_id: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)  # user tags only
    signature: Signature = Signature()
    status: VersionStatus = VersionStatus.READY
    status_message: str = ""
    created_by: str = ""
    create_time: datetime | None = None
    update_time: datetime | None = None
    stage_update_time: datetime | None = None

    @property
    def number(self) -> int:
        return int(self.version)


@dataclass(frozen=True)
class StageTransition:
    transition_id: str
    model_name: str
    version: str
    from_stage: Stage
    to_stage: Stage
    actor: str
    reason: str
    time: datetime
    override: bool = False
    gate_results: tuple[GateResult, ...] = ()
    caused_by: str = ""  # transition_id of the promotion that archived this version


@dataclass(frozen=True)
class RegistryEvent:
    """One change, in the feed's total order (sequence 0 until the store assigns one)."""

    type: EventType
    time: datetime
    model_name: str
    version: str = ""
    from_stage: Stage | None = None
    to_stage: Stage | None = None
    alias: str = ""
    actor: str = ""
    model_version: ModelVersion | None = None  # the version after the event (version events)
    transition: StageTransition | None = None
    sequence: int = 0


@dataclass(frozen=True)
class TransitionQuery:
    model_name: str | None  # None: every model
    version: str | None
    start: datetime | None
    end: datetime | None
    actor: str | None
    limit: int
    before: tuple[datetime, str] | None = None  # page cursor: (time, transition_id) of the last entry seen

"""Retraining runs: what a run is, the ports a run goes through, and the rules of its states.

A run is queued by a trigger (a call, a schedule, a firing alert), claimed by one worker,
trained there, and ends SUCCEEDED (a new model version in the Registry's Staging), FAILED
(with a reason) or CANCELLED. States only move forward:

    QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED
    QUEUED -> CANCELLED
    RUNNING -> QUEUED      (its worker died, or failed on something worth retrying, and attempts remain)

A running run belongs to the worker that claimed it for one attempt: every write of the worker
names (run, worker, attempt), and the store refuses any other, so a worker that lost its run (it
stalled past the heartbeat bound and the run was claimed again) can neither finish nor report it.

Trainers are plugins, one per model: they check a trigger's parameters, build their training set
through the feature store's point-in-time retrieval and train; a publisher logs the result to
MLflow and registers it in the Registry. A successful run keeps a sample of the values of each
numeric feature it trained on (TrainingDistributions): what the monitor measures a feature's
drift against.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence


class RunState(enum.Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def ended(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)


class Trigger(enum.Enum):
    MANUAL = "MANUAL"
    SCHEDULE = "SCHEDULE"
    ALERT = "ALERT"


@dataclass(frozen=True)
class RunError:
    reason: str  # an ErrorReason's name
    message: str
    code: str = "INTERNAL"  # the status it maps to (its name), e.g. UNAVAILABLE


@dataclass
class Run:
    """One retraining run, as stored."""

    run_id: str
    model_name: str
    state: RunState
    trigger: Trigger
    create_time: datetime
    reason: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)  # checked by the model's trainer
    schedule_id: str = ""
    alert_id: str = ""
    idempotency_key: str = ""
    attempt: int = 0  # attempts started so far (a claim starts one)
    max_attempts: int = 1
    worker_id: str = ""  # the worker of the current (or last) attempt
    start_time: datetime | None = None  # of the current (or last) attempt
    end_time: datetime | None = None
    heartbeat_time: datetime | None = None
    progress: float = 0.0  # 0 to 1, as the trainer reports it
    stage: str = ""  # what the trainer is doing, for people ("training set", "training", ...)
    cancel_requested: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str = ""
    registered_version: str = ""
    error: RunError | None = None


# ----- what a trainer gets and gives -----

class RunCancelled(Exception):
    """Raised by TrainingContext.check_cancelled once the run's cancel was asked for (or the
    worker lost the run): the trainer stops where it is."""


class TrainingFailed(Exception):
    """A trainer's or publisher's failure, with its reason. `retryable`: worth another attempt
    (a dependency down), not a refusal that would happen again (bad data, a gate)."""

    def __init__(self, reason: str, message: str, *, code: str = "INTERNAL", retryable: bool = False):
        super().__init__(message)
        self.reason, self.message, self.code, self.retryable = reason, message, code, retryable


class TrainingContext(Protocol):
    """Given to a trainer for one run. Both methods may be called from any thread (training
    runs off the event loop)."""

    def report(self, progress: float, stage: str) -> None:
        """How far the run is (0 to 1) and what it is doing; sent with the next heartbeat."""

    def check_cancelled(self) -> None:
        """Raises RunCancelled when the run must stop; call it between steps (batches, epochs)."""


# A point-in-time training set (TrainingSets.training_set over the feature store), whole, as
# columns: (features like "user_profile:age_bucket", entity query, timestamp column) -> column name
# -> values. Keys, timestamps and the query's other columns come under their own names; a feature
# under its "view:feature" reference; None for a null.
TrainingSetReader = Callable[[Sequence[str], str, str], Awaitable[dict[str, list]]]


MAX_FEATURE_SAMPLES = 10_000
"""Values kept per feature of a run's training sample (what feature drift is measured against)."""


@dataclass(frozen=True)
class TrainedModel:
    """What a trainer hands to the publisher: an artifact on local disk and what describes it."""

    artifact_path: Path  # e.g. a TorchServe .mar
    metrics: dict[str, float]  # validation metrics (the Registry's promotion gates read them)
    parameters: dict[str, str] = field(default_factory=dict)  # the training parameters, as logged
    signature: dict[str, Any] = field(default_factory=dict)  # {"inputs": [...], "outputs": [...]}
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    # "view:feature" -> the values of that numeric scalar feature the model trained on, before any
    # encoding; at most MAX_FEATURE_SAMPLES each (even_sample). List features are left out.
    feature_samples: dict[str, list[float]] = field(default_factory=dict)


def even_sample(values: Sequence[float], limit: int = MAX_FEATURE_SAMPLES) -> list[float]:
    """At most `limit` of the values, evenly spaced over them, as floats: the same values give the
    same sample (no randomness), and values in time order give a sample spread over that time."""
    if len(values) <= limit:
        return [float(value) for value in values]
    step = len(values) / limit
    return [float(values[int(index * step)]) for index in range(limit)]


class Trainer(Protocol):
    """Retrains one model."""

    def check_parameters(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """The trigger's parameters, checked and completed with defaults. A bad one raises
        ValueError("<name>: <why>") (the trigger answers INVALID_ARGUMENT parameters.<name>)."""

    async def train(self, run: Run, training_set: TrainingSetReader, context: TrainingContext,
                    workdir: Path) -> TrainedModel:
        """Trains `run.model_name` with `run.parameters` (already checked); writes into `workdir`.
        Raises TrainingFailed (reasons of its own), RunCancelled (from check_cancelled)."""


@dataclass(frozen=True)
class Published:
    mlflow_run_id: str
    registered_version: str


class ModelPublisher(Protocol):
    async def publish(self, run: Run, model: TrainedModel) -> Published:
        """Logs the model to MLflow (parameters, metrics, the artifact) and registers it in the
        Registry as a new version in Staging; idempotent per run id (a retried attempt that had
        registered gets the same version). Raises TrainingFailed: MLFLOW_UNAVAILABLE or
        REGISTRY_UNAVAILABLE (retryable), a gate's refusal (not retryable)."""


# ----- where runs are kept -----

class Heartbeat(enum.Enum):
    """What a worker's heartbeat learns."""

    OWNED = "OWNED"  # the run is still this attempt's: go on
    CANCEL = "CANCEL"  # still ours, and a cancel was asked: stop at the next step
    LOST = "LOST"  # no longer ours (taken back after a missed heartbeat, or ended): stop, write nothing


@dataclass(frozen=True)
class Attempt:
    """The fence of every write a worker makes: the run, the worker, the attempt it claimed."""

    run_id: str
    worker_id: str
    attempt: int


class RunStore(Protocol):
    """Runs in PostgreSQL. Raises StateStoreUnavailable when it cannot be reached."""

    async def create(self, run: Run) -> tuple[Run, bool]:
        """Stores a new QUEUED run; (the run, False). When the model already has a run with the same
        idempotency key, or the run is an alert's and the model already has an alert's run queued or
        running: (that run, True), nothing stored."""

    async def get(self, run_id: str) -> Run | None: ...

    async def list(self, *, model_name: str, states: Sequence[RunState], limit: int, after_seq: int
                   ) -> tuple[list[Run], int | None]:
        """Newest first; `after_seq` 0 for the first page. (runs, the seq to continue after, None at the end)."""

    async def cancel(self, run_id: str, now: datetime) -> Run | None:
        """QUEUED -> CANCELLED; RUNNING -> cancel_requested; an ended run unchanged. None: no such run."""

    async def claim(self, worker_id: str, now: datetime) -> Run | None:
        """The oldest QUEUED run, now RUNNING for this worker as attempt + 1 (FOR UPDATE SKIP LOCKED:
        concurrent workers never claim one run twice), its last attempt's error cleared; None when
        nothing is queued."""

    async def heartbeat(self, attempt: Attempt, now: datetime, progress: float, stage: str) -> Heartbeat: ...

    async def finish(self, attempt: Attempt, now: datetime, state: RunState, *, metrics: Mapping[str, float] = {},
                     mlflow_run_id: str = "", registered_version: str = "", error: RunError | None = None) -> bool:
        """Ends the attempt's run (SUCCEEDED, FAILED, CANCELLED); False when it is no longer the attempt's."""

    async def requeue(self, attempt: Attempt, now: datetime, error: RunError) -> RunState | None:
        """The attempt failed on something worth retrying: QUEUED again (attempts remain, the caller
        checked), or CANCELLED when a cancel was asked meanwhile. The state it is now; None when
        it is no longer the attempt's."""

    async def sweep(self, stale_before: datetime, now: datetime) -> list[Run]:
        """Running runs whose heartbeat is older than `stale_before` (their worker died or stalled):
        CANCELLED when a cancel was asked, QUEUED again while attempts remain, else FAILED
        (WORKER_LOST). Returns the runs changed, as they are now."""


class TrainingDistributions(Protocol):
    """The training samples of successful runs (TrainedModel.feature_samples), in PostgreSQL; the
    monitor's drift against training reads the newest run's. StateStoreUnavailable when unreachable."""

    async def save(self, model_name: str, registered_version: str, run_id: str,
                   samples: Mapping[str, Sequence[float]], at: datetime) -> None:
        """Keeps the run's samples (saving a run's again replaces them, and it stays as old as it was)."""

    async def latest(self, model_name: str, feature: str) -> list[float]:
        """The sample of `feature` ("view:feature") kept by the model's newest run that kept any;
        empty when there is none, or that run did not train on the feature."""

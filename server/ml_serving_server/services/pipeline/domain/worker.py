"""A retraining worker: claims queued runs one at a time, trains, publishes, and ends each run.

While a run trains, a heartbeat every `heartbeat_interval` proves the worker alive, carries the
trainer's progress, and learns whether a cancel was asked or the run was taken back (LOST: the
worker stalled past the bound and the run was queued again, maybe claimed by another worker).
Either stops the trainer at its next step; a lost run is left alone (every write is fenced by
the attempt, so it could not be written anyway). Training runs off the event loop (the trainer
does its heavy part in a thread), so heartbeats keep their pace.

Outcomes: SUCCEEDED with the metrics, the MLflow run and the registered version; CANCELLED; a
retryable failure (a dependency down) queues the run again while attempts remain; anything else
FAILED with its reason. A succeeded run's training samples (what the monitor measures feature
drift against) are kept once it is written SUCCEEDED; failing to keep them is logged, and the run
stays SUCCEEDED (its model is registered: the next run's samples will do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shutil
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Mapping

from ....errors import DeadlineExceeded, DomainError, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from .retraining import (
    Attempt,
    Heartbeat,
    ModelPublisher,
    Published,
    Run,
    RunCancelled,
    RunError,
    RunState,
    RunStore,
    TrainedModel,
    Trainer,
    TrainingDistributions,
    TrainingFailed,
    TrainingSetReader,
    even_sample,
)
from .runs import RetrainingRuns

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 1000


def _now() -> datetime:
    return datetime.now(timezone.utc)


class _Context:
    """The TrainingContext of one attempt: progress in, cancellation out, from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._progress, self._stage = 0.0, "starting"
        self._stop = threading.Event()
        self.why = ""  # why it was stopped: "cancel", "lost" or "release" (the worker shuts down)

    def report(self, progress: float, stage: str) -> None:
        with self._lock:
            self._progress, self._stage = min(1.0, max(0.0, float(progress))), stage[:200]

    def check_cancelled(self) -> None:
        if self._stop.is_set():
            raise RunCancelled()

    def stop(self, why: str) -> None:
        if not self._stop.is_set():
            self.why = why
            self._stop.set()

    @property
    def state(self) -> tuple[float, str]:
        with self._lock:
            return self._progress, self._stage


class RetrainingWorker:
    def __init__(self, runs: RetrainingRuns, store: RunStore, trainers: Mapping[str, Trainer],
                 publisher: ModelPublisher, training_set: TrainingSetReader, *, worker_id: str,
                 heartbeat_interval: timedelta, poll_interval: timedelta, workdir: Path | None = None,
                 distributions: TrainingDistributions | None = None, clock: Callable[[], datetime] = _now):
        self._runs, self._store, self._trainers = runs, store, dict(trainers)
        self._publisher, self._training_set = publisher, training_set
        self._distributions = distributions  # None: training samples are not kept
        self.worker_id = worker_id
        self._heartbeat_s = heartbeat_interval.total_seconds()
        self._poll_s = poll_interval.total_seconds()
        self._workdir = workdir
        self._clock = clock
        self._current: _Context | None = None

    def release(self) -> None:
        """Shutting down: the run in progress stops at its trainer's next step and is queued again
        for another worker (while attempts remain)."""
        if self._current is not None:
            self._current.stop("release")

    async def run_forever(self, stopping: asyncio.Event) -> None:
        """Claims and runs until `stopping` is set (a run in progress is finished first, or cancelled
        by whoever cancels this task). A state store outage is waited out."""
        while not stopping.is_set():
            try:
                await self._runs.sweep()
                worked = await self.run_once()
            except DomainError as error:  # PostgreSQL down: try again after a pause
                log.warning("retraining worker %s: %s", self.worker_id, error.message)
                worked = False
            if not worked:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stopping.wait(), self._poll_s)

    async def run_once(self) -> bool:
        """Claims one queued run and runs it to its end; False when none was queued."""
        run = await self._store.claim(self.worker_id, self._clock())
        if run is None:
            return False
        await self._execute(run)
        return True

    async def _execute(self, run: Run) -> None:
        attempt = Attempt(run.run_id, self.worker_id, run.attempt)
        log.info("retraining run %s of %s: attempt %d on %s", run.run_id, run.model_name, run.attempt,
                 self.worker_id)
        context = self._current = _Context()
        beating = asyncio.create_task(self._heartbeats(attempt, context))
        workdir = Path(tempfile.mkdtemp(prefix=f"retrain-{run.run_id[:8]}-", dir=self._workdir))
        try:
            outcome = await self._train_and_publish(run, attempt, context, workdir)
        finally:
            self._current = None
            beating.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beating
            shutil.rmtree(workdir, ignore_errors=True)
        if context.why == "lost":
            log.warning("retraining run %s: taken back from %s, nothing written", run.run_id, self.worker_id)
            return
        if context.why == "release" and isinstance(outcome, RunCancelled):
            outcome = RunError("WORKER_LOST", f"worker {self.worker_id} stopped during the run", "UNAVAILABLE"), True
        await self._end(run, attempt, outcome)

    async def _train_and_publish(self, run: Run, attempt: Attempt, context: _Context, workdir: Path):
        """The attempt's outcome: (TrainedModel, Published), RunCancelled, or (RunError, whether to retry).
        Nothing is published for a run that was cancelled or taken back meanwhile: the store is
        asked once more right before."""
        try:
            trainer = self._trainers.get(run.model_name)
            if trainer is None:
                raise TrainingFailed("NO_TRAINER_FOR_MODEL", f"this worker has no trainer for {run.model_name}",
                                     code="NOT_FOUND", retryable=True)  # another worker may have one
            model = await trainer.train(run, self._training_set, context, workdir)
            context.report(0.95, "publishing")
            await self._beat(attempt, context)
            context.check_cancelled()
            return model, await self._publisher.publish(run, model)
        except RunCancelled as cancelled:
            return cancelled
        except TrainingFailed as failure:
            return RunError(failure.reason, failure.message[:MAX_ERROR_CHARS], failure.code), failure.retryable
        except DomainError as error:  # the feature store's: its source down, a query refused
            return RunError(error.reason.name, error.message[:MAX_ERROR_CHARS], _code(error)), _code(error) == "UNAVAILABLE"
        except Exception as error:  # noqa: BLE001 - a trainer's bug fails the run, not the worker
            log.exception("retraining run %s: the trainer failed", run.run_id)
            return RunError("TRAINING_FAILED", f"{type(error).__name__}: {error}"[:MAX_ERROR_CHARS]), False

    async def _end(self, run: Run, attempt: Attempt, outcome) -> None:
        now = self._clock()
        if isinstance(outcome, RunCancelled):
            await self._store.finish(attempt, now, RunState.CANCELLED)
            log.info("retraining run %s cancelled", run.run_id)
        elif isinstance(outcome[0], RunError):
            error, retryable = outcome
            if retryable and run.attempt < run.max_attempts:
                state = await self._store.requeue(attempt, now, error)
                log.warning("retraining run %s: attempt %d failed (%s), %s", run.run_id, run.attempt, error.reason,
                            "queued again" if state is RunState.QUEUED else
                            "cancelled meanwhile" if state is RunState.CANCELLED else "no longer this worker's")
            else:
                await self._store.finish(attempt, now, RunState.FAILED, error=error)
                log.warning("retraining run %s failed: %s: %s", run.run_id, error.reason, error.message)
        else:
            model, published = outcome
            finished = await self._store.finish(attempt, now, RunState.SUCCEEDED, metrics=model.metrics,
                                                mlflow_run_id=published.mlflow_run_id,
                                                registered_version=published.registered_version)
            log.info("retraining run %s succeeded: %s version %s", run.run_id, run.model_name,
                     published.registered_version)
            if finished:  # only a run that is SUCCEEDED: a lost attempt's next one keeps them
                await self._keep_samples(run, model, published, now)

    async def _keep_samples(self, run: Run, model: TrainedModel, published: Published, now: datetime) -> None:
        if self._distributions is None or not model.feature_samples:
            return
        try:
            # Bounded and finite whatever the trainer handed over: the monitor bins these.
            samples = {name: even_sample([v for v in values if math.isfinite(v)])
                       for name, values in model.feature_samples.items()}
            await self._distributions.save(run.model_name, published.registered_version, run.run_id, samples, now)
        except DomainError as error:  # PostgreSQL down: the model is registered, the run stands without them
            log.warning("retraining run %s: its training samples were not kept: %s", run.run_id, error.message)
        except Exception:  # noqa: BLE001 - a trainer's malformed samples fail no run either
            log.exception("retraining run %s: its training samples were not kept", run.run_id)

    async def _heartbeats(self, attempt: Attempt, context: _Context) -> None:
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                await self._beat(attempt, context)
            except DomainError as error:  # missed beats are what the bound is for
                log.warning("retraining run %s: heartbeat failed: %s", attempt.run_id, error.message)

    async def _beat(self, attempt: Attempt, context: _Context) -> None:
        progress, stage = context.state
        answer = await self._store.heartbeat(attempt, self._clock(), progress, stage)
        if answer is Heartbeat.LOST:
            context.stop("lost")
        elif answer is Heartbeat.CANCEL:
            context.stop("cancel")


def _code(error: DomainError) -> str:
    """The status name a domain error maps to (its class), for a run's error."""
    for kind, code in ((Unavailable, "UNAVAILABLE"), (DeadlineExceeded, "DEADLINE_EXCEEDED"),
                       (InvalidArgument, "INVALID_ARGUMENT"), (NotFound, "NOT_FOUND"),
                       (FailedPrecondition, "FAILED_PRECONDITION")):
        if isinstance(error, kind):
            return code
    return "INTERNAL"

"""Retraining runs as callers see them: trigger, status, list, cancel; and the sweep that takes
back the runs of workers that died.

A trigger is checked here and by the model's trainer (its parameters), stored QUEUED and answered
at once; a worker claims it later (worker.py).
"""

from __future__ import annotations

import logging
import re
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, Sequence

from ....errors import FailedPrecondition, InvalidArgument, NotFound, quoted
from . import paging
from .errors import ErrorReason
from .retraining import Run, RunState, RunStore, Trainer, Trigger

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 1024
MAX_IDEMPOTENCY_KEY_CHARS = 128
MAX_MODEL_NAME_CHARS = 256
MAX_PARAMETERS_BYTES = 16 * 1024
_RUN_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def check_run_id(run_id: str, field: str = "run_id") -> str:
    if not _RUN_ID.match(run_id):
        raise InvalidArgument(field, f"must be a run id (a lowercase UUID), got {quoted(run_id)}")
    return run_id


class RetrainingRuns:
    def __init__(self, store: RunStore, trainers: Mapping[str, Trainer], *, max_attempts: int,
                 worker_lost_after: timedelta, clock: Callable[[], datetime] = _now):
        self._store, self._trainers = store, dict(trainers)
        self._max_attempts, self._worker_lost_after = max_attempts, worker_lost_after
        self._clock = clock

    @property
    def models(self) -> list[str]:
        """The models a trainer is configured for."""
        return sorted(self._trainers)

    async def trigger(self, model_name: str, *, reason: str = "", parameters: Mapping[str, Any] | None = None,
                      idempotency_key: str = "", trigger: Trigger = Trigger.MANUAL, schedule_id: str = "",
                      alert_id: str = "") -> tuple[Run, bool]:
        """Queues a run: (the run, False); (the earlier run, True) for a repeated idempotency key, or
        for an alert's trigger while the model has an alert's run queued or running."""
        checked = self.check_trigger(model_name, reason=reason, parameters=parameters or {})
        if len(idempotency_key) > MAX_IDEMPOTENCY_KEY_CHARS:
            raise InvalidArgument("idempotency_key", f"must be at most {MAX_IDEMPOTENCY_KEY_CHARS} characters, "
                                  f"got {len(idempotency_key)}")
        run = Run(run_id=str(uuid.uuid4()), model_name=model_name, state=RunState.QUEUED, trigger=trigger,
                  create_time=self._clock(), reason=reason, parameters=checked, schedule_id=schedule_id,
                  alert_id=alert_id, idempotency_key=idempotency_key, max_attempts=self._max_attempts)
        stored, duplicate = await self._store.create(run)
        if not duplicate:
            log.info("retraining run %s of %s queued (%s)", run.run_id, model_name, trigger.value.lower())
        return stored, duplicate

    def check_trigger(self, model_name: str, *, reason: str, parameters: Mapping[str, Any],
                      field_prefix: str = "") -> dict[str, Any]:
        """What a trigger (or a schedule's) says, checked: a model with a trainer, a bounded reason,
        parameters the trainer accepts. The parameters, completed with the trainer's defaults."""
        trainer = self._trainer(model_name, field_prefix)
        if len(reason) > MAX_REASON_CHARS:
            raise InvalidArgument(f"{field_prefix}reason", f"must be at most {MAX_REASON_CHARS} characters, "
                                  f"got {len(reason)}")
        return self._parameters(trainer, parameters, field_prefix)

    async def get(self, run_id: str) -> Run:
        run = await self._store.get(check_run_id(run_id))
        if run is None:
            raise NotFound(f"no retraining run {run_id}", reason=ErrorReason.RUN_NOT_FOUND, metadata={"run_id": run_id})
        return run

    async def list(self, *, model_name: str = "", states: Sequence[RunState] = (), page_size: int = 0,
                   page_token: str = "") -> tuple[list[Run], str]:
        if len(model_name) > MAX_MODEL_NAME_CHARS:
            raise InvalidArgument("model_name", f"must be at most {MAX_MODEL_NAME_CHARS} characters")
        runs, after = await self._store.list(model_name=model_name, states=list(dict.fromkeys(states)),
                                             limit=paging.page_size(page_size),
                                             after_seq=paging.position(page_token))
        return runs, paging.token(after)

    async def cancel(self, run_id: str) -> Run:
        run = await self._store.cancel(check_run_id(run_id), self._clock())
        if run is None:
            raise NotFound(f"no retraining run {run_id}", reason=ErrorReason.RUN_NOT_FOUND, metadata={"run_id": run_id})
        if run.state in (RunState.SUCCEEDED, RunState.FAILED):
            raise FailedPrecondition(f"retraining run {run_id} has already ended ({run.state.value.lower()})",
                                     reason=ErrorReason.RUN_ALREADY_ENDED,
                                     metadata={"run_id": run_id, "state": run.state.value})
        return run

    async def sweep(self) -> list[Run]:
        """Takes back the runs whose worker stopped sending heartbeats (see RunStore.sweep)."""
        now = self._clock()
        changed = await self._store.sweep(now - self._worker_lost_after, now)
        for run in changed:
            log.warning("retraining run %s of %s: worker %s lost, run %s", run.run_id, run.model_name,
                        run.worker_id, run.state.value.lower())
        return changed

    # ----- parts -----

    def _trainer(self, model_name: str, field_prefix: str = "") -> Trainer:
        if not model_name:
            raise InvalidArgument(f"{field_prefix}model_name", "is required")
        if len(model_name) > MAX_MODEL_NAME_CHARS:
            raise InvalidArgument(f"{field_prefix}model_name", f"must be at most {MAX_MODEL_NAME_CHARS} characters")
        trainer = self._trainers.get(model_name)
        if trainer is None:
            raise NotFound(f"no trainer is configured for model {quoted(model_name)} (PIPELINE_TRAINERS names "
                           f"{', '.join(self.models) or 'none'})", reason=ErrorReason.NO_TRAINER_FOR_MODEL,
                           metadata={"model_name": model_name})
        return trainer

    @staticmethod
    def _parameters(trainer: Trainer, parameters: Mapping[str, Any], field_prefix: str) -> dict[str, Any]:
        if len(repr(parameters)) > MAX_PARAMETERS_BYTES:
            raise InvalidArgument(f"{field_prefix}parameters", f"must be at most {MAX_PARAMETERS_BYTES} bytes")
        try:
            return trainer.check_parameters(parameters)
        except ValueError as error:
            name, _, why = str(error).partition(": ")
            field = f"parameters.{name}" if why and name.isidentifier() else "parameters"
            raise InvalidArgument(f"{field_prefix}{field}", (why or str(error))[:200]) from None

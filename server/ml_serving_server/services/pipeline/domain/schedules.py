"""Retraining schedules: a cron expression per model (in a time zone) that queues runs.

Each schedule keeps its next run time: its next due time in the cron's zone, plus a jitter of
its own (a hash of the schedule and the due time, so every replica computes the same one). Every
tick, any replica triggers the schedules whose next run time has passed, with the idempotency
key `schedule:<id>:<due time>`: replicas that look at once queue one run per due time. Then the
schedule moves on to its next due time after now, so a pause is caught up with one run (standing
for the first due time missed: the stored one, which every replica reads alike), not one per
missed time.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Mapping, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from ....errors import DomainError, InvalidArgument, NotFound, quoted
from . import paging
from .errors import ErrorReason
from .retraining import Trigger
from .runs import MAX_MODEL_NAME_CHARS, RetrainingRuns

log = logging.getLogger(__name__)

MAX_JITTER_SECONDS = 3600
MAX_CRON_CHARS = 128


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Schedule:
    schedule_id: str
    model_name: str
    cron: str
    time_zone: str  # IANA name; "" is UTC
    create_time: datetime
    next_run_time: datetime  # the next due time plus its jitter, UTC
    parameters: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    enabled: bool = True
    jitter_seconds: int = 0
    created_by: str = ""
    last_run_time: datetime | None = None  # the due time it last triggered
    last_run_id: str = ""


class ScheduleStore(Protocol):
    """Schedules in PostgreSQL; StateStoreUnavailable when it cannot be reached."""

    async def create(self, schedule: Schedule) -> None: ...
    async def get(self, schedule_id: str) -> Schedule | None: ...
    async def list(self, *, model_name: str, limit: int, after_seq: int) -> tuple[list[Schedule], int | None]: ...
    async def delete(self, schedule_id: str) -> bool: ...
    async def due(self, now: datetime) -> list[Schedule]:
        """Enabled schedules whose next run time is at or before `now`."""

    async def advance(self, schedule: Schedule, *, last_run_time: datetime, last_run_id: str,
                      next_run_time: datetime) -> bool:
        """Moves a schedule on, unless another replica did first (its next_run_time changed)."""


def next_due(cron: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The cron's first due time strictly after `after`, in UTC (computed in the cron's zone)."""
    return croniter(cron, after.astimezone(zone)).get_next(datetime).astimezone(timezone.utc)


def jitter(schedule_id: str, due: datetime, limit_seconds: int) -> timedelta:
    """A delay in [0, limit] the same on every replica for this schedule and due time."""
    if limit_seconds <= 0:
        return timedelta(0)
    digest = hashlib.sha256(f"{schedule_id}|{due.isoformat()}".encode()).digest()
    return timedelta(seconds=int.from_bytes(digest[:8], "big") % (limit_seconds + 1))


class RetrainingSchedules:
    def __init__(self, store: ScheduleStore, runs: RetrainingRuns, *, clock: Callable[[], datetime] = _now):
        self._store, self._runs, self._clock = store, runs, clock

    async def create(self, *, model_name: str, cron: str, time_zone: str = "",
                     parameters: Mapping[str, Any] | None = None, reason: str = "", enabled: bool = True,
                     jitter_seconds: int = 0, created_by: str = "") -> Schedule:
        checked = self._runs.check_trigger(model_name, reason=reason, parameters=parameters or {},
                                           field_prefix="schedule.")
        zone = _zone(time_zone)
        _check_cron(cron)
        if not 0 <= jitter_seconds <= MAX_JITTER_SECONDS:
            raise InvalidArgument("schedule.jitter_seconds", f"must be 0 to {MAX_JITTER_SECONDS}, got {jitter_seconds}")
        now, schedule_id = self._clock(), str(uuid.uuid4())
        due = next_due(cron, zone, now)
        schedule = Schedule(schedule_id=schedule_id, model_name=model_name, cron=cron, time_zone=time_zone,
                            create_time=now, next_run_time=due + jitter(schedule_id, due, jitter_seconds),
                            parameters=checked, reason=reason, enabled=enabled, jitter_seconds=jitter_seconds,
                            created_by=created_by[:256])
        await self._store.create(schedule)
        return schedule

    async def get(self, schedule_id: str) -> Schedule:
        found = await self._store.get(_check_id(schedule_id))
        if found is None:
            raise NotFound(f"no retraining schedule {schedule_id}", reason=ErrorReason.SCHEDULE_NOT_FOUND,
                           metadata={"schedule_id": schedule_id})
        return found

    async def list(self, *, model_name: str = "", page_size: int = 0, page_token: str = "") -> tuple[list[Schedule], str]:
        if len(model_name) > MAX_MODEL_NAME_CHARS:
            raise InvalidArgument("model_name", f"must be at most {MAX_MODEL_NAME_CHARS} characters")
        found, after = await self._store.list(model_name=model_name, limit=paging.page_size(page_size),
                                              after_seq=paging.position(page_token))
        return found, paging.token(after)

    async def delete(self, schedule_id: str) -> None:
        if not await self._store.delete(_check_id(schedule_id)):
            raise NotFound(f"no retraining schedule {schedule_id}", reason=ErrorReason.SCHEDULE_NOT_FOUND,
                           metadata={"schedule_id": schedule_id})

    async def tick(self) -> int:
        """Queues a run for each schedule that is due; the number queued (by this replica)."""
        now, queued = self._clock(), 0
        for schedule in await self._store.due(now):
            try:
                queued += await self._fire(schedule, now)
            except DomainError as error:  # its trainer is gone, PostgreSQL down: the next tick looks again
                log.warning("retraining schedule %s of %s not fired: %s", schedule.schedule_id, schedule.model_name,
                            error.message)
        return queued

    async def _fire(self, schedule: Schedule, now: datetime) -> int:
        zone = _zone(schedule.time_zone)
        due = _due_of(schedule, zone)
        run, duplicate = await self._runs.trigger(
            schedule.model_name, reason=schedule.reason or f"schedule {schedule.cron}", parameters=schedule.parameters,
            idempotency_key=f"schedule:{schedule.schedule_id}:{due.isoformat()}", trigger=Trigger.SCHEDULE,
            schedule_id=schedule.schedule_id)
        following = next_due(schedule.cron, zone, max(now, due))
        await self._store.advance(schedule, last_run_time=due, last_run_id=run.run_id,
                                  next_run_time=following + jitter(schedule.schedule_id, following,
                                                                   schedule.jitter_seconds))
        return 0 if duplicate else 1


def _due_of(schedule: Schedule, zone: ZoneInfo) -> datetime:
    """The due time behind a schedule's next run time (which may carry a jitter): the latest
    due time at or before it."""
    at = schedule.next_run_time.astimezone(zone)
    if croniter.match(schedule.cron, at) and at.second == 0 and at.microsecond == 0:
        return schedule.next_run_time
    return croniter(schedule.cron, at).get_prev(datetime).astimezone(timezone.utc)


def _zone(name: str) -> ZoneInfo:
    if not name:
        return ZoneInfo("UTC")
    try:
        if len(name) > 64:
            raise ValueError
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise InvalidArgument("schedule.time_zone", f"is not an IANA time zone: {quoted(name)}",
                              reason=ErrorReason.INVALID_TIME_ZONE) from None


def _check_cron(cron: str) -> None:
    if not cron:
        raise InvalidArgument("schedule.cron", "is required", reason=ErrorReason.INVALID_CRON)
    if len(cron) > MAX_CRON_CHARS or len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise InvalidArgument("schedule.cron", f"is not a five-field cron expression: {quoted(cron)}",
                              reason=ErrorReason.INVALID_CRON)


def _check_id(schedule_id: str) -> str:
    try:
        if len(schedule_id) != 36 or str(uuid.UUID(schedule_id)) != schedule_id:
            raise ValueError
    except ValueError:
        raise InvalidArgument("schedule_id", f"must be a schedule id (a lowercase UUID), got {quoted(schedule_id)}") \
            from None
    return schedule_id


"""Scheduled materialisation: each view with a `materialization_schedule` (five-field cron, UTC)
is materialised incrementally at its times, by whichever replica looks first.

Every tick, each replica finds each scheduled view's latest due time (the cron's previous fire
time) and asks for a job unless the view has one created since then. The check is repeated
under the view's lock (Materializer.materialize's `unless_since`), so replicas that look at
once start one job per due time; a view busy elsewhere is left to that run. A replica that was
down at a due time catches up once, at its next tick (not once per missed time).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Callable

from croniter import croniter

from ....errors import DomainError
from .feature_views import FeatureView
from .materialization import INCREMENTAL, Materializer
from .ports import Job, MaterializationState
from .schema import FeatureSchema

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def due_time(schedule: str, now: datetime) -> datetime:
    """The schedule's latest fire time at or before `now` (UTC)."""
    return croniter(schedule, now).get_prev(datetime) if not croniter.match(schedule, now) else \
        now.replace(second=0, microsecond=0)


class MaterializationScheduler:
    def __init__(self, schema: FeatureSchema, materializer: Materializer, state: MaterializationState, *,
                 tick_s: float = 15.0, clock: Callable[[], datetime] = _now):
        self._views: tuple[FeatureView, ...] = tuple(v for v in schema.views if v.materialization_schedule)
        self._materializer, self._state = materializer, state
        self._tick_s, self._clock = tick_s, clock
        self._task: asyncio.Task | None = None

    @property
    def views(self) -> tuple[FeatureView, ...]:
        return self._views

    async def tick(self) -> list[Job]:
        """One look at every scheduled view; the jobs started."""
        started: list[Job] = []
        now = self._clock()
        for view in self._views:
            due = due_time(view.materialization_schedule, now)
            try:
                newest = await self._state.newest_job_time(view.name)
                if newest is not None and newest >= due:
                    continue
                started += await self._materializer.materialize([view.name], INCREMENTAL, unless_since=due)
            except DomainError as error:  # busy elsewhere, or PostgreSQL down: the next tick looks again
                log.info("scheduled materialisation of %s not started: %s", view.name, error.message)
        return started

    def start(self) -> None:
        if self._views and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="materialization scheduler")

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - the loop outlives one bad look
                log.exception("the materialisation scheduler's tick failed")
            await asyncio.sleep(self._tick_s)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

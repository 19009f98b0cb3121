"""A coroutine run every `interval_s` in the background until closed: a failed round is logged
and the next one runs anyway (a dependency down must not end the loop)."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger(__name__)


class PeriodicTask:
    def __init__(self, name: str, step: Callable[[], Awaitable[object]], interval_s: float):
        self.name, self._step, self._interval_s = name, step, interval_s
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def _loop(self) -> None:
        while True:
            try:
                await self._step()
            except Exception:  # noqa: BLE001 - the loop outlives one bad round
                log.exception("%s: a round failed", self.name)
            await asyncio.sleep(self._interval_s)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

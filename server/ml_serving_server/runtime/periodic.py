"""A coroutine run every `interval_s` in the background until closed: a failed round is logged
and the next one runs anyway (a dependency down must not end the loop).

Every wait is bounded. A round may take at most `round_timeout_s` (when given): one stuck on a
dependency (an await on PostgreSQL or Redis that never answers) is cancelled and counts as a
failed round, so the loop goes on and `close` finds it between rounds. `close` cancels the task
and waits for it at most `close_timeout_s`: a round that swallows its cancellation (Python
3.11's `asyncio.wait_for` does when its inner future finishes at the same moment) is cancelled
again, and the loop itself stops at its next turn since it checks that it was closed; one that
still does not end is left behind with a warning rather than hanging the server's shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger(__name__)


class PeriodicTask:
    def __init__(self, name: str, step: Callable[[], Awaitable[object]], interval_s: float, *,
                 round_timeout_s: float | None = None, close_timeout_s: float = 5.0):
        self.name, self._step, self._interval_s = name, step, interval_s
        self._round_timeout_s, self._close_timeout_s = round_timeout_s, close_timeout_s
        self._task: asyncio.Task | None = None
        self._closed = False

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def _loop(self) -> None:
        while not self._closed:
            bound = asyncio.timeout(self._round_timeout_s)
            try:
                async with bound:
                    await self._step()
            except TimeoutError:
                if bound.expired():
                    log.error("%s: a round took over %ss and was cancelled", self.name, self._round_timeout_s)
                else:
                    log.exception("%s: a round failed", self.name)
            except Exception:  # noqa: BLE001 - the loop outlives one bad round
                log.exception("%s: a round failed", self.name)
            if self._closed:
                break
            await asyncio.sleep(self._interval_s)

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._close_timeout_s
        while not task.done():
            task.cancel()
            remaining = deadline - loop.time()
            if remaining <= 0:
                log.warning("%s: still running %ss after it was cancelled; left behind", self.name,
                            self._close_timeout_s)
                return
            await asyncio.wait({task}, timeout=min(0.5, remaining))
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s: ended with %r", self.name, task.exception())

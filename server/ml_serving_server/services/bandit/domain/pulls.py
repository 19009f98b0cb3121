"""Pull counts of context-free selections, written to the store in batches.

Select adds to an in-memory tally; a background task writes it every `interval_s`
as one increment per arm, so the hot path does no store round trip. If the store is
down the tally is kept and retried. Closing flushes what is left (graceful shutdown
drains it); a process killed outright loses at most one interval of pull counts, which
feed the statistics' pulls and selection share only, never the posteriors.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

from .ports import BanditStore

log = logging.getLogger(__name__)


class PullTally:
    def __init__(self, store: BanditStore, interval_s: float = 0.05):
        self._store = store
        self._interval = interval_s
        self._pending: dict[tuple[str, int], Counter] = {}  # (bandit, incarnation) -> pulls per arm
        self._task: asyncio.Task | None = None

    def add(self, bandit: str, incarnation: int, arm_ids: tuple[str, ...]) -> None:
        tally = self._pending.setdefault((bandit, incarnation), Counter())
        tally.update(arm_ids)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def flush(self, bandit: str | None = None) -> None:
        """Write pending counts (of one bandit, or all); on failure they stay pending and the error is raised."""
        for key in [key for key in self._pending if bandit is None or key[0] == bandit]:
            tally = self._pending.pop(key, None)
            if not tally:
                continue
            try:
                await self._store.add_pulls(*key, dict(tally))
            except BaseException:
                self._pending.setdefault(key, Counter()).update(tally)
                raise

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - keep the tally, try again next interval
                log.warning("could not write pull counts; will retry", exc_info=True)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # Let an interrupted flush put its tally back before the final one.
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self.flush()
        except Exception:  # noqa: BLE001
            log.error("pull counts lost at shutdown: %s", dict(self._pending), exc_info=True)

"""Exposures and Predict samples, written to the measurements store in batches.

The request path only appends to a list; a background task writes what has gathered every
`interval_s` in one round trip per kind, so Predict and AssignVariant never wait for Redis.
If the store is down the batch is kept and retried, up to `max_pending` items per kind (then
the oldest are dropped and counted in `dropped`: a long outage must not exhaust memory).
Closing flushes what is left; a process killed outright loses at most one interval of
measurements. An outcome first flushes this replica's exposures, so a user's own exposure
is never missed by their outcome recorded right after it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Generic, Sequence, TypeVar

from .model import Exposure, RequestSample
from .ports import Measurements

log = logging.getLogger(__name__)

Item = TypeVar("Item")


class _Batch(Generic[Item]):
    def __init__(self, write: Callable[[Sequence[Item]], object], max_pending: int):
        self._write = write
        self._max_pending = max_pending
        self.pending: list[Item] = []
        self.dropped = 0

    def add(self, item: Item) -> None:
        self.pending.append(item)
        if len(self.pending) > self._max_pending:
            excess = len(self.pending) - self._max_pending
            del self.pending[:excess]
            self.dropped += excess

    async def flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        try:
            await self._write(batch)
        except BaseException:
            self.pending[:0] = batch  # keep order: the older batch goes first next time
            raise


class Tally:
    def __init__(self, measurements: Measurements, interval_s: float = 0.05, max_pending: int = 200_000):
        self._exposures = _Batch(measurements.add_exposures, max_pending)
        self._requests = _Batch(measurements.add_requests, max_pending)
        self._interval = interval_s
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()  # one flush at a time keeps batches in order

    @property
    def dropped(self) -> int:
        return self._exposures.dropped + self._requests.dropped

    def expose(self, exposure: Exposure) -> None:
        self._exposures.add(exposure)
        self._wake()

    def sample(self, sample: RequestSample) -> None:
        self._requests.add(sample)
        self._wake()

    def _wake(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="router-tally")

    async def flush_exposures(self) -> None:
        async with self._lock:
            await self._exposures.flush()

    async def flush(self) -> None:
        async with self._lock:
            await self._exposures.flush()
            await self._requests.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - kept pending; next interval tries again
                log.warning("could not write router measurements; will retry", exc_info=True)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self.flush()
        except Exception:  # noqa: BLE001
            log.error("router measurements lost at shutdown: %d exposures, %d samples",
                      len(self._exposures.pending), len(self._requests.pending), exc_info=True)

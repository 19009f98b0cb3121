"""Every replica's own copy of the experiment definitions: the request path reads only this.

Loaded whole at start, then kept fresh from the store's change feed (`changed_since`): a
background task waits for the store's change notification (or `poll_s` at the latest) and
applies what changed. A replica therefore answers from memory with no shared state on the
request path, and sees another replica's change within a notification's delay (poll_s when
notifications are lost). A replica's own writes are applied at once (`put`).
"""

from __future__ import annotations

import asyncio
import logging

from .canary import Canary
from .model import Experiment
from .ports import CanaryStore, ExperimentStore

log = logging.getLogger(__name__)


class ExperimentCatalog:
    def __init__(self, store: ExperimentStore | CanaryStore, poll_s: float = 5.0):
        self._store = store
        self._poll_s = poll_s
        self._by_name: dict[str, Experiment] = {}
        self._running: dict[str, list[Experiment]] = {}  # model -> running, in selection order
        self._all_running: list[Experiment] = []
        self._cursor = 0
        self._canaries: dict[str, Canary] = {}  # active ones, by model
        self._canary_revisions: dict[str, int] = {}  # every canary seen, by id
        self._canary_cursor = 0
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.get_running_loop().create_task(self._follow(), name="router-catalog")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def get(self, name: str) -> Experiment | None:
        return self._by_name.get(name)

    def running(self, model_name: str = "") -> list[Experiment]:
        """Running experiments (of one model, or all), highest priority first, then oldest."""
        return self._running.get(model_name, []) if model_name else self._all_running

    def put(self, experiment: Experiment) -> None:
        """Apply a write this replica made (never older than what is cached)."""
        known = self._by_name.get(experiment.name)
        if known is not None and known.revision > experiment.revision:
            return
        self._by_name[experiment.name] = experiment
        self._index()

    def active_canary(self, model_name: str) -> Canary | None:
        return self._canaries.get(model_name)

    def active_canaries(self) -> list[Canary]:
        return list(self._canaries.values())

    def put_canary(self, canary: Canary) -> None:
        """Apply a canary as stored (a newer revision than any seen), by this replica or another."""
        if self._canary_revisions.get(canary.canary_id, 0) > canary.revision:
            return
        self._canary_revisions[canary.canary_id] = canary.revision
        held = self._canaries.get(canary.model_name)
        if canary.active:
            self._canaries[canary.model_name] = canary
        elif held is not None and held.canary_id == canary.canary_id:
            del self._canaries[canary.model_name]

    async def refresh(self) -> None:
        canary_cursor, canaries = await self._store.canaries_changed_since(self._canary_cursor)
        for canary in canaries:
            self.put_canary(canary)
        self._canary_cursor = canary_cursor
        cursor, changed = await self._store.changed_since(self._cursor)
        for experiment in changed:
            known = self._by_name.get(experiment.name)
            if known is None or known.revision <= experiment.revision:
                self._by_name[experiment.name] = experiment
        self._cursor = cursor
        if changed:
            self._index()

    def _index(self) -> None:
        running = sorted((e for e in self._by_name.values() if e.active),
                         key=lambda e: (-e.priority, e.create_time.timestamp() if e.create_time else 0.0, e.name))
        by_model: dict[str, list[Experiment]] = {}
        for experiment in running:
            by_model.setdefault(experiment.model_name, []).append(experiment)
        self._all_running, self._running = running, by_model

    async def _follow(self) -> None:
        while True:
            await self._store.wait_for_change(self._poll_s)
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - the store is down: serve what is cached, try again
                log.warning("could not refresh experiment definitions; serving the cached ones", exc_info=True)
                await asyncio.sleep(min(self._poll_s, 1.0))

"""The replica-side loop that moves the weights of running adaptive experiments.

Every replica looks at each adaptive experiment once per its interval; the first to write wins
(the store's compare-and-set on the revision), so a weight change happens once per interval
however many replicas run, and a replica that lost the race simply sees the winner's weights
through the catalog. The stored `reweight_time` says when the weights last moved: a restarted
replica neither moves them early nor forgets them.

Measurements unreachable (Redis down): the weights stay as they are until the next look.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Awaitable, Callable

import numpy as np

from ....errors import Aborted, DomainError
from .allocation import Reallocation, reallocate
from .assignment import updated
from .catalog import ExperimentCatalog
from .model import ChangeAction, Experiment, ExperimentChange
from .ports import Measurements

log = logging.getLogger(__name__)

ACTOR = "router"  # who the history says changed the weights

Replace = Callable[[Experiment, Experiment, ExperimentChange], Awaitable[Experiment]]


class Allocator:
    def __init__(self, catalog: ExperimentCatalog, measurements: Measurements, flush: Callable[[], Awaitable[None]],
                 replace_experiment: Replace, clock: Callable[[], datetime], *, tick_s: float = 1.0,
                 rng: np.random.Generator | None = None):
        self._catalog = catalog
        self._measurements = measurements
        self._flush = flush
        self._replace = replace_experiment
        self._clock = clock
        self._tick_s = tick_s
        self._rng = rng if rng is not None else np.random.default_rng()
        self._next_look: dict[str, datetime] = {}  # after a look that changed nothing
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="router-allocator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            try:
                await self.tick()
            except Exception:  # noqa: BLE001 - one bad look must not stop the loop
                log.exception("adaptive allocation failed; trying again next tick")

    async def tick(self) -> list[Experiment]:
        """Look at every due adaptive experiment; return those whose weights this replica moved."""
        now = self._clock()
        moved = []
        for experiment in self._catalog.running():
            if experiment.allocation.adaptive and self._due(experiment, now):
                stored = await self._look(experiment, now)
                if stored is not None:
                    moved.append(stored)
        return moved

    def _due(self, experiment: Experiment, now: datetime) -> bool:
        interval = timedelta(seconds=experiment.allocation.interval_s)
        last = experiment.reweight_time or experiment.start_time or experiment.create_time
        if last is not None and now - last < interval:
            return False
        return self._next_look.get(experiment.name, now) <= now

    async def _look(self, experiment: Experiment, now: datetime) -> Experiment | None:
        self._next_look[experiment.name] = now + timedelta(seconds=experiment.allocation.interval_s)
        metric = experiment.metrics[0]
        variants = experiment.definition.variants
        try:
            await self._flush()
            counts, _, _ = await self._measurements.counts(experiment.name, [v.name for v in variants], metric.name,
                                                           metric.kind)
        except DomainError as error:  # the measurements are unreachable: keep the weights
            log.warning("adaptive allocation of %s skipped: %s", experiment.name, error)
            return None
        change = reallocate(metric.name, metric.kind, [(v.name, v.weight_bps) for v in variants], counts,
                            experiment.allocation, self._rng)
        if change is None:
            return None
        return await self._apply(experiment, change, now)

    async def _apply(self, experiment: Experiment, change: Reallocation, now: datetime) -> Experiment | None:
        variants = [replace(v, weight_bps=change.weights[v.name]) for v in experiment.definition.variants]
        changed = experiment.with_changes(definition=updated(experiment.definition, variants=variants),
                                          reweight_time=now)
        entry = ExperimentChange(experiment.name, experiment.revision, ChangeAction.REWEIGHTED, ACTOR, now,
                                 change.reason(), ("variants",), changed, change.figures)
        try:
            stored = await self._replace(experiment, changed, entry)
        except Aborted:  # another replica (or a person) changed it first: theirs stands
            return None
        except DomainError as error:
            log.warning("adaptive allocation of %s not written: %s", experiment.name, error)
            return None
        self._next_look.pop(experiment.name, None)
        return stored

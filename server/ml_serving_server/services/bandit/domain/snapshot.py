"""Each bandit's definition, counts and posteriors as last read, reused while young enough.

Select samples from a snapshot at most `max_age_s` old, so the hot path does no store
round trip in the steady state (Thompson sampling tolerates slightly stale posteriors;
rewards arrive late anyway). A refresh reads the counts in one round trip, and the
definition only when its version moved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from . import policy
from .model import ArmCounts, BanditDefinition
from .ports import BanditStore


@dataclass(frozen=True)
class Snapshot:
    version: int
    definition: BanditDefinition
    counts: dict[str, ArmCounts]
    posteriors: dict[str, policy.BetaPosterior]  # built once per read, reused by every Select
    loaded_at: float
    positions: dict[str, int]  # each arm's position in the definition (what decision ids carry)


def posterior(definition: BanditDefinition, counts: ArmCounts) -> policy.BetaPosterior:
    """Prior plus evidence: a reward r counts r successes and 1 - r failures (after forgetting,
    for a bandit with a discount; the prior never fades)."""
    successes, failures = counts.evidence
    return policy.BetaPosterior(definition.prior_alpha + successes, definition.prior_beta + failures)


class SnapshotCache:
    def __init__(self, store: BanditStore, max_age_s: float, clock: Callable[[], float] = time.monotonic):
        self._store = store
        self._max_age = max_age_s
        self._clock = clock
        self._snapshots: dict[str, Snapshot] = {}

    async def get(self, name: str, fresh: bool = False) -> Snapshot | None:
        """The cached snapshot while young enough (unless `fresh`), else a new one; None if
        the bandit does not exist."""
        cached = self._snapshots.get(name)
        now = self._clock()
        if cached is not None and not fresh and now - cached.loaded_at <= self._max_age:
            return cached
        loaded = await self._store.load_counts(name)
        if loaded is None:
            self.forget(name)
            return None
        version, counts = loaded
        if cached is not None and cached.version == version:
            definition = cached.definition
        else:
            definition = await self._store.get_definition(name)
            if definition is None:
                return None
        posteriors = {arm: posterior(definition, counts.get(arm, ArmCounts())) for arm in definition.arm_ids()}
        self._snapshots[name] = Snapshot(version, definition, counts, posteriors, now, definition.positions)
        return self._snapshots[name]

    def forget(self, name: str) -> None:
        """Drop a bandit's snapshot (it changed or is gone): the next read goes to the store."""
        self._snapshots.pop(name, None)

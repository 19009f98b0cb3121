"""BanditStore in memory: one process, no persistence.

For unit tests of the domain and for trying the service without Redis. The same
contract suite runs over this store and RedisBanditStore, so the two cannot drift.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Sequence

import numpy as np

from .domain.forgetting import fade
from .domain.model import ArmCounts, BanditDefinition, Decision, RewardEvent, RewardOutcome


class MemoryBanditStore:
    def __init__(self) -> None:
        self._definitions: dict[str, tuple[int, BanditDefinition]] = {}  # name -> (version, definition)
        self._counts: dict[str, dict[str, ArmCounts]] = {}
        self._linear: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        self._decisions: dict[str, Decision] = {}  # as an earlier release stored contextual decisions
        # (bandit, incarnation, decision id, event id) -> fingerprint; outlive their bandit, as in Redis
        self._events: dict[tuple[str, int, str, str], str] = {}
        self._key = secrets.token_bytes(32)
        self.count_reads = 0  # how often counts were read: shows whether a cache was used

    def _alive(self, name: str, incarnation: int) -> bool:
        entry = self._definitions.get(name)
        return entry is not None and entry[1].incarnation == incarnation

    async def create(self, definition: BanditDefinition) -> bool:
        if definition.name in self._definitions:
            return False
        self._definitions[definition.name] = (definition.incarnation, definition)
        self._counts[definition.name] = {}
        self._linear[definition.name] = {}
        return True

    async def get_definition(self, name: str) -> BanditDefinition | None:
        entry = self._definitions.get(name)
        return entry[1] if entry else None

    async def list_definitions(self, after: str, limit: int) -> list[BanditDefinition]:
        return [d for n, (_, d) in sorted(self._definitions.items()) if n > after][:limit]

    async def replace_definition(self, definition: BanditDefinition, expected_version: int) -> bool | None:
        entry = self._definitions.get(definition.name)
        if entry is None:
            return None
        if entry[0] != expected_version:
            return False
        self._definitions[definition.name] = (entry[0] + 1, definition)
        return True

    async def delete(self, name: str) -> bool:
        self._counts.pop(name, None)
        self._linear.pop(name, None)
        return self._definitions.pop(name, None) is not None

    async def load_counts(self, name: str) -> tuple[int, dict[str, ArmCounts]] | None:
        self.count_reads += 1
        if name not in self._definitions:
            return None
        return self._definitions[name][0], dict(self._counts[name])

    async def load_linear(self, name: str, dimension: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {arm: (xx.copy(), rx.copy()) for arm, (xx, rx) in self._linear.get(name, {}).items()
                if rx.shape == (dimension,)}

    async def get_decisions(self, ids: Sequence[str]) -> list[Decision | None]:
        return [self._decisions.get(i) for i in ids]

    async def add_pulls(self, name: str, incarnation: int, pulls: dict[str, int]) -> None:
        if self._alive(name, incarnation):
            for arm, n in pulls.items():
                self._add(name, arm, pulls=n)

    async def decision_key(self) -> bytes:
        return self._key

    async def apply_rewards(self, events: Sequence[RewardEvent]) -> list[RewardOutcome]:
        return [self._apply(event) for event in events]

    def _apply(self, e: RewardEvent) -> RewardOutcome:
        if not self._alive(e.bandit, e.incarnation):
            return RewardOutcome.BANDIT_GONE
        marker = (e.bandit, e.incarnation, e.decision_id, e.event_id)
        if e.event_id and marker in self._events:
            same = self._events[marker] == e.fingerprint
            return RewardOutcome.DUPLICATE if same else RewardOutcome.CONFLICT
        if e.event_id:
            self._events[marker] = e.fingerprint
        if e.discount:
            self._forget(e.bandit, e.arm_id, e.discount)
        self._add(e.bandit, e.arm_id, rewards=1, reward=e.reward, discounted=bool(e.discount))
        if e.context:
            x = np.asarray(e.context, dtype=float)
            xx, rx = self._linear[e.bandit].get(e.arm_id, (np.zeros((x.size, x.size)), np.zeros(x.size)))
            self._linear[e.bandit][e.arm_id] = (xx + np.outer(x, x), rx + e.reward * x)
        return RewardOutcome.APPLIED

    def _forget(self, name: str, rewarded_arm: str, discount: float) -> None:
        """Evidence forgotten before a reward to `rewarded_arm` (domain/forgetting.py), directly;
        the Redis store scales lazily, to the same result."""
        every = 1.0 - fade(discount)
        for arm, c in self._counts[name].items():
            keep = every * (1.0 - discount) if arm == rewarded_arm else every
            if c.discounted is not None:
                self._counts[name][arm] = replace(c, discounted=(c.discounted[0] * keep, c.discounted[1] * keep))
        for arm, (xx, rx) in self._linear[name].items():
            keep = every * (1.0 - discount) if arm == rewarded_arm else every
            self._linear[name][arm] = (xx * keep, rx * keep)

    def _add(self, name: str, arm: str, pulls: int = 0, rewards: int = 0, reward: float = 0.0,
             discounted: bool = False) -> None:
        c = self._counts[name].get(arm, ArmCounts())
        evidence = c.discounted
        if discounted:
            successes, failures = evidence or (0.0, 0.0)
            evidence = (successes + reward, failures + rewards - reward)
        self._counts[name][arm] = ArmCounts(c.pulls + pulls, c.reward_count + rewards, c.reward_sum + reward,
                                            c.failure_sum + rewards - reward, evidence)

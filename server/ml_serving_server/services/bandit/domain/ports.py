"""What the bandit service needs from its state store (implemented over Redis)."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from .model import ArmCounts, BanditDefinition, Decision, RewardEvent, RewardOutcome


class BanditStore(Protocol):
    async def create(self, definition: BanditDefinition) -> bool:
        """Store a new bandit; False if the name is taken."""

    async def get_definition(self, name: str) -> BanditDefinition | None: ...

    async def list_definitions(self, after: str, limit: int) -> list[BanditDefinition]:
        """Definitions with names greater than `after`, in name order."""

    async def replace_definition(self, definition: BanditDefinition, expected_version: int) -> bool | None:
        """Replace the definition if its version is still `expected_version`: True done,
        False it changed meanwhile, None the bandit is gone. Bumps the version."""

    async def delete(self, name: str) -> bool: ...

    async def load_counts(self, name: str) -> tuple[int, dict[str, ArmCounts]] | None:
        """(definition version, counts per arm), or None if the bandit does not exist."""

    async def load_linear(self, name: str, dimension: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per arm, the raw sums (sum x x^T, sum r x) of its contextual evidence."""

    async def get_decisions(self, ids: Sequence[str]) -> list[Decision | None]:
        """Contextual decisions an earlier release stored (ids since carry them), until they expire."""

    async def add_pulls(self, name: str, incarnation: int, pulls: dict[str, int]) -> None:
        """Add pull counts per arm (ignored if that incarnation of the bandit is gone)."""

    async def decision_key(self) -> bytes:
        """The key that signs self-contained decision ids, the same for every replica."""

    async def apply_rewards(self, events: Sequence[RewardEvent]) -> list[RewardOutcome]:
        """Apply each event atomically, in order. An event id is marked, with the event's
        fingerprint, per incarnation and scope (its decision, else the bandit) for the
        event's ttl; a marked one changes nothing and is a DUPLICATE or a CONFLICT."""

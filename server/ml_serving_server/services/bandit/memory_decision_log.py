"""DecisionLogStore in memory: one process, no persistence.

For unit tests of the domain; the same contract tests run over this store and
PostgresDecisionLog (tests/bandit/adapters/test_decision_log_contract.py).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Sequence

import numpy as np

from .domain.decision_log import DecisionRecord, EvaluationRows, LogCursor, LoggedDecision, LoggedReward


class MemoryDecisionLog:
    def __init__(self) -> None:
        self._decisions: dict[tuple, LoggedDecision] = {}  # (bandit, incarnation, time, key) -> row
        self._rewards: dict[int, LoggedReward] = {}

    async def write(self, decisions: Sequence[LoggedDecision], rewards: Sequence[LoggedReward]) -> None:
        for d in decisions:
            self._decisions.setdefault((d.bandit, d.incarnation, d.time, d.key), d)
        for r in rewards:
            self._rewards.setdefault(r.id, r)

    def _rows(self, bandit: str, incarnation: int, start: datetime | None, end: datetime | None) -> list:
        return sorted((d for d in self._decisions.values()
                       if d.bandit == bandit and d.incarnation == incarnation
                       and (start is None or d.time >= start) and (end is None or d.time < end)),
                      key=lambda d: (d.time, d.key))

    def _rewards_of(self, bandit: str, incarnation: int) -> dict[bytes, list[LoggedReward]]:
        found = defaultdict(list)
        for r in self._rewards.values():
            if r.bandit == bandit and r.incarnation == incarnation:
                found[r.key].append(r)
        return found

    async def page(self, bandit: str, incarnation: int, start: datetime | None, end: datetime | None, limit: int,
                   after: LogCursor | None) -> list[DecisionRecord]:
        rewards = self._rewards_of(bandit, incarnation)
        rows = [d for d in reversed(self._rows(bandit, incarnation, start, end))
                if after is None or (d.time, d.key) < (after.time, after.key)][:limit]
        return [DecisionRecord(d, sum(r.reward for r in rewards[d.key]), len(rewards[d.key])) for d in rows]

    async def evaluation_rows(self, bandit: str, incarnation: int, start: datetime | None, end: datetime | None,
                              limit: int) -> EvaluationRows | None:
        rows = self._rows(bandit, incarnation, start, end)
        if len(rows) > limit:
            return None
        rewards = self._rewards_of(bandit, incarnation)
        firsts = [[r.reward for r in rewards[d.key] if r.arm == d.chosen[0]] for d in rows]
        dimensions = {len(d.context) for d in rows}
        return EvaluationRows(
            first_chosen=np.array([d.chosen[0] for d in rows], dtype=np.int64),
            propensity=np.array([d.propensity for d in rows], dtype=float),
            reward=np.array([sum(f) for f in firsts], dtype=float),
            rewarded=np.array([bool(f) for f in firsts], dtype=bool),
            offered_flat=np.array([p for d in rows for p in d.offered], dtype=np.int64),
            offered_lengths=np.array([len(d.offered) for d in rows], dtype=np.int64),
            contexts=(np.array([d.context for d in rows], dtype=float)
                      if rows and 0 not in dimensions and len(dimensions) == 1 else None))

    async def delete_before(self, time: datetime) -> int:
        old = [k for k, d in self._decisions.items() if d.time < time]
        gone = [k for k, r in self._rewards.items() if r.time < time]
        for k in old:
            del self._decisions[k]
        for k in gone:
            del self._rewards[k]
        return len(old) + len(gone)

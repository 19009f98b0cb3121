"""The Bandit service's domain metrics (Prometheus):

- `mlserving_bandit_selections_total{bandit, arm}` (counter): arms chosen by Select and
  SelectContextual, one per chosen arm (a selection of k arms counts k);
- `mlserving_bandit_rewards_total{bandit, arm}` (counter): rewards newly applied (duplicates
  and conflicts are not), by Reward and BatchReward alike;
- `mlserving_bandit_reward_value_total{bandit, arm}` (counter): the sum of those rewards' values,
  so `reward_value_total / rewards_total` is the mean reward.

`bandit` and `arm` are bounded (runtime/metric_labels.py). Selections are counted by the
servicer; rewards where the store says it applied them (`MeteredStore`, wrapped around the
store by build()), the one place that knows for each reward of a batch whether it counted.
The decision log's own metrics are in log_metrics.py.
"""

from __future__ import annotations

from typing import Sequence

from prometheus_client import Counter

from ...runtime.metric_labels import bounded
from .domain.model import RewardEvent, RewardOutcome

SELECTIONS = Counter("mlserving_bandit_selections", "Arms chosen by Select and SelectContextual", ["bandit", "arm"])
REWARDS = Counter("mlserving_bandit_rewards", "Rewards applied (duplicates not counted)", ["bandit", "arm"])
REWARD_VALUE = Counter("mlserving_bandit_reward_value", "Sum of the values of the rewards applied", ["bandit", "arm"])


def _labels(metric: str, bandit: str, arm: str) -> tuple[str, str]:
    return bounded(metric, "bandit", bandit), bounded(metric, "arm", arm)


def count_selection(bandit: str, arm_ids: Sequence[str]) -> None:
    for arm in arm_ids:
        SELECTIONS.labels(*_labels("mlserving_bandit_selections_total", bandit, arm)).inc()


def count_rewards(events: Sequence[RewardEvent], outcomes: Sequence[RewardOutcome]) -> None:
    for event, outcome in zip(events, outcomes):
        if outcome is RewardOutcome.APPLIED:
            REWARDS.labels(*_labels("mlserving_bandit_rewards_total", event.bandit, event.arm_id)).inc()
            REWARD_VALUE.labels(*_labels("mlserving_bandit_reward_value_total", event.bandit,
                                         event.arm_id)).inc(event.reward)


class MeteredStore:
    """The bandit store, counting the rewards it applies; every other call passes through."""

    def __init__(self, store):
        self._store = store

    async def apply_rewards(self, events: Sequence[RewardEvent]) -> list[RewardOutcome]:
        outcomes = await self._store.apply_rewards(events)
        count_rewards(events, outcomes)
        return outcomes

    def __getattr__(self, name: str):
        return getattr(self._store, name)

"""What a bandit is, in plain data."""

from __future__ import annotations

import enum
import functools
import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime

DEFAULT_DECISION_TTL_SECONDS = 7 * 24 * 3600
"""How long a decision can be rewarded, unless the bandit says otherwise."""

MAX_DISCOUNT = 0.5
"""Above this a bandit would forget half its evidence with every reward: nothing left to learn from."""


class ContextualAlgorithm(enum.Enum):
    LINEAR_THOMPSON = "linear_thompson"
    LIN_UCB = "lin_ucb"


@dataclass(frozen=True)
class ArmDefinition:
    id: str
    description: str = ""
    disabled: bool = False
    model_version: str = ""


@dataclass(frozen=True)
class BanditDefinition:
    name: str
    arms: tuple[ArmDefinition, ...]
    description: str = ""
    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    context_dimension: int = 0
    contextual_algorithm: ContextualAlgorithm = ContextualAlgorithm.LINEAR_THOMPSON
    exploration: float = 0.0  # 0: the contextual algorithm's default, filled in at creation
    ridge_lambda: float = 1.0
    decision_ttl_seconds: int = DEFAULT_DECISION_TTL_SECONDS
    discount: float = 0.0
    create_time: datetime | None = None
    update_time: datetime | None = None
    created_by: str = ""  # the subject of the creator's token
    updated_by: str = ""  # the subject of the token of the last change

    def arm_ids(self) -> list[str]:
        return [arm.id for arm in self.arms]

    @functools.cached_property
    def positions(self) -> dict[str, int]:
        """Each arm's position in `arms` (arms are only ever appended: a position never changes)."""
        return {arm.id: i for i, arm in enumerate(self.arms)}

    def enabled_arm_ids(self) -> list[str]:
        return [arm.id for arm in self.arms if not arm.disabled]

    def with_changes(self, **changes) -> "BanditDefinition":
        return replace(self, **changes)

    @property
    def incarnation(self) -> int:
        """Creation time in microseconds: tells this bandit from an earlier one of the same name."""
        return int(self.create_time.timestamp() * 1_000_000) if self.create_time else 0


@dataclass(frozen=True)
class ArmCounts:
    """Evidence gathered for one arm (the prior is not included)."""

    pulls: int = 0
    reward_count: int = 0
    reward_sum: float = 0.0
    failure_sum: float = 0.0
    # For a bandit with a discount: (successes, failures) after forgetting, what its posterior
    # uses; None for a bandit that forgets nothing (its posterior uses the sums above).
    discounted: tuple[float, float] | None = None

    @property
    def evidence(self) -> tuple[float, float]:
        """(successes, failures) the posterior adds to the prior."""
        return self.discounted if self.discounted is not None else (self.reward_sum, self.failure_sum)


@dataclass(frozen=True)
class Decision:
    id: str
    bandit: str
    arm_ids: tuple[str, ...]  # empty in a decoded id until named from the definition (`named`)
    context: tuple[float, ...] = ()
    user_id: str = ""
    time: datetime | None = None
    arm_positions: tuple[int, ...] = ()  # the chosen arms' positions in the definition, as ids carry them

    def named(self, definition: "BanditDefinition") -> "Decision | None":
        """With arm ids from the arms' positions; None if the definition has no such positions."""
        if self.arm_ids or not self.arm_positions:
            return self
        arms = definition.arms
        if max(self.arm_positions) >= len(arms):
            return None
        return replace(self, arm_ids=tuple(arms[p].id for p in self.arm_positions))


@dataclass(frozen=True)
class RewardEvent:
    """One reward, resolved to a bandit and arm, ready to apply.

    Its event id counts once within its scope: the decision it rewards, else the bandit
    (per incarnation). The same event id again with the same content is a duplicate;
    with other content (the fingerprint differs) it is a conflict."""

    bandit: str
    incarnation: int
    arm_id: str
    reward: float
    event_id: str = ""
    context: tuple[float, ...] = ()
    ttl_seconds: int = DEFAULT_DECISION_TTL_SECONDS
    decision_id: str = ""
    discount: float = 0.0  # the bandit's: applied to this arm's evidence before this reward is added
    arm_position: int = -1  # the arm's position in the definition, for the decision log

    @property
    def fingerprint(self) -> str:
        """A digest of what the event says, kept with its event id to tell a retry from a conflict."""
        content = json.dumps([self.decision_id, self.arm_id, float(self.reward), [float(v) for v in self.context]])
        return hashlib.sha256(content.encode()).hexdigest()[:32]


class RewardOutcome(enum.Enum):
    """What the store did with one reward event."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"  # its event id was counted before, with the same content
    CONFLICT = "conflict"  # its event id was counted before, with other content: nothing changed
    BANDIT_GONE = "bandit_gone"  # that incarnation of the bandit no longer exists


@dataclass(frozen=True)
class RewardInput:
    """A reward as the caller sent it."""

    decision_id: str = ""
    arm_id: str = ""
    bandit: str = ""
    reward: float = 0.0
    event_id: str = ""
    context: tuple[float, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class LearningCandidate:
    """EvaluatePolicy's learning candidate: the bandit's parameters, changed where a field is set."""

    contextual: bool = False
    contextual_algorithm: ContextualAlgorithm | None = None
    prior_alpha: float | None = None
    prior_beta: float | None = None
    exploration: float | None = None
    ridge_lambda: float | None = None
    discount: float | None = None

"""What the bandit service answers: selections and statistics, in plain data."""

from __future__ import annotations

from dataclasses import dataclass

from .model import ArmCounts, ContextualAlgorithm, Decision


@dataclass(frozen=True)
class Choice:
    arm_id: str
    score: float
    rank: int


@dataclass(frozen=True)
class Selection:
    decision: Decision
    choices: list[Choice]
    algorithm: ContextualAlgorithm | None = None

    @classmethod
    def ranked(cls, decision: Decision, ranked: list[tuple[str, float]],
               algorithm: ContextualAlgorithm | None = None) -> "Selection":
        """From a policy's ranking, best first: (arm_id, score) pairs."""
        choices = [Choice(arm, float(score), rank) for rank, (arm, score) in enumerate(ranked)]
        return cls(decision, choices, algorithm)


@dataclass(frozen=True)
class ArmStatistics:
    arm_id: str
    counts: ArmCounts
    alpha: float
    beta: float
    mean: float
    interval: tuple[float, float]
    selection_share: float
    disabled: bool


@dataclass(frozen=True)
class BanditStatistics:
    bandit: str
    total_pulls: int
    total_reward_count: int
    arms: list[ArmStatistics]


@dataclass(frozen=True)
class LoggedDecisionView:
    """One decision of the log, arms named."""

    decision_id: str
    bandit: str
    choices: list[Choice]
    propensity: float
    choice_probabilities: tuple[float, ...]
    offered_arm_ids: tuple[str, ...]
    context: tuple[float, ...]
    user_id: str
    time: object  # datetime
    reward_sum: float
    reward_count: int
    algorithm: ContextualAlgorithm | None


@dataclass(frozen=True)
class PolicyEvaluation:
    decision_count: int
    rewarded_count: int
    logged_value: float
    effective_sample_size: float
    estimates: tuple  # off_policy.Estimate, in the order asked for

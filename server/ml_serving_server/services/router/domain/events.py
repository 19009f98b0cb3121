"""What the Router tells an observer as it happens (metrics, in metrics.py): a port with a
no-op default, so the use cases stay plain and a test's service needs no observer.

Each call reports something done: a prediction answered or failed after its assignment, an
exposure recorded, an outcome counted, a canary decision stored (a canary change is a
compare-and-set on its revision, so of several replicas deciding at once only the one whose
change was stored reports it).
"""

from __future__ import annotations

from typing import Protocol

from .canary import CanaryEventType

CANARY_VERDICTS = frozenset({CanaryEventType.ADVANCED, CanaryEventType.AWAITING_PROMOTION, CanaryEventType.PROMOTED,
                             CanaryEventType.PROMOTION_FAILED, CanaryEventType.ROLLED_BACK})
"""The canary events that are decisions on it (the others: started, paused, resumed by a person)."""


class RouterEvents(Protocol):
    def predicted(self, experiment: str, variant: str, ok: bool) -> None:
        """A Predict served by the assignment (experiment "" when none: a canary or the default)."""

    def exposed(self, experiment: str, variant: str) -> None:
        """An exposure recorded (assigned, or reported by RecordExposures); variant "~holdout" for a holdout."""

    def outcome_counted(self, experiment: str, variant: str) -> None:
        """An outcome newly counted (not a duplicate, not for an experiment that stopped counting)."""

    def canary_verdict(self, model_name: str, verdict: CanaryEventType) -> None:
        """A canary decision stored: one of CANARY_VERDICTS."""


class NoEvents:
    def predicted(self, experiment: str, variant: str, ok: bool) -> None:
        pass

    def exposed(self, experiment: str, variant: str) -> None:
        pass

    def outcome_counted(self, experiment: str, variant: str) -> None:
        pass

    def canary_verdict(self, model_name: str, verdict: CanaryEventType) -> None:
        pass


NO_EVENTS = NoEvents()

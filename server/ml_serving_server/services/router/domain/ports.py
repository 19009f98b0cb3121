"""What the Router needs from the outside: its definitions store (PostgreSQL), its
measurements store (Redis), the Registry's versions, and predictions (the Inference
service's own use case, called in-process).

Adapters raise StoreUnavailable when their store cannot be reached (refused, timed out,
connection lost); no driver exception leaves an adapter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, Sequence

from ....errors import Unavailable
from .errors import ErrorReason
from .model import (
    Experiment,
    ExperimentChange,
    ExperimentState,
    Exposure,
    OutcomeEvent,
    OutcomeResult,
    RequestSample,
    RequestStats,
)
from .canary import Canary, CanaryEvent, CanaryState
from .statistics import Counts, MetricKind


class StoreUnavailable(Unavailable):
    def __init__(self, what: str = "the router's state store"):
        super().__init__(f"{what} is unavailable", reason=ErrorReason.STATE_STORE_UNAVAILABLE)


class ExperimentExists(Exception):
    """create: an experiment of that name exists (or existed: names are never reused)."""


class ModelBusy(Exception):
    """create / replace: the model already has a running experiment or an active canary;
    `holder` names it (an experiment's name or a canary's id), `kind` says which."""

    def __init__(self, holder: str, kind: str = "experiment"):
        super().__init__(holder)
        self.holder = holder
        self.kind = kind  # "experiment" or "canary"


class ExperimentStore(Protocol):
    """Experiments and their history. Every write is one transaction that also appends the
    change to the history and advances the store's change sequence (see `changed_since`)."""

    async def create(self, experiment: Experiment, change: ExperimentChange) -> Experiment:
        """Store a new experiment (create_time and update_time set by the store, revision 1).
        Raises ExperimentExists, or ModelBusy when it is RUNNING and its model already has a
        RUNNING experiment or an active canary."""

    async def get(self, name: str) -> Experiment | None: ...

    async def list(self, *, states: Sequence[ExperimentState] = (), model_name: str = "",
                   before: tuple[datetime, str] | None = None, limit: int = 100) -> list[Experiment]:
        """Newest first (create_time, then name, both descending), strictly before the
        (create_time, name) key when given."""

    async def replace(self, experiment: Experiment, expected_revision: int,
                      change: ExperimentChange) -> Experiment | None:
        """Store `experiment` (its revision must be expected_revision + 1) if the stored one is
        still at expected_revision; None when it is not (or is gone). update_time set by the
        store. Raises ModelBusy when it becomes RUNNING while another experiment of its model is
        RUNNING or the model has an active canary."""

    async def history(self, name: str, *, after_revision: int = 0, limit: int = 100) -> list[ExperimentChange]:
        """Changes of one experiment, oldest first."""

    async def changed_since(self, cursor: int) -> tuple[int, list[Experiment]]:
        """Experiments written after `cursor`, and the cursor to pass next; cursor 0 gives every
        experiment that is not stopped (stopped ones are fetched with `get` when needed)."""

    async def wait_for_change(self, timeout_s: float) -> None:
        """Return when some replica wrote an experiment, or after timeout_s."""

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class CanaryStore(Protocol):
    """Canaries, their audit trail and the lease that lets one replica drive each. Implemented
    by the same adapter as ExperimentStore, with the same writer lock and change sequence, so
    "one running experiment or active canary per model" holds across both tables."""

    async def create_canary(self, canary: Canary, event: CanaryEvent) -> tuple[Canary, bool]:
        """Store a new canary (revision 1, create/update/step_start times set by the store) and
        its STARTED event; (stored, True). With a request_id already used: (the canary that
        request created, False), nothing written. Raises ModelBusy when its model has an active
        canary (kind "canary") or a RUNNING experiment (kind "experiment")."""

    async def get_canary(self, canary_id: str) -> Canary | None: ...

    async def list_canaries(self, *, model_name: str = "", states: Sequence[CanaryState] = (),
                            before: tuple[datetime, str] | None = None, limit: int = 100) -> list[Canary]:
        """Newest first (create_time, then canary_id, descending), strictly before the key."""

    async def replace_canary(self, canary: Canary, expected_revision: int,
                             events: Sequence[CanaryEvent]) -> Canary | None:
        """Compare-and-set as `ExperimentStore.replace` (canary.revision must be
        expected_revision + 1), appending `events` to its trail (sequences assigned in order).
        update_time set by the store, and step_start_time too when `canary` leaves it None
        (the service does on a new step and on resume: the step's clock is the store's)."""

    async def canary_events(self, canary_id: str, *, after_sequence: int = 0,
                            limit: int = 100) -> list[CanaryEvent]:
        """The trail, oldest first."""

    async def canaries_changed_since(self, cursor: int) -> tuple[int, list[Canary]]:
        """As changed_since, for canaries: cursor 0 gives the active ones."""

    async def acquire_lease(self, canary_id: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease to drive a canary: True when `holder` holds it now (it was
        free, expired, or already `holder`'s); its expiry is then now + ttl_s."""

    async def release_lease(self, canary_id: str, holder: str) -> None: ...


class Measurements(Protocol):
    """Exposures, Predict samples and outcome events, and the counts results are made of.
    Exposures and samples arrive in batches (see tally.py); each method is one round trip."""

    async def add_exposures(self, exposures: Sequence[Exposure]) -> None:
        """Remember each user as exposed to the variant (distinct users: a repeat changes nothing)."""

    async def add_requests(self, samples: Sequence[RequestSample]) -> None:
        """Count each call (and its error) per scope and variant, and its latency in the histogram."""

    async def record_outcomes(self, events: Sequence[OutcomeEvent],
                              dedupe_seconds: int) -> list[OutcomeResult]:
        """Apply each event atomically, in order: its event id (per experiment) is remembered
        for dedupe_seconds; a remembered one is a DUPLICATE and changes nothing; one of a user
        not exposed to the event's variant is NOT_COUNTED (remembered, not counted). Binary:
        a user converts at most once. Numeric: the user's running total, and the variant's
        sum and sum of squares of the per-user totals, are kept up to date."""

    async def counts(self, experiment: str, variants: Sequence[str], metric: str,
                     kind: MetricKind) -> tuple[dict[str, Counts], dict[str, int], int]:
        """Per variant: the metric's Counts (n = users exposed) and the outcome events counted;
        and the users held out."""

    async def request_stats(self, scope: str, variants: Sequence[str]) -> dict[str, RequestStats]: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...

"""What the feature store stands on, as ports: the source (PostgreSQL), the online store (Redis)
and the materialisation state (PostgreSQL). Plain Python: the adapters beside this package
implement them, the tests' in-memory fakes too.

Every adapter raises only its port's one Unavailable error for "cannot reach it now"; the
runtime's one status mapping turns each into UNAVAILABLE with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple, Protocol, Sequence

from ....errors import FailedPrecondition, Unavailable
from .errors import ErrorReason
from .feature_views import FeatureView
from .values import EntityKey


class SourceUnavailable(Unavailable):
    def __init__(self, what: str = "the feature source (PostgreSQL)"):
        super().__init__(f"{what} cannot be reached", reason=ErrorReason.SOURCE_UNAVAILABLE)


class SourceQueryFailed(FailedPrecondition):
    """PostgreSQL refuses a view's source query as written (no such table or column, a bad cast):
    a fault of the declarations or the database, not of the request."""

    def __init__(self, detail: str):
        super().__init__(f"a feature view's source query fails in PostgreSQL: {detail[:200]}",
                         reason=ErrorReason.SOURCE_QUERY_FAILED)


class OnlineStoreUnavailable(Unavailable):
    def __init__(self, what: str = "the online feature store (Redis)"):
        super().__init__(f"{what} cannot be reached", reason=ErrorReason.ONLINE_STORE_UNAVAILABLE)


class StateStoreUnavailable(Unavailable):
    def __init__(self, what: str = "the pipeline's state store (PostgreSQL)"):
        super().__init__(f"{what} cannot be reached", reason=ErrorReason.STATE_STORE_UNAVAILABLE)


@dataclass(frozen=True)
class EntityRow:
    """One entity's features as computed from the source: values typed per the view (None: null)."""

    key: EntityKey
    event_time: datetime | None  # aware, UTC
    values: dict[str, object]


@dataclass(frozen=True)
class EncodedRow:
    """One entity's features as the source encoded them: `values_json` is one JSON array of the
    values in the view's declared order, exactly what `json.dumps` of the typed values gives
    once parsed (for the materialisation's bulk path: no Python value in between)."""

    key: EntityKey
    event_time: datetime | None  # aware, UTC
    values_json: str


class StoredEntity(NamedTuple):
    """One entity's record in the online store. (A named tuple: a read makes one per entity, and
    a frozen dataclass costs several times more to build.)"""

    values: dict[str, object]  # feature name -> typed value (None: null); the requested ones, in their order
    event_time: datetime | None
    computed_at: datetime  # when it was written (materialised or read through)
    definition_hash: str  # the view's definition the values were computed with


class FeatureSource(Protocol):
    """The views' SQL queries over PostgreSQL."""

    async def max_event_time(self, view: FeatureView) -> datetime | None:
        """The largest event time of the view's rows (None: no rows)."""

    async def changed_keys(self, view: FeatureView, *, after: datetime | None, since: datetime | None,
                           until: datetime | None) -> list[EntityKey]:
        """The distinct keys of rows whose event time is > after, >= since and <= until (each None:
        unbounded), in ascending key order."""

    async def rows(self, view: FeatureView, keys: Sequence[EntityKey], *, timeout_s: float | None = None
                   ) -> list[EntityRow]:
        """The view's rows of these keys (at most one per key: the newest by event time)."""

    async def encoded_rows(self, view: FeatureView, keys: Sequence[EntityKey]) -> list[EncodedRow] | None:
        """As rows, encoded by the source itself; None when it cannot encode them exactly as the
        typed rows would be (the caller then reads `rows`)."""

    async def recent_values(self, view: FeatureView, feature: str, *, start: datetime, end: datetime,
                            limit: int) -> list[float]:
        """The values of the numeric feature `feature` in the view's rows whose event time is >= start
        and <= end, newest first, at most `limit`; nulls (and values that are not finite) left out.
        Every row counts, not only each key's newest (the monitor's feature drift)."""


class OnlineStore(Protocol):
    """One record per (view, entity): the features, their event time and when they were written."""

    async def write(self, view: FeatureView, rows: Sequence[EntityRow], computed_at: datetime) -> None:
        """Write every row in one round trip; rewriting an entity replaces its values."""

    async def write_encoded(self, view: FeatureView, rows: Sequence[EncodedRow], computed_at: datetime) -> None:
        """As write, of rows the source encoded."""

    async def read_views(self, reads: Sequence[tuple[FeatureView, Sequence[EntityKey], Sequence[str]]]
                         ) -> list[dict[EntityKey, StoredEntity]]:
        """Per (view, keys, features): the stored entities among the keys (absent ones left out),
        with those features. Every view in one round trip."""

    async def keys(self, view: FeatureView) -> list[EntityKey]:
        """Every entity the view has online (any definition)."""

    async def delete(self, view: FeatureView, keys: Sequence[EntityKey]) -> None:
        """Remove the entities' values, in one round trip."""

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class ViewLock(Protocol):
    """The right to materialise one view, held until released (or its holder dies)."""

    async def release(self) -> None: ...


@dataclass(frozen=True)
class ViewState:
    """What is materialised of a view: its watermark and the definition it was computed with."""

    feature_view: str
    definition_hash: str
    materialized_until: datetime | None
    last_materialization_time: datetime | None


@dataclass
class JobError:
    reason: str  # an ErrorReason's name
    message: str
    code: str = "INTERNAL"  # the status the error maps to (its name), e.g. UNAVAILABLE


@dataclass
class Job:
    """One view's materialisation, as stored."""

    job_id: str
    feature_view: str
    mode: str  # "INCREMENTAL" | "FULL"
    state: str  # "QUEUED" | "RUNNING" | "SUCCEEDED" | "FAILED"
    definition_hash: str
    create_time: datetime
    window_start: datetime | None = None
    window_end: datetime | None = None
    entities_total: int = 0
    entities_written: int = 0
    resume_after: str | None = None  # the last key of the last batch written (progress)
    resumed_job_id: str = ""
    entities_deleted: int = 0  # online entities no longer in the source, removed (FULL runs)
    start_time: datetime | None = None
    end_time: datetime | None = None
    error: JobError | None = None
    requested_until: datetime | None = field(default=None, compare=False)  # the request's end_time


class MaterializationState(Protocol):
    """Jobs, watermarks and view locks, in PostgreSQL."""

    async def try_lock(self, feature_view: str) -> ViewLock | None:
        """The view's lock, or None when another materialisation holds it (any replica)."""

    async def view_states(self) -> dict[str, ViewState]: ...

    async def view_state(self, feature_view: str) -> ViewState | None: ...

    async def create_job(self, job: Job) -> None: ...

    async def update_job(self, job: Job) -> None:
        """Store the job's state and progress."""

    async def get_job(self, job_id: str) -> Job | None: ...

    async def newest_job_time(self, feature_view: str) -> datetime | None:
        """When the view's newest job was created (None: it has none)."""

    async def last_job(self, feature_view: str, *, before: Job) -> Job | None:
        """The view's newest job created before `before` (the previous one)."""

    async def finish(self, job: Job, state: ViewState) -> None:
        """Store the succeeded job and the view's new state together."""

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...

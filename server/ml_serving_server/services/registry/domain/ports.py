"""What the registry needs from the outside: a model catalog (MLflow), an artifact store
(S3) and a lifecycle store (PostgreSQL: stages, audit history, the event feed).

Adapters raise the exceptions declared here (never their library's own); the domain
service turns them into DomainErrors.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import AsyncIterator, Protocol, Sequence

from .model import ArtifactFormat, EventType, RegistryEvent, Stage, StageTransition, TransitionQuery


class BackendUnavailable(Exception):
    """The system behind a port cannot be reached or timed out; nothing is known to have changed."""


class CatalogConflict(Exception):
    """The catalog already has a model of that name."""


class CatalogRejected(Exception):
    """The catalog refused a value (a name it would not take, a page token it did not issue)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


class ArtifactMissing(Exception):
    """No object at the URI given."""


class ArtifactTooLarge(Exception):
    """The artifact passed the size limit while it was being received."""


# --- MLflow ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CatalogModel:
    """A registered model as MLflow stores it: raw tags, every alias."""

    name: str
    description: str
    tags: dict[str, str]
    aliases: dict[str, str]  # alias -> version
    create_time: datetime | None
    update_time: datetime | None


@dataclass(frozen=True)
class CatalogVersion:
    """A model version as MLflow stores it: raw tags."""

    model_name: str
    version: str
    description: str
    source: str
    run_id: str
    tags: dict[str, str]
    aliases: tuple[str, ...]
    create_time: datetime | None
    update_time: datetime | None


class ModelCatalog(Protocol):
    """Registered models, versions, tags and aliases in the MLflow Model Registry."""

    async def create_model(self, name: str, description: str, tags: dict[str, str]) -> CatalogModel:
        """Raises CatalogConflict when the name is taken."""

    async def get_model(self, name: str) -> CatalogModel | None: ...

    async def search_models(self, name_contains: str, tags: dict[str, str | None], page_size: int,
                            page_token: str) -> tuple[list[CatalogModel], str]:
        """Models in name order whose name contains `name_contains` (any case) and carrying
        every tag (value None: any value); the next page token, empty on the last page."""

    async def update_model(self, name: str, description: str | None, set_tags: dict[str, str],
                           remove_tag_keys: Sequence[str]) -> CatalogModel | None: ...

    async def delete_model(self, name: str) -> bool: ...

    async def create_version(self, name: str, source: str, run_id: str, description: str,
                             tags: dict[str, str]) -> CatalogVersion: ...

    async def get_version(self, name: str, version: str) -> CatalogVersion | None: ...

    async def list_versions(self, name: str) -> list[CatalogVersion]:
        """Every version of one model."""

    async def update_version(self, name: str, version: str, description: str | None, set_tags: dict[str, str],
                             remove_tag_keys: Sequence[str]) -> CatalogVersion | None: ...

    async def delete_version(self, name: str, version: str) -> bool: ...

    async def set_alias(self, name: str, alias: str, version: str) -> None: ...

    async def delete_alias(self, name: str, alias: str) -> bool: ...

    async def download_run_artifact(self, run_id: str, path: str, dest_dir: Path) -> Path:
        """Fetch `runs:/<run_id>/<path>` into dest_dir; raises ArtifactMissing."""

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


# --- S3 ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class StagedFile:
    """Artifact bytes held in a local temporary file while they are checked."""

    path: Path
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class StoredObject:
    uri: str
    size_bytes: int
    sha256: str  # "" unless the registry stored it (then it is in the object's metadata)
    format: ArtifactFormat  # UNSPECIFIED unless the registry stored it


class ArtifactStore(Protocol):
    """Artifacts in an S3-compatible bucket, under the registry's prefix."""

    async def stage_bytes(self, data: bytes) -> StagedFile: ...

    async def stage_stream(self, chunks: AsyncIterator[bytes], max_bytes: int) -> StagedFile:
        """Raises ArtifactTooLarge once more than max_bytes arrived (and keeps nothing)."""

    async def stage_uri(self, uri: str, max_bytes: int) -> StagedFile:
        """Download an s3:// object; raises ArtifactMissing, ArtifactTooLarge."""

    async def stage_file(self, path: Path, max_bytes: int | None = None) -> StagedFile:
        """Take over a local file (from the catalog's run artifacts); raises ArtifactTooLarge."""

    def discard(self, staged: StagedFile) -> None:
        """Delete the local temporary file."""

    async def put(self, staged: StagedFile, key: str, format: ArtifactFormat) -> str:
        """Store under `key` (relative to the registry's prefix) with the checksum and format
        as object metadata; returns the s3:// URI."""

    async def stat(self, uri: str) -> StoredObject | None: ...

    async def copy(self, source_uri: str, key: str) -> str:
        """Server-side copy of an object the registry stored, metadata kept; returns the new URI."""

    def is_upload(self, uri: str) -> bool:
        """Whether the URI is one of the registry's own uploads (UploadArtifact)."""

    async def delete(self, uri: str) -> None:
        """Idempotent; a URI outside the registry's prefix is left alone (a caller's own object)."""

    async def prune_uploads(self, older_than: datetime | None = None) -> int:
        """Delete uploads never used by a version (default: older than the store's retention)."""

    async def read(self, uri: str) -> bytes:
        """The whole object (small artifacts; tests)."""

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


# --- PostgreSQL --------------------------------------------------------------------------

@dataclass(frozen=True)
class StageRecord:
    stage: Stage
    since: datetime


class LifecycleTx(Protocol):
    """Changes to one model's lifecycle, inside a transaction that holds the model's lock.
    They are committed together when the `locked` block ends without an exception."""

    async def stages(self) -> dict[str, StageRecord]:
        """Every version's stage, read under the lock."""

    async def set_stage(self, version: str, stage: Stage, since: datetime) -> None: ...

    async def forget_version(self, version: str) -> None: ...

    async def forget_model(self) -> None:
        """Drop stages and request ids of the model; the audit history and events stay."""

    async def record_transition(self, transition: StageTransition) -> None: ...

    async def append_event(self, event: RegistryEvent) -> int:
        """Give the event the next sequence (strictly increasing, committed in order) and
        wake every replica's listeners at commit; returns the sequence."""

    async def remember_request(self, request_id: str, version: str) -> None: ...

    async def mark_repaired(self) -> None:
        """Clear the model's needs-repair mark (see LifecycleStore.mark_needs_repair)."""


class LifecycleStore(Protocol):
    def locked(self, model_name: str) -> AbstractAsyncContextManager[LifecycleTx]:
        """A transaction holding the model's lock (every replica waits on the same lock)."""

    async def stages(self, model_name: str) -> dict[str, StageRecord]: ...

    async def stages_of(self, model_names: Sequence[str]) -> dict[str, dict[str, StageRecord]]: ...

    async def find_request(self, model_name: str, request_id: str) -> str | None:
        """The version an earlier CreateModelVersion with this request id created."""

    async def transitions(self, query: TransitionQuery) -> list[StageTransition]:
        """Newest first: (time, transition_id) descending, strictly before query.before."""

    async def production_at(self, model_name: str, at: datetime) -> str | None:
        """The version in Production at that instant, from the audit history."""

    async def events_after(self, after: int, up_to: int, limit: int, model_names: Sequence[str] = (),
                           types: Sequence[EventType] = ()) -> list[RegistryEvent]:
        """Events with after < sequence <= up_to, in order, filtered."""

    async def head_sequence(self) -> int:
        """The newest committed sequence (0 when the feed is empty)."""

    async def first_retained_sequence(self) -> int:
        """The oldest sequence still stored (head + 1 when none is)."""

    async def prune_events(self, older_than: datetime) -> int:
        """Delete the oldest events up to the first one not older than `older_than`: what stays
        is every sequence from first_retained_sequence() to the head, without holes."""

    async def wait_for_change(self, timeout: float, *, after_sequence: int | None = None) -> None:
        """Return when another event may have been committed (a NOTIFY, from any replica)
        or after `timeout` seconds; at once when a sequence past `after_sequence` was already
        announced (so a NOTIFY that came while the caller was busy is not missed)."""

    async def mark_needs_repair(self, model_name: str) -> None:
        """Committed at once: MLflow may be about to differ from the stored lifecycle."""

    async def models_needing_repair(self) -> list[str]: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...

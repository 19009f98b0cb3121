"""The registry's use cases over its three ports.

Consistency, in one place:
- PostgreSQL holds the authoritative stage of every version, the audit history and the
  event feed. Each change runs inside `lifecycle.locked(model)`: one transaction holding
  the model's lock (the same lock on every replica), so concurrent changes of one model
  take turns and each commits its stages, audit entries and events together.
- MLflow is written inside that transaction, before it commits. If MLflow fails, the
  transaction rolls back, so the change happens whole or not at all; what MLflow may
  already have taken is put back from PostgreSQL (`repair`), at once or, when MLflow is
  down, by the repair loop once it answers (the model stays marked until then).
- The production alias moves last and in one call, so a plain MLflow client never sees two
  Production versions, nor none while one is being replaced.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import AsyncIterator, Callable, Sequence

from ....errors import AlreadyExists, Aborted, FailedPrecondition, InvalidArgument, NotFound, Unavailable, quoted
from . import artifacts as artifact_checks
from . import layout, limits
from .errors import ErrorReason
from .feed import EventPump, FeedBatch, ModelSnapshot, ResolveCache, watch
from .lifecycle import GATED_STAGES, check_transition, evaluate_gates, gate_failure
from .model import (
    Artifact,
    ArtifactFormat,
    EventType,
    MetricGate,
    ModelVersion,
    RegisteredModel,
    RegistryEvent,
    Signature,
    Stage,
    StageTransition,
    TransitionQuery,
)
from .ports import (
    ArtifactMissing,
    ArtifactStore,
    ArtifactTooLarge,
    BackendUnavailable,
    CatalogConflict,
    CatalogRejected,
    LifecycleStore,
    LifecycleTx,
    ModelCatalog,
    StagedFile,
    StageRecord,
)

log = logging.getLogger(__name__)

REGISTRY_ACTOR = "registry"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class ModelView:
    """A registered model with its lifecycle at a glance."""

    model: RegisteredModel
    latest_version: str
    production_version: str
    staging_versions: tuple[str, ...]


@dataclass(frozen=True)
class NewVersion:
    """What CreateModelVersion asks for (checked by the service)."""

    model_name: str
    artifact: bytes | None = None
    artifact_uri: str | None = None
    artifact_format: ArtifactFormat = ArtifactFormat.UNSPECIFIED
    artifact_file_name: str = ""
    artifact_sha256: str = ""
    source_run_id: str = ""
    metrics: dict[str, float] | None = None
    parameters: dict[str, str] | None = None
    tags: dict[str, str] | None = None
    description: str = ""
    initial_stage: Stage | None = None
    create_model_if_missing: bool = False
    request_id: str = ""
    signature: Signature = Signature()


@dataclass(frozen=True)
class TransitionResult:
    version: ModelVersion
    transition: StageTransition
    archived: ModelVersion | None


@dataclass(frozen=True)
class VersionPage:
    versions: list[ModelVersion]
    next_token: str
    event_sequence: int


@dataclass(frozen=True)
class UploadedArtifact:
    uri: str
    sha256: str
    size_bytes: int
    format: ArtifactFormat


def unavailable(what: str) -> Unavailable:
    reason = ErrorReason.ARTIFACT_STORE_UNAVAILABLE if what == "artifact store" else ErrorReason.BACKEND_UNAVAILABLE
    return Unavailable(f"the registry's {what} is unavailable; nothing was changed, retry later", reason=reason,
                       metadata={"backend": what})


class RegistryService:
    def __init__(self, catalog: ModelCatalog, artifacts: ArtifactStore, lifecycle: LifecycleStore, *,
                 max_artifact_bytes: int, cache_max_models: int = 10_000, heartbeat_s: float = 15.0,
                 clock: Callable[[], datetime] = utc_now, new_id: Callable[[], str] = lambda: uuid.uuid4().hex):
        self.catalog = catalog
        self.artifacts = artifacts
        self.lifecycle = lifecycle
        self.max_artifact_bytes = max_artifact_bytes
        self.heartbeat_s = heartbeat_s
        self.clock = clock
        self.new_id = new_id
        self.cache = ResolveCache(self._load_snapshot, cache_max_models)
        self.pump = EventPump(lifecycle, self.cache)
        self._repair_task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.pump.start()
        self._repair_task = asyncio.create_task(self._repair_loop(), name="registry-repair")

    async def stop_watches(self) -> None:
        """The server is draining: end WatchEvents streams (subscribers resume on another replica)."""
        await self.pump.close_watches()

    async def close(self) -> None:
        if self._repair_task is not None:
            self._repair_task.cancel()
            await asyncio.gather(self._repair_task, return_exceptions=True)
        await self.pump.stop()

    # --- registered models ---------------------------------------------------------------

    async def create_model(self, name: str, description: str, tags: dict[str, str],
                           gates: Sequence[MetricGate], actor: str) -> ModelView:
        limits.model_name(name, "registered_model.name")
        limits.text(description, "registered_model.description", limits.MAX_DESCRIPTION)
        limits.tags(tags, "registered_model.tags")
        gates = limits.gates(gates, "registered_model.promotion_policy.gates")
        return self._view(await self._create_model(name, description, tags, gates, actor), {})

    async def _create_model(self, name: str, description: str, tags: dict[str, str], gates: tuple[MetricGate, ...],
                            actor: str) -> RegisteredModel:
        all_tags = dict(tags)
        if gates:
            all_tags[layout.POLICY_TAG] = layout.policy_json(gates)
        created = None
        try:
            async with self._locked(name, affects_versions=False) as tx:
                created = await self._catalog(self.catalog.create_model(name, description, all_tags), "name")
                await tx.append_event(RegistryEvent(EventType.MODEL_CREATED, self.clock(), name, actor=actor))
        except BaseException:
            if created is not None:  # MLflow took it but the commit failed: take it back
                await self._quietly(self.catalog.delete_model(name))
            raise
        self.cache.forget_absent(name)  # a resolve here right after must not remember it as unknown
        return layout.model_from_catalog(created)

    async def get_model(self, name: str) -> ModelView:
        limits.model_name(name)
        found, stages = await asyncio.gather(self._catalog(self.catalog.get_model(name)),
                                             self._lifecycle(self.lifecycle.stages(name)))
        if found is None:
            raise self._model_not_found(name)
        return self._view(layout.model_from_catalog(found), stages)

    async def list_models(self, name_contains: str, tag_filters: Sequence[str], page_size: int,
                          page_token: str) -> tuple[list[ModelView], str]:
        limits.text(name_contains, "name_contains", 256)
        if len(tag_filters) > limits.MAX_FILTER_VALUES:
            raise InvalidArgument("tags", f"at most {limits.MAX_FILTER_VALUES} tag filters")
        wanted: dict[str, str | None] = {}
        for entry in tag_filters:
            key, eq, value = entry.partition("=")
            limits.tag_keys([key], "tags")
            limits.text(value, "tags", limits.MAX_TAG_VALUE)
            wanted[key] = value if eq else None
        size = limits.page_size(page_size)
        limits.text(page_token, "page_token", 1024)
        models, next_token = await self._catalog(
            self.catalog.search_models(name_contains, wanted, size, page_token), "page_token")
        stages = await self._lifecycle(self.lifecycle.stages_of([m.name for m in models]))
        return [self._view(layout.model_from_catalog(m), stages.get(m.name, {})) for m in models], next_token

    async def update_model(self, name: str, description: str | None, set_tags: dict[str, str],
                           remove_tag_keys: Sequence[str], gates: Sequence[MetricGate] | None,
                           actor: str) -> ModelView:
        limits.model_name(name)
        if description is not None:
            limits.text(description, "description", limits.MAX_DESCRIPTION)
        limits.tags(set_tags, "set_tags")
        limits.tag_keys(remove_tag_keys, "remove_tag_keys")
        catalog_tags = dict(set_tags)
        if gates is not None:
            catalog_tags[layout.POLICY_TAG] = layout.policy_json(limits.gates(gates, "promotion_policy.gates"))
        async with self._locked(name, affects_versions=False) as tx:
            updated = await self._catalog(self.catalog.update_model(name, description, catalog_tags,
                                                                    list(remove_tag_keys)))
            if updated is None:
                raise self._model_not_found(name)
            await tx.append_event(RegistryEvent(EventType.MODEL_UPDATED, self.clock(), name, actor=actor))
            stages = await tx.stages()
        return self._view(layout.model_from_catalog(updated), stages)

    async def delete_model(self, name: str, force: bool, actor: str) -> None:
        limits.model_name(name)
        doomed: list[str] = []
        async with self._locked(name) as tx:
            stages = await tx.stages()
            production = [v for v, r in stages.items() if r.stage == Stage.PRODUCTION]
            if production and not force:
                raise FailedPrecondition(
                    f"model {quoted(name)} has version {production[0]} in Production; archive it first or delete "
                    "with force", reason=ErrorReason.MODEL_HAS_PRODUCTION_VERSION, metadata={"version": production[0]})
            versions = await self._catalog(self.catalog.list_versions(name))
            doomed = [v.source for v in versions if v.source]
            await self.lifecycle.mark_needs_repair(name)  # if PostgreSQL fails after MLflow deleted it
            if not await self._catalog(self.catalog.delete_model(name)):
                raise self._model_not_found(name)
            await tx.forget_model()
            await tx.append_event(RegistryEvent(EventType.MODEL_DELETED, self.clock(), name, actor=actor))
            await tx.mark_repaired()
        await self._delete_artifacts(doomed)

    # --- versions ------------------------------------------------------------------------

    async def upload_artifact(self, model_name: str, file_name: str, declared: ArtifactFormat, size_bytes: int,
                              sha256: str, chunks: AsyncIterator[bytes]) -> UploadedArtifact:
        limits.model_name(model_name, "header.model_name")
        limits.text(file_name, "header.file_name", limits.MAX_FILE_NAME)
        fmt = artifact_checks.infer_format(file_name, declared)
        if size_bytes < 0 or size_bytes > self.max_artifact_bytes:
            raise InvalidArgument("header.size_bytes", f"must be 0 to {self.max_artifact_bytes}",
                                  reason=ErrorReason.ARTIFACT_TOO_LARGE)
        if sha256:
            artifact_checks.check_checksum(sha256, sha256, "header.sha256")  # well-formed?
        if await self._catalog(self.catalog.get_model(model_name)) is None:
            raise self._model_not_found(model_name)
        staged = await self._stage(self.artifacts.stage_stream(chunks, self.max_artifact_bytes), "chunk")
        try:
            if size_bytes and staged.size_bytes != size_bytes:
                raise InvalidArgument("header.size_bytes", f"announced {size_bytes} bytes, received "
                                      f"{staged.size_bytes}", reason=ErrorReason.ARTIFACT_INVALID)
            if sha256:
                artifact_checks.check_checksum(sha256, staged.sha256, "header.sha256")
            await self._check_package(staged, fmt, "chunk")
            key = artifact_checks.upload_key(file_name, self.new_id())
            uri = await self._store(self.artifacts.put(staged, key, fmt))
        finally:
            self.artifacts.discard(staged)
        return UploadedArtifact(uri, staged.sha256, staged.size_bytes, fmt)

    async def create_version(self, request: NewVersion, actor: str) -> tuple[ModelVersion, bool]:
        """The new version, and whether the request id matched an earlier call (nothing new made)."""
        name = limits.model_name(request.model_name, "model_name")
        self._check_new_version(request)
        stage = request.initial_stage or Stage.DEVELOPMENT
        if request.request_id:
            earlier = await self._lifecycle(self.lifecycle.find_request(name, request.request_id))
            if earlier is not None:
                return await self.get_version(name, earlier), True
        model = await self._catalog(self.catalog.get_model(name))
        if model is None:
            if not request.create_model_if_missing:
                raise self._model_not_found(name)
            try:
                await self._create_model(name, "", {}, (), actor)
            except AlreadyExists:
                pass  # created meanwhile by someone else
            model = await self._catalog(self.catalog.get_model(name))
            if model is None:
                raise self._model_not_found(name)
        gate_results = ()
        if stage == Stage.STAGING:
            gate_results = evaluate_gates(layout.model_from_catalog(model).gates, Stage.STAGING, request.metrics or {})
            failure = gate_failure("new", Stage.STAGING, gate_results)
            if failure is not None:
                raise failure
        artifact = await self._take_artifact(request)
        try:
            return await self._register(request, artifact, stage, gate_results, actor)
        except BaseException:
            await self._quietly(self.artifacts.delete(artifact.uri))
            raise

    def _check_new_version(self, request: NewVersion) -> None:
        if (request.artifact is None) == (request.artifact_uri is None):
            raise InvalidArgument("source", "give exactly one of artifact (bytes) or artifact_uri")
        if request.initial_stage not in (None, Stage.DEVELOPMENT, Stage.STAGING):
            raise InvalidArgument("initial_stage", "a new version starts in STAGE_DEVELOPMENT or STAGE_STAGING",
                                  reason=ErrorReason.INVALID_INITIAL_STAGE)
        limits.text(request.artifact_file_name, "artifact_file_name", limits.MAX_FILE_NAME)
        if request.artifact_sha256:
            artifact_checks.check_checksum(request.artifact_sha256, request.artifact_sha256, "artifact_sha256")
        limits.run_id(request.source_run_id)
        limits.metrics(request.metrics or {})
        limits.parameters(request.parameters or {})
        limits.tags(request.tags or {})
        limits.text(request.description, "description", limits.MAX_DESCRIPTION)
        limits.request_id(request.request_id)
        limits.signature(request.signature)

    async def _take_artifact(self, request: NewVersion) -> Artifact:
        """Check the artifact and store it under a key of its own: bytes, an upload, or a copy."""
        unique = self.new_id()
        if request.artifact is not None:
            if not request.artifact:
                raise InvalidArgument("artifact", "is empty", reason=ErrorReason.ARTIFACT_INVALID)
            fmt = artifact_checks.infer_format(request.artifact_file_name or "artifact", request.artifact_format)
            staged = await self._stage(self.artifacts.stage_bytes(request.artifact), "artifact")
            return await self._check_and_put(staged, fmt, request, unique, "artifact")
        uri = request.artifact_uri or ""
        parts = artifact_checks.parse_artifact_uri(uri)
        file_name = request.artifact_file_name or uri.rstrip("/").rpartition("/")[2]
        if parts[0] == "s3" and self.artifacts.is_upload(uri):
            stored = await self._store(self.artifacts.stat(uri))
            if stored is None:
                raise NotFound(f"no artifact at {quoted(uri)}", reason=ErrorReason.ARTIFACT_NOT_FOUND)
            if stored.sha256:  # checked when it was uploaded: a server-side copy is enough
                if request.artifact_sha256:
                    artifact_checks.check_checksum(request.artifact_sha256, stored.sha256, "artifact_sha256")
                key = artifact_checks.artifact_key(request.model_name, file_name, unique)
                new_uri = await self._store(self.artifacts.copy(uri, key))
                return Artifact(new_uri, stored.format, stored.sha256, stored.size_bytes)
        fmt = artifact_checks.infer_format(file_name, request.artifact_format)
        if parts[0] == "runs":
            staged = await self._stage(self._download_run_artifact(parts[1], parts[2]), "artifact_uri")
        else:
            staged = await self._stage(self.artifacts.stage_uri(uri, self.max_artifact_bytes), "artifact_uri")
        return await self._check_and_put(staged, fmt, request, unique, "artifact_uri")

    async def _download_run_artifact(self, run_id: str, path: str) -> StagedFile:
        folder = Path(tempfile.mkdtemp(prefix="registry-run-"))
        try:
            local = await self._catalog(self.catalog.download_run_artifact(run_id, path, folder))
            return await self.artifacts.stage_file(local, self.max_artifact_bytes)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def _check_and_put(self, staged: StagedFile, fmt: ArtifactFormat, request: NewVersion, unique: str,
                             field: str) -> Artifact:
        try:
            if request.artifact_sha256:
                artifact_checks.check_checksum(request.artifact_sha256, staged.sha256, "artifact_sha256")
            await self._check_package(staged, fmt, field)
            file_name = request.artifact_file_name or (request.artifact_uri or "").rpartition("/")[2] or "artifact"
            key = artifact_checks.artifact_key(request.model_name, file_name, unique)
            uri = await self._store(self.artifacts.put(staged, key, fmt))
        finally:
            self.artifacts.discard(staged)
        return Artifact(uri, fmt, staged.sha256, staged.size_bytes)

    async def _check_package(self, staged: StagedFile, fmt: ArtifactFormat, field: str) -> None:
        def check() -> None:
            with open(staged.path, "rb") as file:
                artifact_checks.check_package(file, fmt, staged.size_bytes, field)
        await asyncio.to_thread(check)  # seconds for a large archive: not on the event loop

    async def _register(self, request: NewVersion, artifact: Artifact, stage: Stage, gate_results: tuple,
                        actor: str) -> tuple[ModelVersion, bool]:
        name = request.model_name
        now = self.clock()
        record = StageRecord(stage, now)
        tags = layout.version_tags(artifact=artifact, metrics=request.metrics or {},
                                   parameters=request.parameters or {}, tags=request.tags or {},
                                   signature=request.signature, created_by=actor, stage=record)
        created = None
        try:
            async with self._locked(name) as tx:
                if request.request_id:  # a concurrent retry may have won the lock first
                    earlier = await self._lifecycle(self.lifecycle.find_request(name, request.request_id))
                    if earlier is not None:
                        await self._quietly(self.artifacts.delete(artifact.uri))
                        return await self.get_version(name, earlier), True
                created = await self._catalog(self.catalog.create_version(
                    name, artifact.uri, request.source_run_id, request.description, tags), "source_run_id")
                version = layout.version_from_catalog(created, record)
                await tx.set_stage(version.version, stage, now)
                if request.request_id:
                    await tx.remember_request(request.request_id, version.version)
                await tx.append_event(RegistryEvent(EventType.VERSION_CREATED, now, name, version.version,
                                                    to_stage=stage, actor=actor, model_version=version))
                if stage == Stage.STAGING:
                    transition = StageTransition(self.new_id(), name, version.version, Stage.DEVELOPMENT,
                                                 Stage.STAGING, actor, "registered in Staging", now,
                                                 gate_results=gate_results)
                    await tx.record_transition(transition)
                    await tx.append_event(self._stage_event(transition, version))
        except BaseException:
            if created is not None:  # MLflow took it but the commit failed: take it back
                await self._quietly(self.catalog.delete_version(name, created.version))
            raise
        return version, False

    async def get_version(self, name: str, number: str) -> ModelVersion:
        limits.model_name(name, "model_name")
        limits.version(number)
        found, stages = await asyncio.gather(self._catalog(self.catalog.get_version(name, number)),
                                             self._lifecycle(self.lifecycle.stages(name)))
        if found is None:
            raise await self._version_not_found(name, number)
        return layout.version_from_catalog(found, stages.get(number))

    async def list_versions(self, name: str, stages: Sequence[Stage], alias: str, page_size: int,
                            page_token: str) -> VersionPage:
        if name != "-":
            limits.model_name(name, "model_name")
        if alias:
            limits.alias(alias)
        size = limits.page_size(page_size)
        before = self._version_token(page_token)
        head = await self._lifecycle(self.lifecycle.head_sequence())
        names = [name] if name != "-" else await self._every_model_name()
        found: list[ModelVersion] = []
        for model_name in names:
            found.extend(await self._versions_of(model_name, must_exist=name != "-"))
        found.sort(key=lambda v: (v.create_time or datetime.min.replace(tzinfo=timezone.utc), v.model_name,
                                  v.number), reverse=True)
        keys = [(v.model_name, v.version) for v in found]
        start = keys.index(before) + 1 if before in keys else 0 if before is None else self._stale_token()
        chosen = [v for v in found[start:] if (not stages or v.stage in stages)
                  and (not alias or alias in v.aliases)]
        page = chosen[:size]
        token = ""
        if len(chosen) > size:
            token = f"{page[-1].model_name}/{page[-1].version}"
        return VersionPage(page, token, head)

    def _version_token(self, token: str) -> tuple[str, str] | None:
        if not token:
            return None
        name, _, number = token.rpartition("/")
        if not limits.MODEL_NAME.fullmatch(name) or not limits.VERSION.fullmatch(number):
            raise InvalidArgument("page_token", "not a token this registry issued",
                                  reason=ErrorReason.INVALID_PAGE_TOKEN)
        return name, number

    @staticmethod
    def _stale_token() -> int:
        raise InvalidArgument("page_token", "the version it points at no longer exists; start over",
                              reason=ErrorReason.INVALID_PAGE_TOKEN)

    async def _every_model_name(self) -> list[str]:
        names, token = [], ""
        while True:
            models, token = await self._catalog(self.catalog.search_models("", {}, 1000, token))
            names += [m.name for m in models]
            if not token:
                return names

    async def _versions_of(self, name: str, must_exist: bool) -> list[ModelVersion]:
        versions, stages = await asyncio.gather(self._catalog(self.catalog.list_versions(name)),
                                                self._lifecycle(self.lifecycle.stages(name)))
        if not versions and must_exist and await self._catalog(self.catalog.get_model(name)) is None:
            raise self._model_not_found(name)
        return [layout.version_from_catalog(v, stages.get(v.version)) for v in versions]

    async def update_version(self, name: str, number: str, description: str | None, set_tags: dict[str, str],
                             remove_tag_keys: Sequence[str], set_metrics: dict[str, float],
                             actor: str) -> ModelVersion:
        limits.model_name(name, "model_name")
        limits.version(number)
        if description is not None:
            limits.text(description, "description", limits.MAX_DESCRIPTION)
        limits.tags(set_tags, "set_tags")
        limits.tag_keys(remove_tag_keys, "remove_tag_keys")
        limits.metrics(set_metrics, "set_metrics")
        async with self._locked(name) as tx:
            updated = await self._catalog(self.catalog.update_version(
                name, number, description, {**set_tags, **layout.metric_tags(set_metrics)}, list(remove_tag_keys)))
            if updated is None:
                raise await self._version_not_found(name, number)
            stages = await tx.stages()
            version = layout.version_from_catalog(updated, stages.get(number))
            await tx.append_event(RegistryEvent(EventType.VERSION_UPDATED, self.clock(), name, number, actor=actor,
                                                model_version=version))
        return version

    async def delete_version(self, name: str, number: str, actor: str) -> None:
        limits.model_name(name, "model_name")
        limits.version(number)
        async with self._locked(name) as tx:
            stages = await tx.stages()
            record = stages.get(number)
            if record is not None and record.stage == Stage.PRODUCTION:
                raise FailedPrecondition(f"version {quoted(number)} is in Production; archive it first",
                                         reason=ErrorReason.VERSION_IN_PRODUCTION, metadata={"version": number})
            found = await self._catalog(self.catalog.get_version(name, number))
            if found is None:
                raise await self._version_not_found(name, number)
            await self.lifecycle.mark_needs_repair(name)
            await self._catalog(self.catalog.delete_version(name, number))
            await tx.forget_version(number)
            await tx.append_event(RegistryEvent(EventType.VERSION_DELETED, self.clock(), name, number, actor=actor))
            await tx.mark_repaired()
        await self._delete_artifacts([found.source] if found.source else [])

    # --- lifecycle -----------------------------------------------------------------------

    async def transition(self, name: str, number: str, target: Stage, expected: Stage | None,
                         extra_gates: Sequence[MetricGate], override: bool, reason: str,
                         actor: str) -> TransitionResult:
        limits.model_name(name, "model_name")
        limits.version(number)
        limits.text(reason, "reason", limits.MAX_REASON)
        limits.text(actor, "actor", limits.MAX_ACTOR)
        extra = limits.gates(extra_gates, "extra_gates")
        if override and not reason.strip():
            raise InvalidArgument("reason", "an override needs a reason, for the audit history",
                                  reason=ErrorReason.OVERRIDE_REASON_REQUIRED)
        model, found = await asyncio.gather(self._catalog(self.catalog.get_model(name)),
                                            self._catalog(self.catalog.get_version(name, number)))
        if model is None:
            raise self._model_not_found(name)
        if found is None:
            raise await self._version_not_found(name, number)
        gates = layout.model_from_catalog(model).gates + extra
        async with self._locked(name) as tx:
            stages = await tx.stages()
            current = stages.get(number)
            if current is None:
                raise await self._version_not_found(name, number)
            if expected is not None and current.stage != expected:
                raise Aborted(f"version {quoted(number)} is in {current.stage.name}, not {expected.name}: it changed "
                              "meanwhile; read it again", reason=ErrorReason.STAGE_CONFLICT,
                              metadata={"version": number, "stage": current.stage.name})
            check_transition(number, current.stage, target)
            version = layout.version_from_catalog(found, current)
            results = evaluate_gates(gates, target, version.metrics) if target in GATED_STAGES else ()
            failure = gate_failure(number, target, results)
            if failure is not None and not override:
                raise failure
            replaced = [v for v, r in stages.items() if r.stage == Stage.PRODUCTION and v != number]
            archive_time = self.clock()
            # The replaced version leaves Production one microsecond before the new one enters it, so
            # the history, ordered by time, tells the story in the order it happened.
            now = archive_time + timedelta(microseconds=1) if target == Stage.PRODUCTION and replaced else archive_time
            moved = StageTransition(self.new_id(), name, number, current.stage, target, actor, reason, now,
                                    override=failure is not None, gate_results=results)
            moves = [(moved, replace(version, stage=target, stage_update_time=now))]
            await self.lifecycle.mark_needs_repair(name)
            # MLflow first, the database last: the event feed's head row stays locked only for the
            # commit, not while MLflow answers.
            if target == Stage.PRODUCTION and replaced:
                moves.insert(0, await self._archive_replaced(name, replaced[0], moved, archive_time))
            await self._mirror_stage(name, number, StageRecord(target, now), current.stage)
            for entry, snapshot in moves:
                await tx.set_stage(entry.version, entry.to_stage, entry.time)
                await tx.record_transition(entry)
                await tx.append_event(self._stage_event(entry, snapshot))
            await tx.mark_repaired()
        archived = moves[0][1] if len(moves) == 2 else None
        return TransitionResult(moves[-1][1], moved, archived)

    async def _archive_replaced(self, name: str, number: str, cause: StageTransition,
                                now: datetime) -> tuple[StageTransition, ModelVersion]:
        """Archive, in MLflow, the version a promotion replaces; its own audit entry, caused by the promotion."""
        old = await self._catalog(self.catalog.get_version(name, number))
        entry = StageTransition(self.new_id(), name, number, Stage.PRODUCTION, Stage.ARCHIVED, REGISTRY_ACTOR,
                                f"replaced in Production by version {cause.version}", now,
                                caused_by=cause.transition_id)
        record = StageRecord(Stage.ARCHIVED, now)
        await self._catalog(self.catalog.update_version(name, number, None, layout.stage_tags(record), []))
        snapshot = layout.version_from_catalog(old, record) if old else ModelVersion(name, number, Stage.ARCHIVED)
        return entry, snapshot

    async def _mirror_stage(self, name: str, number: str, record: StageRecord, previous: Stage) -> None:
        """The stage tag first, the production alias last (one call: never two in Production)."""
        await self._catalog(self.catalog.update_version(name, number, None, layout.stage_tags(record), []))
        if record.stage == Stage.PRODUCTION:
            await self._catalog(self.catalog.set_alias(name, layout.PRODUCTION_ALIAS, number))
        elif previous == Stage.PRODUCTION:
            await self._catalog(self.catalog.delete_alias(name, layout.PRODUCTION_ALIAS))

    def _stage_event(self, transition: StageTransition, version: ModelVersion | None) -> RegistryEvent:
        return RegistryEvent(EventType.STAGE_CHANGED, transition.time, transition.model_name, transition.version,
                             from_stage=transition.from_stage, to_stage=transition.to_stage, actor=transition.actor,
                             model_version=version, transition=transition)

    async def set_alias(self, name: str, alias: str, number: str, actor: str) -> tuple[ModelVersion, str]:
        limits.model_name(name, "model_name")
        limits.alias(alias)
        limits.version(number)
        moved, previous = False, ""
        try:
            async with self._locked(name) as tx:
                model = await self._catalog(self.catalog.get_model(name))
                if model is None:
                    raise self._model_not_found(name)
                if await self._catalog(self.catalog.get_version(name, number)) is None:
                    raise await self._version_not_found(name, number)
                previous = model.aliases.get(alias, "")
                moved = True
                await self._catalog(self.catalog.set_alias(name, alias, number))
                found = await self._catalog(self.catalog.get_version(name, number))
                version = layout.version_from_catalog(found, (await tx.stages()).get(number))
                await tx.append_event(RegistryEvent(EventType.ALIAS_SET, self.clock(), name, number, alias=alias,
                                                    actor=actor, model_version=version))
        except BaseException:
            if moved:  # MLflow may have moved it but the commit failed: put it back
                await self._quietly(self._restore_alias(name, alias, previous))
            raise
        return version, previous

    async def _restore_alias(self, name: str, alias: str, previous: str) -> None:
        if previous:
            await self.catalog.set_alias(name, alias, previous)
        else:
            await self.catalog.delete_alias(name, alias)

    async def delete_alias(self, name: str, alias: str, actor: str) -> None:
        limits.model_name(name, "model_name")
        limits.alias(alias)
        previous = None
        try:
            async with self._locked(name) as tx:
                model = await self._catalog(self.catalog.get_model(name))
                if model is None:
                    raise self._model_not_found(name)
                if alias not in model.aliases:
                    raise NotFound(f"model {quoted(name)} has no alias {quoted(alias)}",
                                   reason=ErrorReason.ALIAS_NOT_FOUND, metadata={"alias": alias})
                previous = model.aliases[alias]
                await self._catalog(self.catalog.delete_alias(name, alias))
                await tx.append_event(RegistryEvent(EventType.ALIAS_DELETED, self.clock(), name, previous,
                                                    alias=alias, actor=actor))
        except BaseException:
            if previous is not None:  # MLflow may have dropped it but the commit failed: put it back
                await self._quietly(self._restore_alias(name, alias, previous))
            raise

    # --- the request path ----------------------------------------------------------------

    async def resolve(self, name: str, *, version: str | None = None, stage: Stage | None = None,
                      alias: str | None = None, as_of: datetime | None = None) -> tuple[ModelVersion, int]:
        limits.model_name(name, "model_name")
        if as_of is not None:
            if version is not None or alias is not None or stage not in (None, Stage.PRODUCTION):
                raise InvalidArgument("as_of", "only with the Production stage (or no selector)")
            number = await self._lifecycle(self.lifecycle.production_at(name, as_of))
            if number is None:
                raise NotFound(f"model {quoted(name)} had no version in Production then",
                               reason=ErrorReason.NO_VERSION_IN_STAGE, metadata={"stage": "PRODUCTION"})
            return await self.get_version(name, number), self.cache.applied
        if version is not None:
            limits.version(version)
        if alias is not None and alias != layout.PRODUCTION_ALIAS:  # "production" reads as the stage
            limits.alias(alias)
        snapshot = await self._cached(name)
        if version is not None:
            found = snapshot.versions.get(version)
            if found is None:
                raise NotFound(f"model {quoted(name)} has no version {quoted(version)}",
                               reason=ErrorReason.VERSION_NOT_FOUND, metadata={"version": version})
        elif alias is not None and alias != layout.PRODUCTION_ALIAS:
            found = snapshot.with_alias(alias)
            if found is None:
                raise NotFound(f"model {quoted(name)} has no alias {quoted(alias)}",
                               reason=ErrorReason.ALIAS_NOT_FOUND, metadata={"alias": alias})
        else:
            wanted = stage or Stage.PRODUCTION
            found = snapshot.in_stage(wanted)
            if found is None:
                raise NotFound(f"model {quoted(name)} has no version in {wanted.name}",
                               reason=ErrorReason.NO_VERSION_IN_STAGE, metadata={"stage": wanted.name})
        return found, snapshot.sequence

    async def _cached(self, name: str) -> ModelSnapshot:
        snapshot = self.cache.peek(name)
        if snapshot is None:
            snapshot = await self.cache.get(name)
        if snapshot is None:
            raise self._model_not_found(name)
        return snapshot

    async def _load_snapshot(self, name: str) -> ModelSnapshot | None:
        model, versions, stages = await asyncio.gather(self._catalog(self.catalog.get_model(name)),
                                                       self._catalog(self.catalog.list_versions(name)),
                                                       self._lifecycle(self.lifecycle.stages(name)))
        if model is None:
            return None
        return ModelSnapshot(name, {v.version: layout.version_from_catalog(v, stages.get(v.version))
                                    for v in versions})

    # --- history and events --------------------------------------------------------------

    async def transitions(self, name: str, version: str, start: datetime | None, end: datetime | None, actor: str,
                          page_size: int, page_token: str) -> tuple[list[StageTransition], str]:
        if name != "-":
            limits.model_name(name, "model_name")
        if version:
            limits.version(version)
        limits.text(actor, "actor", limits.MAX_ACTOR)
        if start and end and start >= end:
            raise InvalidArgument("end_time", "must be after start_time", reason=ErrorReason.INVALID_TIME_RANGE)
        size = limits.page_size(page_size)
        before = _transition_token(page_token)
        query = TransitionQuery(None if name == "-" else name, version or None, start, end, actor or None,
                                size + 1, before)
        found = await self._lifecycle(self.lifecycle.transitions(query))
        if not found and name != "-" and not before:
            if await self._catalog(self.catalog.get_model(name)) is None:
                raise self._model_not_found(name)
        page = found[:size]
        token = f"{page[-1].time.isoformat()}|{page[-1].transition_id}" if len(found) > size else ""
        return page, token

    async def watch(self, after: int | None, model_names: Sequence[str],
                    types: Sequence[EventType]) -> AsyncIterator[FeedBatch]:
        if after is not None and after < 0:
            raise InvalidArgument("after_sequence", "must be 0 or more")
        if len(model_names) > limits.MAX_WATCH_MODELS:
            raise InvalidArgument("model_names", f"at most {limits.MAX_WATCH_MODELS} models")
        for model_name in model_names:
            limits.model_name(model_name, "model_names")
        try:
            async for batch in watch(self.lifecycle, self.pump, after, model_names, types, self.heartbeat_s):
                yield batch
        except BackendUnavailable:
            raise unavailable("database") from None

    # --- repair --------------------------------------------------------------------------

    async def repair(self, name: str) -> None:
        """Make MLflow's stage tags and production alias match PostgreSQL again."""
        async with self._locked(name) as tx:
            stages = await tx.stages()
            model = await self._catalog(self.catalog.get_model(name))
            if model is None:  # deleted in MLflow, but the deletion's commit failed: finish it
                await tx.forget_model()
                await tx.append_event(RegistryEvent(EventType.MODEL_DELETED, self.clock(), name,
                                                    actor=REGISTRY_ACTOR))
                await tx.mark_repaired()
                return
            for found in await self._catalog(self.catalog.list_versions(name)):
                record = stages.get(found.version)
                if record is None:
                    continue
                wanted = layout.stage_tags(record)
                if any(found.tags.get(k) != v for k, v in wanted.items()):
                    await self._catalog(self.catalog.update_version(name, found.version, None, wanted, []))
            production = next((v for v, r in stages.items() if r.stage == Stage.PRODUCTION), None)
            if production is not None and model.aliases.get(layout.PRODUCTION_ALIAS) != production:
                await self._catalog(self.catalog.set_alias(name, layout.PRODUCTION_ALIAS, production))
            elif production is None and layout.PRODUCTION_ALIAS in model.aliases:
                await self._catalog(self.catalog.delete_alias(name, layout.PRODUCTION_ALIAS))
            await tx.mark_repaired()

    async def _repair_loop(self, interval_s: float = 2.0) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                for name in await self.lifecycle.models_needing_repair():
                    await self.repair(name)
                    log.info("repaired MLflow's view of a model", extra={"fields": {"model": name}})
            except asyncio.CancelledError:
                raise
            except Exception as error:  # down again: the next round retries
                log.debug("registry repair postponed: %s", error)

    # --- helpers -------------------------------------------------------------------------

    def _locked(self, name: str, *, affects_versions: bool = True):
        """The model's lock; after a commit that changed versions, stages or aliases, this replica's
        cache catches up at once (model-level changes need no resolve data)."""
        return _Locked(self, name, affects_versions)

    async def _catalog(self, call, field: str = "name"):
        try:
            return await call
        except BackendUnavailable:
            raise unavailable("MLflow") from None
        except CatalogConflict:
            raise AlreadyExists("a registered model of that name exists", reason=ErrorReason.MODEL_ALREADY_EXISTS)
        except CatalogRejected as rejected:
            reason = ErrorReason.INVALID_PAGE_TOKEN if rejected.field == "page_token" else ErrorReason.INVALID_FIELD
            raise InvalidArgument(rejected.field, str(rejected).partition(": ")[2], reason=reason) from None
        except ArtifactMissing as missing:
            raise NotFound(f"artifact_uri: {missing}"[:200], reason=ErrorReason.ARTIFACT_NOT_FOUND) from None

    async def _lifecycle(self, call):
        try:
            return await call
        except BackendUnavailable:
            raise unavailable("database") from None

    async def _store(self, call):
        try:
            return await call
        except BackendUnavailable:
            raise unavailable("artifact store") from None
        except ArtifactMissing:
            raise NotFound("no artifact at artifact_uri", reason=ErrorReason.ARTIFACT_NOT_FOUND) from None

    async def _stage(self, call, field: str) -> StagedFile:
        try:
            return await self._store(call)
        except ArtifactTooLarge:
            raise InvalidArgument(field, f"the artifact is larger than the registry's limit of "
                                         f"{self.max_artifact_bytes} bytes",
                                  reason=ErrorReason.ARTIFACT_TOO_LARGE) from None

    async def _quietly(self, call) -> None:
        try:
            await call
        except Exception as error:  # cleanup after a failure: the failure is what the caller hears about
            log.warning("registry cleanup failed: %s", error)

    async def _delete_artifacts(self, uris: list[str]) -> None:
        for uri in uris:
            if uri.startswith("s3://"):
                await self._quietly(self.artifacts.delete(uri))

    def _model_not_found(self, name: str) -> NotFound:
        return NotFound(f"no registered model {quoted(name)}", reason=ErrorReason.MODEL_NOT_FOUND,
                        metadata={"model_name": name})

    async def _version_not_found(self, name: str, number: str) -> NotFound:
        if await self._catalog(self.catalog.get_model(name)) is None:
            return self._model_not_found(name)
        return NotFound(f"model {quoted(name)} has no version {quoted(number)}",
                        reason=ErrorReason.VERSION_NOT_FOUND, metadata={"model_name": name, "version": number})

    def _view(self, model: RegisteredModel, stages: dict[str, StageRecord]) -> ModelView:
        numbers = sorted(stages, key=int)
        production = next((v for v in numbers if stages[v].stage == Stage.PRODUCTION), "")
        staging = tuple(sorted((v for v in numbers if stages[v].stage == Stage.STAGING),
                               key=lambda v: stages[v].since))
        return ModelView(model, numbers[-1] if numbers else "", production, staging)


class _Locked:
    """`async with service._locked(name) as tx`: the model's lock, database errors as UNAVAILABLE."""

    def __init__(self, service: RegistryService, name: str, catch_up: bool):
        self._context = service.lifecycle.locked(name)
        self._pump = service.pump
        self._catch_up = catch_up

    async def __aenter__(self) -> LifecycleTx:
        try:
            return await self._context.__aenter__()
        except BackendUnavailable:
            raise unavailable("database") from None

    async def __aexit__(self, *exc) -> bool | None:
        try:
            suppressed = await self._context.__aexit__(*exc)
        except BackendUnavailable:
            raise unavailable("database") from None
        if exc[0] is None and self._catch_up:
            try:  # committed: this replica's cache reads its own writes, not after the NOTIFY round trip
                await self._pump.catch_up()
            except BackendUnavailable:
                pass  # the pump catches up when the database answers again
        return suppressed


def _transition_token(token: str) -> tuple[datetime, str] | None:
    if not token:
        return None
    stamp, _, transition_id = token.partition("|")
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None or not transition_id or len(transition_id) > 64:
        raise InvalidArgument("page_token", "not a token this registry issued", reason=ErrorReason.INVALID_PAGE_TOKEN)
    return when, transition_id

"""Canary use cases (start, pause, resume, roll back, promote, read) and the driver that
advances, promotes and rolls back canaries on its own.

Every replica runs a driver; for each active canary it first takes the canary's lease in the
store (a row with an expiry, renewed every tick), so exactly one replica decides at a time and
another takes over within the lease's time when that one dies. The decision itself is
canary.decide, a pure function of the stored canary and the measurements all replicas wrote.
Every change is a compare-and-set on the canary's revision with its audit events in the same
transaction, so a manual action racing the driver never interleaves halfway.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Collection, Protocol

from ....errors import Aborted, DomainError, FailedPrecondition, InvalidArgument, NotFound, Unavailable, quoted
from ...inference.domain.model import PRODUCTION, Selector, SelectorKind
from ...inference.domain.resolution import RegistryUnavailable
from .assignment import hash_user
from .canary import (
    ACTIVE_STATES,
    Action,
    Canary,
    CanaryEvent,
    CanaryEventType,
    CanaryState,
    SideStats,
    Thresholds,
    canary_scope,
    check_plan,
    check_version,
    decide,
    step_scope,
)
from . import paging
from .catalog import ExperimentCatalog
from .errors import ErrorReason
from .events import CANARY_VERDICTS, NO_EVENTS, RouterEvents
from .model import RequestStats, RoutedAssignment
from .ports import CanaryStore, Measurements, ModelBusy

log = logging.getLogger(__name__)

CANARY_REASON = 6  # the proto's ASSIGNMENT_REASON_CANARY_BUCKET
MAX_REASON_LENGTH = 1024
MAX_REQUEST_ID_LENGTH = 128


class PromotionRefused(Exception):
    """The Registry answered, and said no (a gate failed, a transition not allowed)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message[:300]


class RegistryWriter(Protocol):
    """The Registry changes a canary makes. Raise PromotionRefused or RegistryUnavailable."""

    async def promote(self, model_name: str, version: str, reason: str, override_gates: bool) -> None:
        """Move the version to Production (through Staging if it is in Development)."""

    async def archive(self, model_name: str, version: str, reason: str) -> None: ...


@dataclass(frozen=True)
class CanaryInput:
    """A canary as StartCanary describes it (unchecked)."""

    model_name: str
    canary_version: str
    steps_bps: tuple[int, ...]
    step_interval_s: float
    min_requests_per_step: int
    thresholds: Thresholds
    stable_version: str = ""
    manual_promotion: bool = False
    salt: str = ""


def side(stats: RequestStats | None) -> SideStats:
    if stats is None:
        return SideStats()
    return SideStats(stats.request_count, stats.error_count, stats.latency_p99_ms)


class CanaryService:
    def __init__(self, store: CanaryStore, measurements: Measurements, catalog: ExperimentCatalog, serving,
                 registry: RegistryWriter, flush: Callable[[], object], clock: Callable[[], datetime], *,
                 holder: str = "", tick_s: float = 1.0, observer: RouterEvents = NO_EVENTS):
        self.store = store
        self.observer = observer
        self.measurements = measurements
        self.catalog = catalog
        self.serving = serving
        self.registry = registry
        self._flush = flush  # this replica's pending measurements, written before a decision
        self.clock = clock
        self.holder = holder or f"router-{uuid.uuid4().hex[:12]}"
        self.tick_s = tick_s
        self._task: asyncio.Task | None = None

    # --- traffic ---------------------------------------------------------------------------

    def assign(self, canary: Canary, user_id: str) -> RoutedAssignment:
        bucket, _ = hash_user(canary.salt, user_id)
        on_canary = bucket < canary.current_weight_bps
        return RoutedAssignment("", "canary" if on_canary else "stable", canary.model_name,
                                canary.canary_version if on_canary else canary.stable_version, bucket,
                                CANARY_REASON, canary.canary_id)

    # --- use cases ---------------------------------------------------------------------------

    async def start(self, spec: CanaryInput, request_id: str, actor: str) -> Canary:
        field = "canary"
        _check_text(request_id, "request_id", MAX_REQUEST_ID_LENGTH)
        if not spec.model_name:
            raise InvalidArgument(f"{field}.model_name", "is required")
        steps = check_plan(spec.steps_bps, spec.step_interval_s, spec.min_requests_per_step, spec.thresholds, field)
        check_version(spec.canary_version, f"{field}.canary_version")
        stable = spec.stable_version or await self._production(spec.model_name)
        check_version(stable, f"{field}.stable_version")
        if stable == spec.canary_version:
            raise InvalidArgument(f"{field}.canary_version", "must differ from the stable version")
        for path, version in ((f"{field}.stable_version", stable), (f"{field}.canary_version", spec.canary_version)):
            await self._check_servable(spec.model_name, version, path)
        canary = Canary(uuid.uuid4().hex, spec.model_name, stable, spec.canary_version, steps, spec.step_interval_s,
                        spec.min_requests_per_step, spec.thresholds, spec.salt or secrets.token_hex(16),
                        spec.manual_promotion, created_by=actor, request_id=request_id)
        event = self._event(canary, CanaryEventType.STARTED, 0, canary.current_weight_bps, actor=actor)
        try:
            stored, _ = await self.store.create_canary(canary, event)
        except ModelBusy as busy:
            raise model_busy(spec.model_name, busy) from None
        self.catalog.put_canary(stored)
        return stored

    async def get(self, canary_id: str) -> Canary:
        _check_text(canary_id, "canary_id", 64, required=True)
        canary = await self.store.get_canary(canary_id)
        if canary is None:
            raise NotFound(f"canary {quoted(canary_id)} not found", reason=ErrorReason.CANARY_NOT_FOUND,
                           metadata={"canary_id": canary_id})
        return canary

    async def live_stats(self, canary: Canary) -> tuple[SideStats, SideStats]:
        """(stable, canary) on the current step."""
        stats = await self.measurements.request_stats(step_scope(canary.canary_id, canary.current_step),
                                                      ["stable", "canary"])
        return side(stats.get("stable")), side(stats.get("canary"))

    async def list(self, model_name: str, states: Collection[CanaryState], page_size: int,
                   page_token: str) -> tuple[list[Canary], str]:
        _check_text(model_name, "model_name", 256)
        limit = paging.page_size(page_size)
        page = await self.store.list_canaries(model_name=model_name, states=tuple(states),
                                              before=paging.decode(page_token), limit=limit + 1)
        token = paging.encode(page[limit - 1].create_time, page[limit - 1].canary_id) if len(page) > limit else ""
        return page[:limit], token

    async def events(self, canary_id: str, page_size: int, page_token: str) -> tuple[list[CanaryEvent], str]:
        await self.get(canary_id)
        limit = paging.page_size(page_size)
        after = paging.decode_position(page_token)
        page = await self.store.canary_events(canary_id, after_sequence=after, limit=limit + 1)
        token = str(page[limit - 1].sequence) if len(page) > limit else ""
        return page[:limit], token

    async def pause(self, canary_id: str, reason: str, actor: str) -> Canary:
        canary = await self._unfinished(canary_id, reason)
        if canary.state is CanaryState.PAUSED:
            return canary
        if canary.state is not CanaryState.RUNNING:
            raise _finished(canary, "only a running canary can be paused")
        return await self._change(canary, canary.with_changes(state=CanaryState.PAUSED, status_message="paused"),
                                  CanaryEventType.PAUSED, reason, actor)

    async def resume(self, canary_id: str, reason: str, actor: str) -> Canary:
        canary = await self._unfinished(canary_id, reason)
        if canary.state is CanaryState.RUNNING:
            return canary
        if canary.state is not CanaryState.PAUSED:
            raise _finished(canary, "only a paused canary can be resumed")
        return await self._change(canary, canary.with_changes(state=CanaryState.RUNNING, step_start_time=None,
                                                              status_message=""),
                                  CanaryEventType.RESUMED, reason, actor)

    async def rollback(self, canary_id: str, reason: str, actor: str) -> Canary:
        if not reason:
            raise InvalidArgument("reason", "is required: say why the canary is rolled back")
        canary = await self._unfinished(canary_id, reason)
        return await self._roll_back(canary, reason, actor, automatic=False)

    async def promote(self, canary_id: str, reason: str, override_gates: bool, actor: str) -> Canary:
        canary = await self._unfinished(canary_id, reason)
        return await self._promote(canary, reason or "promoted by hand", actor, override_gates, automatic=False,
                                   raise_on_failure=True)

    # --- the driver -----------------------------------------------------------------------------

    def start_driving(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._drive_forever(), name="router-canary-driver")

    async def stop_driving(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _drive_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            for canary in self.catalog.active_canaries():
                try:
                    await self.drive(canary.canary_id)
                except Exception:  # noqa: BLE001 - the store or Redis is down: next tick tries again
                    log.warning("could not drive canary %s", canary.canary_id, exc_info=True)

    async def drive(self, canary_id: str) -> Canary | None:
        """One decision for one canary, if this replica holds its lease; the canary after it."""
        if not await self.store.acquire_lease(canary_id, self.holder, max(5.0, 5 * self.tick_s)):
            return None
        canary = await self.store.get_canary(canary_id)
        if canary is None or not canary.active:
            return canary
        await self._flush()
        cumulative = await self.measurements.request_stats(canary_scope(canary_id), ["stable", "canary"])
        step = await self.measurements.request_stats(step_scope(canary_id, canary.current_step), ["canary"])
        stable, candidate = side(cumulative.get("stable")), side(cumulative.get("canary"))
        decision = decide(canary, stable, candidate, side(step.get("canary")), self.clock())
        if decision.action is Action.ROLLBACK:
            return await self._roll_back(canary, decision.reason, "router", automatic=True, stats=(stable, candidate))
        if decision.action is Action.ADVANCE:
            changed = canary.with_changes(current_step=canary.current_step + 1, step_start_time=None,
                                          status_message="")
            return await self._change(canary, changed, CanaryEventType.ADVANCED, decision.reason, "router",
                                      automatic=True, stats=(stable, candidate), quiet=True)
        if decision.action is Action.FINISH:
            if canary.manual_promotion:
                changed = canary.with_changes(state=CanaryState.AWAITING_PROMOTION,
                                              status_message="waiting for PromoteCanary")
                return await self._change(canary, changed, CanaryEventType.AWAITING_PROMOTION, decision.reason,
                                          "router", automatic=True, stats=(stable, candidate), quiet=True)
            return await self._promote(canary, decision.reason, "router", False, automatic=True,
                                       raise_on_failure=False, stats=(stable, candidate))
        if decision.reason != canary.status_message:  # a hold: say why, once per change of reason
            return await self._change(canary, canary.with_changes(status_message=decision.reason), None, "", "router",
                                      quiet=True)
        return canary

    # --- changes ----------------------------------------------------------------------------------

    async def _roll_back(self, canary: Canary, reason: str, actor: str, *, automatic: bool,
                         stats: tuple[SideStats, SideStats] | None = None) -> Canary:
        changed = canary.with_changes(state=CanaryState.ROLLED_BACK, rollback_reason=reason[:MAX_REASON_LENGTH],
                                      end_time=self.clock(), status_message="rolled back")
        stored = await self._change(canary, changed, CanaryEventType.ROLLED_BACK, reason, actor, automatic=automatic,
                                    stats=stats, quiet=automatic)
        if stored is not None:
            try:  # the failed version leaves Staging so nothing deploys it again by accident
                await self.registry.archive(canary.model_name, canary.canary_version,
                                            f"canary {canary.canary_id} rolled back: {reason}"[:MAX_REASON_LENGTH])
            except (PromotionRefused, RegistryUnavailable) as error:
                log.warning("canary %s rolled back; archiving version %s in the Registry failed: %s",
                            canary.canary_id, canary.canary_version, error)
        return stored

    async def _promote(self, canary: Canary, reason: str, actor: str, override_gates: bool, *, automatic: bool,
                       raise_on_failure: bool, stats: tuple[SideStats, SideStats] | None = None) -> Canary | None:
        try:
            await self.registry.promote(canary.model_name, canary.canary_version, reason[:MAX_REASON_LENGTH],
                                        override_gates)
        except (PromotionRefused, RegistryUnavailable) as error:
            failure = _promotion_failure(error)
            if canary.status_message != failure.message:
                await self._change(canary, canary.with_changes(status_message=failure.message),
                                   CanaryEventType.PROMOTION_FAILED, failure.message, actor, automatic=automatic,
                                   stats=stats, quiet=True)
            if raise_on_failure:
                raise failure from None
            return None
        changed = canary.with_changes(state=CanaryState.PROMOTED, end_time=self.clock(), status_message="promoted")
        return await self._change(canary, changed, CanaryEventType.PROMOTED, reason, actor, automatic=automatic,
                                  stats=stats, quiet=not raise_on_failure)

    async def _change(self, canary: Canary, changed: Canary, event_type: CanaryEventType | None, reason: str,
                      actor: str, *, automatic: bool = False, stats: tuple[SideStats, SideStats] | None = None,
                      quiet: bool = False) -> Canary | None:
        """Store `changed` over `canary` with its event. A concurrent change: None when `quiet`
        (the driver looks again next tick), else Aborted."""
        changed = changed.with_changes(revision=canary.revision + 1)
        events = [] if event_type is None else [self._event(
            changed, event_type, canary.current_weight_bps, changed.current_weight_bps, reason=reason, actor=actor,
            automatic=automatic, stats=stats)]
        stored = await self.store.replace_canary(changed, canary.revision, events)
        if stored is None:
            if quiet:
                return None
            raise Aborted(f"canary {quoted(canary.canary_id)} changed meanwhile; read it again and retry",
                          reason=ErrorReason.REVISION_MISMATCH, metadata={"canary_id": canary.canary_id})
        self.catalog.put_canary(stored)
        if event_type in CANARY_VERDICTS:  # stored: this replica's decision is the one that counts
            self.observer.canary_verdict(stored.model_name, event_type)
        return stored

    def _event(self, canary: Canary, event_type: CanaryEventType, from_bps: int, to_bps: int, *, reason: str = "",
               actor: str = "router", automatic: bool = False,
               stats: tuple[SideStats, SideStats] | None = None) -> CanaryEvent:
        stable, candidate = stats or (SideStats(), SideStats())
        return CanaryEvent(canary.canary_id, event_type, self.clock(), from_bps, to_bps, canary.current_step,
                           reason[:MAX_REASON_LENGTH], actor, automatic, stable, candidate)

    async def _unfinished(self, canary_id: str, reason: str) -> Canary:
        _check_text(reason, "reason", MAX_REASON_LENGTH)
        canary = await self.get(canary_id)
        if canary.state not in ACTIVE_STATES:
            raise _finished(canary, f"it is {canary.state.name}")
        return canary

    async def _production(self, model_name: str) -> str:
        try:
            return (await self.serving.resolve(model_name, PRODUCTION)).version
        except DomainError as error:
            raise _registry_error(error, "canary.stable_version") from None

    async def _check_servable(self, model_name: str, version: str, path: str) -> None:
        try:
            resolved = await self.serving.resolve(model_name, Selector(SelectorKind.VERSION, version))
        except DomainError as error:
            raise _registry_error(error, path) from None
        if resolved.stage == "ARCHIVED":
            raise InvalidArgument(path, f"version {quoted(version)} is Archived and cannot serve")
        try:
            await self.serving.describe(model_name, version)
        except DomainError as error:
            if error.reason.name in ("MODEL_NOT_LOADED", "VERSION_NOT_FOUND", "MODEL_NOT_FOUND"):
                raise FailedPrecondition(f"{path}: version {quoted(version)} is not loaded in TorchServe",
                                         reason=ErrorReason.MODEL_NOT_LOADED,
                                         metadata={"field": path, "version": version}) from None
            raise Unavailable("TorchServe is unavailable; retry later", reason=ErrorReason.BACKEND_UNAVAILABLE) \
                from None


# --- helpers --------------------------------------------------------------------------------------

def _check_text(value: str, field: str, limit: int, *, required: bool = False) -> str:
    if required and not value:
        raise InvalidArgument(field, "is required")
    if len(value) > limit:
        raise InvalidArgument(field, f"must be at most {limit} characters, got {len(value)}")
    return value


def _registry_error(error: DomainError, path: str) -> DomainError:
    name = error.reason.name
    if name in ("MODEL_NOT_FOUND", "VERSION_NOT_FOUND", "ALIAS_NOT_FOUND", "NO_VERSION_IN_STAGE"):
        return NotFound(f"{path}: {error.message}", reason=ErrorReason.MODEL_VERSION_NOT_FOUND,
                        metadata={"field": path})
    if name == "REGISTRY_UNAVAILABLE":
        return Unavailable("the model registry is unavailable; retry later", reason=ErrorReason.REGISTRY_UNAVAILABLE)
    return error


def _promotion_failure(error: Exception) -> DomainError:
    if isinstance(error, RegistryUnavailable):
        return Unavailable("the model registry is unavailable; the promotion is retried",
                           reason=ErrorReason.REGISTRY_UNAVAILABLE)
    return FailedPrecondition(f"the Registry refused the promotion: {error.message}",
                              reason=ErrorReason.REGISTRY_PROMOTION_FAILED,
                              metadata={"registry_reason": error.reason})


def model_busy(model: str, busy: ModelBusy) -> FailedPrecondition:
    if busy.kind == "canary":
        return FailedPrecondition(f"model {quoted(model)} already has an active canary ({quoted(busy.holder)})",
                                  reason=ErrorReason.MODEL_HAS_ACTIVE_CANARY,
                                  metadata={"model_name": model, "canary_id": busy.holder})
    return FailedPrecondition(f"model {quoted(model)} has a running experiment ({quoted(busy.holder)})",
                              reason=ErrorReason.MODEL_HAS_RUNNING_EXPERIMENT,
                              metadata={"model_name": model, "experiment": busy.holder})


def _finished(canary: Canary, why: str) -> FailedPrecondition:
    return FailedPrecondition(f"canary {quoted(canary.canary_id)}: {why}", reason=ErrorReason.CANARY_FINISHED,
                              metadata={"canary_id": canary.canary_id, "state": canary.state.name})

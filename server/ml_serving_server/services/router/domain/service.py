"""The Router's use cases: experiments, assignment, predictions through the assigned version,
outcomes and results. Plain Python: the ports say what it needs from outside.

Predictions go through the Inference service's own use case (`Serving`, the
InferenceService of this process): the same resolution, limits, deadline and error mapping
as Inference.Predict, not a second copy. Its errors come back with the Router's reasons.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Collection, Mapping, Protocol, Sequence

from ....errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    quoted,
)
from ...inference.domain.model import PRODUCTION, Prediction, ResolvedVersion, Selector, SelectorKind
from .assignment import (
    MAX_DESCRIPTION_LENGTH,
    MAX_MODEL_NAME_LENGTH,
    AssignmentReason,
    Variant,
    check_user_id,
    define_experiment,
    updated,
)
from .allocation import check_allocation
from .allocator import Allocator
from .canaries import CanaryService, RegistryWriter, model_busy
from .canary import Canary, canary_scope, step_scope
from . import paging
from .catalog import ExperimentCatalog
from .events import NO_EVENTS, RouterEvents
from .errors import ErrorReason
from .model import (
    ChangeAction,
    Experiment,
    ExperimentChange,
    ExperimentDraft,
    ExperimentState,
    Exposure,
    OutcomeEvent,
    OutcomeInput,
    OutcomeMetric,
    OutcomeResult,
    RequestSample,
    RequestStats,
    RoutedAssignment,
    ShadowConfig,
    experiment_scope,
)
from .monitor_feed import MonitorFeed
from .ports import ExperimentExists, ExperimentStore, Measurements, ModelBusy
from .statistics import (
    DEFAULT_CONFIDENCE_LEVEL,
    ExperimentResults,
    MetricKind,
    VariantInput,
    check_confidence_level,
    experiment_results,
)
from .tally import Tally

log = logging.getLogger(__name__)

DEFAULT_REASON = 7  # the proto's ASSIGNMENT_REASON_DEFAULT: no experiment applies
MAX_METRICS = 20
METRIC_NAME_LENGTH = 64
MAX_PRIORITY = 1_000_000
MAX_REASON_LENGTH = 1024
MAX_EVENT_ID_LENGTH = 128
MAX_OUTCOME_BATCH = 10_000
MAX_ACTOR_LENGTH = 256
MAX_SHADOW_IN_FLIGHT = 64
UPDATABLE = frozenset({"description", "variants", "targeting", "overrides", "holdout_bps", "shadow", "metrics",
                       "priority", "allocation"})
IMMUTABLE = frozenset({"name", "salt", "state", "winning_variant", "revision", "created_by", "create_time",
                       "update_time", "start_time", "stop_time"})
ADAPTIVE_CAVEAT = ("the weights move with the adaptive allocation: no sample-ratio check is made, and a trend "
                   "over time can bias the comparison of variants whose shares changed")
_STAGES = {"production": "PRODUCTION", "staging": "STAGING", "development": "DEVELOPMENT", "archived": "ARCHIVED"}

# Inference's reasons that the Router's contract names differently (the rest share their names).
_INFERENCE_REASONS = {
    "MODEL_NOT_FOUND": ErrorReason.MODEL_VERSION_NOT_FOUND,
    "VERSION_NOT_FOUND": ErrorReason.MODEL_VERSION_NOT_FOUND,
    "ALIAS_NOT_FOUND": ErrorReason.MODEL_VERSION_NOT_FOUND,
    "VERSION_NOT_READY": ErrorReason.MODEL_NOT_LOADED,
}
# Failures of the served variant (not of the caller's input): they count as the variant's errors.
# TorchServe unreachable (BACKEND_UNAVAILABLE) is the infrastructure's failure, not the variant's:
# it fails every side alike, and counting it would let an outage decide a canary.
_VARIANT_FAILURES = frozenset({ErrorReason.MODEL_NOT_LOADED, ErrorReason.MODEL_HANDLER_ERROR,
                               ErrorReason.WORKER_DIED, ErrorReason.BACKEND_OVERLOADED,
                               ErrorReason.PREDICTION_TIMEOUT, ErrorReason.INTERNAL})


class Serving(Protocol):
    """The Inference service's use cases the Router calls (InferenceService satisfies it)."""

    async def resolve(self, name: str, selector: Selector) -> ResolvedVersion: ...

    async def predict(self, name: str, selector: Selector, payload: bytes,
                      timeout_s: float | None) -> Prediction: ...

    async def describe(self, name: str, version: str) -> object:
        """What TorchServe serves of the version; raises MODEL_NOT_LOADED when nothing."""


def selector_of(model_version: str) -> Selector:
    """How a variant's model_version names a version: digits are a version number, a stage
    name (any case) is that stage, anything else is an alias."""
    if model_version.isdigit():
        return Selector(SelectorKind.VERSION, model_version)
    stage = _STAGES.get(model_version.lower())
    if stage is not None:
        return Selector(SelectorKind.STAGE, stage)
    return Selector(SelectorKind.ALIAS, model_version)


def router_error(error: DomainError) -> DomainError:
    """An Inference error re-labelled with the Router's reason of the same meaning."""
    name = error.reason.name
    error.reason = _INFERENCE_REASONS.get(name) or ErrorReason.__members__.get(name, ErrorReason.INTERNAL)
    return error


def now() -> datetime:
    return datetime.now(timezone.utc)


class RouterService:
    def __init__(self, store: ExperimentStore, measurements: Measurements, serving: Serving, *,
                 registry: RegistryWriter | None = None, catalog_poll_s: float = 5.0,
                 tally_interval_s: float = 0.05, canary_tick_s: float = 1.0, allocation_tick_s: float = 1.0,
                 outcome_dedupe_s: int = 30 * 86_400, clock: Callable[[], datetime] = now,
                 shadow_draw: Callable[[], float] = random.random, allocation_rng: Any = None,
                 feed: MonitorFeed | None = None, observer: RouterEvents = NO_EVENTS):
        self.store = store
        self.observer = observer  # what happened, for an observer (metrics)
        self.feed = feed  # per-variant figures for the model monitor (None: not fed)
        self.measurements = measurements
        self.serving = serving
        self.catalog = ExperimentCatalog(store, catalog_poll_s)
        self.tally = Tally(measurements, tally_interval_s)
        self._dedupe_s = outcome_dedupe_s
        self.clock = clock
        self._shadow_draw = shadow_draw
        self._shadows: set[asyncio.Task] = set()
        self.canaries = CanaryService(store, measurements, self.catalog, serving, registry, self.tally.flush, clock,
                                      tick_s=canary_tick_s, observer=observer)
        self.allocator = Allocator(self.catalog, measurements, self.tally.flush, self._replace, clock,
                                   tick_s=allocation_tick_s, rng=allocation_rng)

    async def start(self) -> None:
        await self.catalog.start()
        if self.canaries.registry is not None:
            self.canaries.start_driving()
        self.allocator.start()

    async def close(self) -> None:
        await self.allocator.stop()
        await self.canaries.stop_driving()
        await self.catalog.close()
        for task in list(self._shadows):
            task.cancel()
        await asyncio.gather(*self._shadows, return_exceptions=True)
        await self.tally.close()

    # --- experiments --------------------------------------------------------------------

    async def create_experiment(self, draft: ExperimentDraft, *, paused: bool, actor: str) -> Experiment:
        experiment = await self._checked(draft, "experiment")
        experiment = experiment.with_changes(
            state=ExperimentState.PAUSED if paused else ExperimentState.RUNNING, created_by=_actor(actor),
            start_time=None if paused else self.clock())
        change = self._change(experiment, ChangeAction.CREATED, actor)
        try:
            stored = await self.store.create(experiment, change)
        except ExperimentExists:
            raise AlreadyExists(f"experiment {quoted(experiment.name)} exists (names are never reused)",
                                reason=ErrorReason.EXPERIMENT_ALREADY_EXISTS,
                                metadata={"experiment": experiment.name}) from None
        except ModelBusy as busy:
            raise model_busy(experiment.model_name, busy) from None
        self.catalog.put(stored)
        return stored

    async def get_experiment(self, name: str) -> Experiment:
        _check_name(name, "name")
        experiment = await self.store.get(name)
        if experiment is None:
            raise _not_found(name)
        return experiment

    async def list_experiments(self, states: Collection[ExperimentState], model_name: str, page_size: int,
                               page_token: str) -> tuple[list[Experiment], str]:
        if len(model_name) > MAX_MODEL_NAME_LENGTH:
            raise InvalidArgument("model_name", f"must be at most {MAX_MODEL_NAME_LENGTH} characters")
        limit = paging.page_size(page_size)
        before = paging.decode(page_token)
        page = await self.store.list(states=tuple(states), model_name=model_name, before=before, limit=limit + 1)
        token = paging.encode(page[limit - 1].create_time, page[limit - 1].name) if len(page) > limit else ""
        return page[:limit], token

    async def update_experiment(self, draft: ExperimentDraft, paths: Sequence[str], actor: str) -> Experiment:
        current = await self.get_experiment(draft.name)
        fields = _check_mask(paths)
        if current.state is ExperimentState.STOPPED:
            raise _stopped(current.name)
        if draft.revision and draft.revision != current.revision:
            raise _revision_mismatch(current, draft.revision)
        changed = await self._updated(current, draft, fields)
        change = self._change(changed, ChangeAction.UPDATED, actor, fields=tuple(sorted(fields)))
        return await self._replace(current, changed, change)

    async def pause_experiment(self, name: str, reason: str, actor: str) -> Experiment:
        current = await self._live(name)
        if current.state is ExperimentState.PAUSED:
            return current
        return await self._transition(current, ExperimentState.PAUSED, ChangeAction.PAUSED, reason, actor)

    async def resume_experiment(self, name: str, reason: str, actor: str) -> Experiment:
        current = await self._live(name)
        if current.state is ExperimentState.RUNNING:
            return current
        return await self._transition(current, ExperimentState.RUNNING, ChangeAction.RESUMED, reason, actor)

    async def stop_experiment(self, name: str, reason: str, winning_variant: str, actor: str) -> Experiment:
        current = await self._live(name)
        if winning_variant and current.definition.variant(winning_variant) is None:
            raise InvalidArgument("winning_variant", f"unknown variant {quoted(winning_variant)}",
                                  reason=ErrorReason.UNKNOWN_VARIANT)
        return await self._transition(current, ExperimentState.STOPPED, ChangeAction.STOPPED, reason, actor,
                                      winning_variant=winning_variant)

    async def history(self, name: str, page_size: int, page_token: str) -> tuple[list[ExperimentChange], str]:
        """An experiment's changes, oldest first, a page at a time."""
        await self.get_experiment(name)
        limit = paging.page_size(page_size)
        after = paging.decode_position(page_token)
        page = await self.store.history(name, after_revision=after, limit=limit + 1)
        token = str(page[limit - 1].revision) if len(page) > limit else ""
        return page[:limit], token

    async def _live(self, name: str) -> Experiment:
        current = await self.get_experiment(name)
        if current.state is ExperimentState.STOPPED:
            raise _stopped(name)
        return current

    async def _transition(self, current: Experiment, state: ExperimentState, action: ChangeAction, reason: str,
                          actor: str, **extra: Any) -> Experiment:
        _check_length(reason, "reason", MAX_REASON_LENGTH)
        at = self.clock()
        times: dict[str, Any] = {}
        if state is ExperimentState.RUNNING and current.start_time is None:
            times["start_time"] = at
        if state is ExperimentState.STOPPED:
            times["stop_time"] = at
        changed = current.with_changes(state=state, **times, **extra)
        return await self._replace(current, changed, self._change(changed, action, actor, reason=reason))

    async def _replace(self, current: Experiment, changed: Experiment, change: ExperimentChange) -> Experiment:
        changed = changed.with_changes(revision=current.revision + 1)
        change = ExperimentChange(change.experiment, changed.revision, change.action, change.actor, change.time,
                                  change.reason, change.fields, changed, change.figures)
        try:
            stored = await self.store.replace(changed, current.revision, change)
        except ModelBusy as busy:
            raise model_busy(changed.model_name, busy) from None
        if stored is None:
            raise Aborted(f"experiment {quoted(current.name)} changed meanwhile; read it again and retry",
                          reason=ErrorReason.REVISION_MISMATCH, metadata={"experiment": current.name})
        self.catalog.put(stored)
        return stored

    def _change(self, experiment: Experiment, action: ChangeAction, actor: str, *, reason: str = "",
                fields: tuple[str, ...] = ()) -> ExperimentChange:
        return ExperimentChange(experiment.name, experiment.revision, action, _actor(actor), self.clock(), reason,
                                fields, experiment)

    # --- checking what callers send ----------------------------------------------------

    async def _checked(self, draft: ExperimentDraft, field: str) -> Experiment:
        definition = define_experiment(draft.name, draft.variants, salt=draft.salt, targeting=draft.targeting,
                                       overrides=draft.overrides, holdout_bps=draft.holdout_bps, field_name=field)
        _check_one_model(definition.variants, f"{field}.variants")
        experiment = Experiment(definition, _check_metrics(draft.metrics, (), f"{field}.metrics"),
                                description=_check_length(draft.description, f"{field}.description",
                                                          MAX_DESCRIPTION_LENGTH),
                                shadow=_check_shadow(draft.shadow, definition.variants[0].model_name,
                                                     f"{field}.shadow"),
                                priority=_check_priority(draft.priority, f"{field}.priority"),
                                allocation=check_allocation(draft.allocation, len(definition.variants),
                                                            f"{field}.allocation"))
        await self._check_servable(experiment, f"{field}.variants")
        return experiment

    async def _updated(self, current: Experiment, draft: ExperimentDraft, fields: set[str]) -> Experiment:
        field = "experiment"
        definition = current.definition
        if fields & {"variants", "targeting", "overrides", "holdout_bps"}:
            definition = updated(
                definition,
                **({"variants": draft.variants} if "variants" in fields else {}),
                **({"targeting": draft.targeting} if "targeting" in fields else {}),
                **({"overrides": draft.overrides} if "overrides" in fields else {}),
                **({"holdout_bps": draft.holdout_bps} if "holdout_bps" in fields else {}),
                field_name=field)
            _check_one_model(definition.variants, f"{field}.variants")
            if definition.variants[0].model_name != current.model_name:
                raise InvalidArgument(f"{field}.variants[0].model_name",
                                      f"the experiment serves model {quoted(current.model_name)}",
                                      reason=ErrorReason.IMMUTABLE_FIELD)
        changes: dict[str, Any] = {"definition": definition}
        if "description" in fields:
            changes["description"] = _check_length(draft.description, f"{field}.description", MAX_DESCRIPTION_LENGTH)
        if "metrics" in fields:
            changes["metrics"] = _check_metrics(draft.metrics, current.metrics, f"{field}.metrics")
        if "shadow" in fields:
            changes["shadow"] = _check_shadow(draft.shadow, current.model_name, f"{field}.shadow")
        if "priority" in fields:
            changes["priority"] = _check_priority(draft.priority, f"{field}.priority")
        if fields & {"allocation", "variants"}:  # the floor and ceiling depend on how many variants
            changes["allocation"] = check_allocation(draft.allocation if "allocation" in fields else current.allocation,
                                                     len(definition.variants), f"{field}.allocation")
        changed = current.with_changes(**changes)
        if "variants" in fields:
            await self._check_removed_variants(current, changed)
        if fields & {"variants", "shadow"}:
            await self._check_servable(changed, f"{field}.variants")
        return changed

    async def _check_removed_variants(self, current: Experiment, changed: Experiment) -> None:
        kept = {v.name for v in changed.definition.variants}
        removed = [v.name for v in current.definition.variants if v.name not in kept]
        if not removed:
            return
        await self.tally.flush_exposures()
        exposures, _, _ = await self.measurements.counts(current.name, removed, current.metrics[0].name,
                                                         current.metrics[0].kind)
        exposed = [name for name in removed if exposures[name].n > 0]
        if exposed:
            raise FailedPrecondition(f"variant {quoted(exposed[0])} has exposures and cannot be removed "
                                     "(set its weight to 0 instead)", reason=ErrorReason.VARIANT_HAS_EXPOSURES,
                                     metadata={"variant": exposed[0]})

    async def _check_servable(self, experiment: Experiment, field: str) -> None:
        """Every variant (and the shadow) names a version the Registry knows and that may serve."""
        targets = [(f"{field}[{i}].model_version", v.model_name, v.model_version)
                   for i, v in enumerate(experiment.definition.variants)]
        if experiment.shadow is not None:
            shadow = experiment.shadow
            targets.append((field.rsplit(".", 1)[0] + ".shadow.model_version", shadow.model_name,
                            shadow.model_version))
        for path, model, version in targets:
            resolved = await self._resolve(model, version, path)
            if resolved.stage == "ARCHIVED":
                raise InvalidArgument(path, f"version {quoted(resolved.version)} of {quoted(model)} is Archived "
                                            "and cannot serve", reason=ErrorReason.INVALID_VARIANTS)

    async def _resolve(self, model: str, version: str, path: str) -> ResolvedVersion:
        try:
            return await self.serving.resolve(model, selector_of(version))
        except DomainError as error:
            error = router_error(error)
            if error.reason is ErrorReason.MODEL_VERSION_NOT_FOUND or isinstance(error, InvalidArgument):
                raise NotFound(f"{path}: {error.message}", reason=ErrorReason.MODEL_VERSION_NOT_FOUND,
                               metadata={"field": path, "model_name": model}) from None
            raise error from None

    # --- assignment and prediction -----------------------------------------------------

    async def assign(self, user_id: str, attributes: Mapping[str, Any] | None, segments: Collection[str], *,
                     experiment: str = "", model_name: str = "", dry_run: bool = False) -> RoutedAssignment:
        routed, _, _ = await self._assign(user_id, attributes, segments, experiment, model_name, dry_run)
        return routed

    async def _assign(self, user_id: str, attributes: Mapping[str, Any] | None, segments: Collection[str],
                      experiment_name: str, model_name: str,
                      dry_run: bool) -> tuple[RoutedAssignment, Experiment | None, Canary | None]:
        """The assignment, and the experiment or canary that made it (neither: the default)."""
        check_user_id(user_id)
        if model_name:
            _check_name(model_name, "model_name", MAX_MODEL_NAME_LENGTH)
        if experiment_name:
            experiment = await self._cached(experiment_name)
            chosen = experiment.definition.assigner.assign(user_id, attributes, segments, experiment.active)
        else:
            experiment, chosen = self._first_targeting(user_id, attributes, segments, model_name)
            if experiment is None:
                canary = self.catalog.active_canary(model_name) if model_name else None
                if canary is not None:
                    return self.canaries.assign(canary, user_id), None, canary
                return await self._default(model_name), None, None
        if not dry_run:
            self._expose(experiment, chosen.variant.name, chosen.reason, user_id)
        return RoutedAssignment(experiment.name, chosen.variant.name, chosen.model_name, chosen.model_version,
                                chosen.bucket, chosen.reason.value), experiment, None

    def _first_targeting(self, user_id, attributes, segments, model_name):
        for experiment in self.catalog.running(model_name):
            chosen = experiment.definition.assigner.assign(user_id, attributes, segments, True)
            if chosen.reason is not AssignmentReason.NOT_TARGETED:
                return experiment, chosen
        return None, None

    def _expose(self, experiment: Experiment, variant: str, reason: AssignmentReason, user_id: str) -> None:
        if reason is AssignmentReason.EXPERIMENT_BUCKET or reason is AssignmentReason.USER_OVERRIDE:
            self._record_exposure(Exposure(experiment.name, variant, user_id))
        elif reason is AssignmentReason.HOLDOUT:
            self._record_exposure(Exposure(experiment.name, Exposure.HOLDOUT, user_id))

    def _record_exposure(self, exposure: Exposure) -> None:
        self.tally.expose(exposure)
        self.observer.exposed(exposure.experiment, exposure.variant)

    async def _default(self, model_name: str) -> RoutedAssignment:
        if not model_name:
            raise NotFound("no running experiment applies to this user; name a model_name to get its "
                           "Production version", reason=ErrorReason.NO_MATCHING_EXPERIMENT)
        try:
            resolved = await self.serving.resolve(model_name, PRODUCTION)
        except DomainError as error:
            raise router_error(error) from None
        return RoutedAssignment("", "", model_name, resolved.version, -1, DEFAULT_REASON)

    async def _cached(self, name: str, field: str = "experiment") -> Experiment:
        _check_name(name, field)
        experiment = self.catalog.get(name)
        if experiment is None:  # created on another replica a moment ago, or stopped long ago?
            await self.catalog.refresh()
            experiment = self.catalog.get(name) or await self.store.get(name)
            if experiment is None:
                raise _not_found(name)
            self.catalog.put(experiment)
        return experiment

    async def predict(self, user_id: str, attributes: Mapping[str, Any] | None, segments: Collection[str],
                      payload: bytes, *, experiment: str = "", model_name: str = "",
                      timeout_s: float | None = None) -> tuple[RoutedAssignment, Prediction, bool]:
        """(assignment, prediction, shadowed)."""
        routed, owner, canary = await self._assign(user_id, attributes, segments, experiment, model_name, False)
        scopes = _scopes(owner, canary)
        try:
            prediction = await self.serving.predict(routed.model_name, selector_of(routed.model_version), payload,
                                                    timeout_s)
        except DomainError as error:
            self.observer.predicted(routed.experiment, routed.variant, False)
            error = router_error(error)
            if error.reason in _VARIANT_FAILURES:
                for scope in scopes:
                    self.tally.sample(RequestSample(scope, routed.variant, 0.0, True))
                if self.feed is not None:
                    self.feed.observe(routed.model_name, routed.model_version, routed.experiment, routed.variant,
                                      0.0, True)
            raise error from None
        except BaseException:  # the caller gone, or a failure nothing mapped: failed all the same
            self.observer.predicted(routed.experiment, routed.variant, False)
            raise
        self.observer.predicted(routed.experiment, routed.variant, True)
        for scope in scopes:
            self.tally.sample(RequestSample(scope, routed.variant, prediction.latency_ms, False))
        if self.feed is not None:
            self.feed.observe(routed.model_name, prediction.model.version, routed.experiment, routed.variant,
                              prediction.latency_ms, False)
        shadowed = owner is not None and self._shadow(owner, payload, timeout_s)
        return routed, prediction, shadowed

    def _shadow(self, experiment: Experiment, payload: bytes, timeout_s: float | None) -> bool:
        shadow = experiment.shadow
        if shadow is None or not experiment.active or self._shadow_draw() * 10_000 >= shadow.sample_bps:
            return False
        if len(self._shadows) >= MAX_SHADOW_IN_FLIGHT:  # the shadow never slows the real traffic down
            return False
        task = asyncio.get_running_loop().create_task(self._mirror(experiment.name, shadow, payload, timeout_s))
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)
        return True

    async def _mirror(self, experiment: str, shadow: ShadowConfig, payload: bytes, timeout_s: float | None) -> None:
        scope = experiment_scope(experiment)
        try:
            prediction = await self.serving.predict(shadow.model_name, selector_of(shadow.model_version), payload,
                                                    timeout_s)
        except DomainError:
            self.tally.sample(RequestSample(scope, "shadow", 0.0, True, shadow=True))
        except Exception:  # noqa: BLE001 - a shadow's failure never reaches anyone
            log.warning("shadow prediction failed unexpectedly", exc_info=True)
            self.tally.sample(RequestSample(scope, "shadow", 0.0, True, shadow=True))
        else:
            self.tally.sample(RequestSample(scope, "shadow", prediction.latency_ms, False, shadow=True))

    async def record_exposures(self, items: Sequence[tuple[str, str, str, bool]]) -> tuple[int, int]:
        """Exposures a client assigned locally: (experiment, user_id, variant, holdout) each.
        The batch is checked whole first; (accepted, ignored: experiment not running)."""
        if not 1 <= len(items) <= MAX_OUTCOME_BATCH:
            raise InvalidArgument("exposures", f"must hold 1 to {MAX_OUTCOME_BATCH} exposures, got {len(items)}")
        checked: list[Exposure | None] = []
        for index, (name, user_id, variant, holdout) in enumerate(items):
            try:
                checked.append(await self._exposure(f"exposures[{index}]", name, user_id, variant, holdout))
            except DomainError as error:
                error.metadata["index"] = str(index)
                raise
        for exposure in checked:
            if exposure is not None:
                self._record_exposure(exposure)
        accepted = sum(e is not None for e in checked)
        return accepted, len(checked) - accepted

    async def _exposure(self, path: str, name: str, user_id: str, variant: str, holdout: bool) -> Exposure | None:
        check_user_id(user_id, f"{path}.user_id")
        experiment = await self._cached(name, f"{path}.experiment")
        if holdout:
            variant = Exposure.HOLDOUT
        elif experiment.definition.variant(variant) is None:
            raise InvalidArgument(f"{path}.variant", f"unknown variant {quoted(variant)}",
                                  reason=ErrorReason.UNKNOWN_VARIANT)
        return Exposure(experiment.name, variant, user_id) if experiment.active else None

    # --- outcomes and results ------------------------------------------------------------

    def _feed_outcomes(self, events: Sequence[OutcomeEvent], results: Sequence[OutcomeResult]) -> None:
        """The counted outcomes to the monitor feed, under the model version their variant serves."""
        for event, result in zip(events, results):
            experiment = self.catalog.get(event.experiment) if result is OutcomeResult.COUNTED else None
            if experiment is None:
                continue
            for variant in experiment.definition.variants:
                if variant.name == event.variant:
                    self.feed.outcome(variant.model_name, variant.model_version, event.experiment, event.variant,
                                      event.metric, event.value)

    async def record_outcomes(self, inputs: Sequence[OutcomeInput]) -> list[tuple[OutcomeResult, str]]:
        """Check the whole batch first (nothing applied if an item is invalid: the error's
        metadata "index" names it), then apply each event once. (result, variant) per item."""
        if not 1 <= len(inputs) <= MAX_OUTCOME_BATCH:
            raise InvalidArgument("outcomes", f"must hold 1 to {MAX_OUTCOME_BATCH} outcomes, got {len(inputs)}")
        events: list[OutcomeEvent | None] = []
        variants: list[str] = []
        for index, item in enumerate(inputs):
            prefix = f"outcomes[{index}]" if len(inputs) > 1 else ""
            try:
                event, variant = await self._outcome_event(item, prefix)
            except DomainError as error:
                error.metadata["index"] = str(index)
                raise
            events.append(event)
            variants.append(variant)
        counted = [e for e in events if e is not None]
        results: list[OutcomeResult] = []
        if counted:
            await self.tally.flush_exposures()
            results = await self.measurements.record_outcomes(counted, self._dedupe_s)
            for event, result in zip(counted, results):
                if result is OutcomeResult.COUNTED:
                    self.observer.outcome_counted(event.experiment, event.variant)
        if self.feed is not None:
            self._feed_outcomes(counted, results)
        applied = iter(results)
        return [(next(applied) if event is not None else OutcomeResult.NOT_COUNTED, variant)
                for event, variant in zip(events, variants)]

    async def _outcome_event(self, item: OutcomeInput, prefix: str) -> tuple[OutcomeEvent | None, str]:
        def path(name: str) -> str:
            return f"{prefix}.{name}" if prefix else name

        _check_length(item.event_id, path("event_id"), MAX_EVENT_ID_LENGTH, required=True)
        check_user_id(item.user_id, path("user_id"))
        experiment = await self._cached(item.experiment, path("experiment"))
        metric = experiment.metric(item.metric)
        if metric is None:
            raise InvalidArgument(path("metric"), f"experiment {quoted(experiment.name)} has no metric "
                                                  f"{quoted(item.metric)}", reason=ErrorReason.UNKNOWN_METRIC)
        value = _outcome_value(item, metric, path)
        if item.variant:
            variant = experiment.definition.variant(item.variant)
            if variant is None:
                raise InvalidArgument(path("variant"), f"unknown variant {quoted(item.variant)}",
                                      reason=ErrorReason.UNKNOWN_VARIANT)
        else:
            variant = experiment.definition.assigner.attributed(item.user_id)
        if variant is None or experiment.state is ExperimentState.STOPPED:
            return None, variant.name if variant else ""
        return OutcomeEvent(experiment.name, item.event_id, item.user_id, variant.name, metric.name, metric.kind,
                            value, item.time), variant.name

    async def results(self, name: str, metric_name: str, confidence_level: float) -> ResultsView:
        experiment = await self.get_experiment(name)
        metric = experiment.metric(metric_name)
        if metric is None:
            raise InvalidArgument("metric", f"experiment {quoted(name)} has no metric {quoted(metric_name)}",
                                  reason=ErrorReason.UNKNOWN_METRIC)
        level = check_confidence_level(confidence_level or DEFAULT_CONFIDENCE_LEVEL)
        names = [v.name for v in experiment.definition.variants]
        await self.tally.flush()
        counts, events, holdout = await self.measurements.counts(name, names, metric.name, metric.kind)
        requests = await self.measurements.request_stats(experiment_scope(name), names)
        inputs = [VariantInput(v.name, v.weight_bps, counts[v.name], v.control) for v in experiment.definition.variants]
        results = experiment_results(metric.kind, inputs, confidence_level=level,
                                     fixed_weights=not experiment.allocation.adaptive)
        caveats = (ADAPTIVE_CAVEAT,) if experiment.allocation.adaptive else ()
        return ResultsView(experiment, metric, results, requests, events, holdout, self.clock(), caveats)


@dataclass(frozen=True)
class ResultsView:
    """What GetExperimentResults answers."""

    experiment: Experiment
    metric: OutcomeMetric
    results: ExperimentResults
    requests: dict[str, RequestStats]  # Predict calls per variant
    outcome_events: dict[str, int]  # outcome events counted per variant
    holdout_exposures: int
    compute_time: datetime
    caveats: tuple[str, ...] = ()


def _scopes(experiment: Experiment | None, canary: Canary | None) -> tuple[str, ...]:
    """Where a Predict call is counted: its running experiment's scope, or its canary's two."""
    if experiment is not None:
        return (experiment_scope(experiment.name),) if experiment.active else ()
    if canary is not None:
        return canary_scope(canary.canary_id), step_scope(canary.canary_id, canary.current_step)
    return ()


# --- checks ------------------------------------------------------------------------------

def _actor(subject: str) -> str:
    return (subject or "anonymous")[:MAX_ACTOR_LENGTH]


def _check_length(value: str, field: str, limit: int, *, required: bool = False) -> str:
    if required and not value:
        raise InvalidArgument(field, "is required")
    if len(value) > limit:
        raise InvalidArgument(field, f"must be at most {limit} characters, got {len(value)}")
    return value


def _check_name(value: str, field: str, limit: int = 128) -> str:
    _check_length(value, field, limit, required=True)
    if not all(c.isascii() and (c.isalnum() or c in "._-") for c in value):
        raise InvalidArgument(field, "must be letters, digits and . _ -")
    return value


def _check_one_model(variants: Sequence[Variant], field: str) -> None:
    models = {v.model_name for v in variants}
    if len(models) > 1:
        raise InvalidArgument(field, "all variants must be versions of one model, got "
                                     f"{len(models)} models", reason=ErrorReason.INVALID_VARIANTS)


def _check_metrics(metrics: Sequence[tuple[str, MetricKind | None]], existing: Sequence[OutcomeMetric],
                   field: str) -> tuple[OutcomeMetric, ...]:
    if not 1 <= len(metrics) <= MAX_METRICS:
        raise InvalidArgument(field, f"must hold 1 to {MAX_METRICS} metrics, got {len(metrics)}")
    known = {m.name: m.kind for m in existing}
    checked: list[OutcomeMetric] = []
    for index, (name, kind) in enumerate(metrics):
        _check_name(name, f"{field}[{index}].name", METRIC_NAME_LENGTH)
        if kind is None:
            raise InvalidArgument(f"{field}[{index}].kind", "must be BINARY or NUMERIC")
        if name in known and known[name] is not kind:
            raise InvalidArgument(f"{field}[{index}].kind", "cannot change once outcomes may have been recorded",
                                  reason=ErrorReason.IMMUTABLE_FIELD)
        if any(m.name == name for m in checked):
            raise InvalidArgument(f"{field}[{index}].name", f"metric {quoted(name)} is declared twice")
        checked.append(OutcomeMetric(name, kind))
    gone = [name for name in known if all(m.name != name for m in checked)]
    if gone:  # its outcomes stay in the store under its name: a new metric of that name would mix with them
        raise InvalidArgument(field, f"metric {quoted(gone[0])} cannot be removed once declared",
                              reason=ErrorReason.IMMUTABLE_FIELD)
    return tuple(checked)


def _check_shadow(shadow: ShadowConfig | None, model_name: str, field: str) -> ShadowConfig | None:
    if shadow is None:
        return None
    if not 0 <= shadow.sample_bps <= 10_000:
        raise InvalidArgument(f"{field}.sample_bps", f"must be 0 to 10000, got {shadow.sample_bps}")
    _check_length(shadow.model_version, f"{field}.model_version", 256, required=True)
    model = shadow.model_name or model_name
    _check_name(model, f"{field}.model_name", MAX_MODEL_NAME_LENGTH)
    return ShadowConfig(model, shadow.model_version, shadow.sample_bps)


def _check_priority(priority: int, field: str) -> int:
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidArgument(field, f"must be within +-{MAX_PRIORITY}")
    return priority


def _check_mask(paths: Sequence[str]) -> set[str]:
    if not paths:
        raise InvalidArgument("update_mask", "is required: name the fields to change")
    fields = set()
    for path in paths:
        if path in IMMUTABLE:
            raise InvalidArgument("update_mask", f"{quoted(path)} cannot be changed",
                                  reason=ErrorReason.IMMUTABLE_FIELD)
        if path not in UPDATABLE:
            raise InvalidArgument("update_mask", f"unknown field {quoted(path)}")
        fields.add(path)
    return fields


def _outcome_value(item: OutcomeInput, metric: OutcomeMetric, path: Callable[[str], str]) -> float:
    if item.converted is None and item.value is None:
        raise InvalidArgument(path("outcome"), "set converted (binary metrics) or value (numeric metrics)")
    if metric.kind is MetricKind.BINARY:
        if item.converted is None:
            raise InvalidArgument(path("value"), f"metric {quoted(metric.name)} is binary: set converted",
                                  reason=ErrorReason.OUTCOME_KIND_MISMATCH)
        return 1.0 if item.converted else 0.0
    if item.value is None:
        raise InvalidArgument(path("converted"), f"metric {quoted(metric.name)} is numeric: set value",
                              reason=ErrorReason.OUTCOME_KIND_MISMATCH)
    if not math.isfinite(item.value) or abs(item.value) > 1e12:
        raise InvalidArgument(path("value"), "must be a finite number within +-1e12")
    return float(item.value)


def _not_found(name: str) -> NotFound:
    return NotFound(f"experiment {quoted(name)} not found", reason=ErrorReason.EXPERIMENT_NOT_FOUND,
                    metadata={"experiment": name})


def _stopped(name: str) -> FailedPrecondition:
    return FailedPrecondition(f"experiment {quoted(name)} is stopped", reason=ErrorReason.EXPERIMENT_STOPPED,
                              metadata={"experiment": name})


def _revision_mismatch(current: Experiment, revision: int) -> Aborted:
    return Aborted(f"experiment {quoted(current.name)} is at revision {current.revision}, not {revision}",
                   reason=ErrorReason.REVISION_MISMATCH, metadata={"revision": current.revision})

"""In-memory stand-ins for the Router domain's ports: the experiment (and canary) store, the
measurements store, and the Inference use case (`Serving`). They do what the ports' docstrings
promise (compare-and-set revisions, one running experiment or active canary per model, change
feeds with a cursor, distinct exposed users, outcome dedupe) and nothing the real systems do
beyond that. Each can be told to fail, and each remembers its calls, so tests can check what
reached it."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Callable, Sequence

from ml_serving_server.errors import NotFound, Unavailable
from ml_serving_server.services.inference.domain.errors import ErrorReason as InferenceReason
from ml_serving_server.services.inference.domain.model import (
    LoadedModel,
    Prediction,
    ResolvedVersion,
    Selector,
    SelectorKind,
)
from ml_serving_server.services.router.domain.canary import Canary, CanaryEvent, CanaryState
from ml_serving_server.services.router.domain.model import (
    Experiment,
    ExperimentChange,
    ExperimentState,
    Exposure,
    OutcomeEvent,
    OutcomeResult,
    RequestSample,
    RequestStats,
)
from ml_serving_server.services.router.domain.ports import ExperimentExists, ModelBusy, StoreUnavailable
from ml_serving_server.services.router.domain.statistics import Counts, MetricKind

EPOCH = datetime(2030, 1, 1, tzinfo=timezone.utc)


class FixedClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime = EPOCH):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# --- ExperimentStore -------------------------------------------------------------------------


class MemoryExperimentStore:
    """ExperimentStore and CanaryStore in memory (one adapter implements both: one change
    sequence, and one model busy rule across experiments and canaries). The store's own clock
    ticks one second per write, so create_time orders what it stores by creation. `down` makes
    every call but wait_for_change raise StoreUnavailable; `wait_returns_at_once` makes
    wait_for_change return immediately."""

    def __init__(self) -> None:
        self.experiments: dict[str, Experiment] = {}
        self.changes: list[ExperimentChange] = []
        self.down = False
        self.wait_returns_at_once = False
        self.writes = 0
        self.waits = 0
        self.feed_reads: list[int] = []  # the cursor of each changed_since call
        self.before_replace = None  # an async callable run before the compare-and-set (a racing writer)
        self._sequence = 0
        self._written_at: dict[str, int] = {}  # name -> change sequence of its last write
        self._tick = EPOCH
        self._changed = asyncio.Event()
        self.canaries: dict[str, Canary] = {}
        self.canary_trail: list[CanaryEvent] = []
        self._canary_written_at: dict[str, int] = {}
        self._leases: dict[str, tuple[str, float]] = {}  # canary id -> (holder, monotonic expiry)

    # helpers

    def _check_up(self) -> None:
        if self.down:
            raise StoreUnavailable()

    def _now(self) -> datetime:
        self._tick += timedelta(seconds=1)
        return self._tick

    def _advance(self) -> int:
        self._sequence += 1
        self.writes += 1
        self._changed.set()
        self._changed = asyncio.Event()
        return self._sequence

    def _commit(self, experiment: Experiment, change: ExperimentChange) -> None:
        self.experiments[experiment.name] = experiment
        self._written_at[experiment.name] = self._advance()
        self.changes.append(change)

    def _busy(self, model_name: str, *, experiment: str = "", canary: str = "") -> ModelBusy | None:
        """Who else holds the model: a RUNNING experiment or an active canary."""
        holder = next((e.name for e in self.experiments.values()
                       if e.name != experiment and e.active and e.model_name == model_name), None)
        if holder is not None:
            return ModelBusy(holder, "experiment")
        holder = next((c.canary_id for c in self.canaries.values()
                       if c.canary_id != canary and c.active and c.model_name == model_name), None)
        return ModelBusy(holder, "canary") if holder is not None else None

    # the port

    async def create(self, experiment: Experiment, change: ExperimentChange) -> Experiment:
        self._check_up()
        if experiment.name in self.experiments:
            raise ExperimentExists(experiment.name)
        busy = self._busy(experiment.model_name, experiment=experiment.name) if experiment.active else None
        if busy is not None:
            raise busy
        at = self._now()
        stored = experiment.with_changes(revision=1, create_time=at, update_time=at)
        self._commit(stored, change)
        return stored

    async def get(self, name: str) -> Experiment | None:
        self._check_up()
        return self.experiments.get(name)

    async def list(self, *, states: Sequence[ExperimentState] = (), model_name: str = "",
                   before: tuple[datetime, str] | None = None, limit: int = 100) -> list[Experiment]:
        self._check_up()
        found = [e for e in self.experiments.values()
                 if (not states or e.state in states) and (not model_name or e.model_name == model_name)
                 and (before is None or (e.create_time, e.name) < before)]
        found.sort(key=lambda e: (e.create_time, e.name), reverse=True)
        return found[:max(limit, 0)]

    async def replace(self, experiment: Experiment, expected_revision: int,
                      change: ExperimentChange) -> Experiment | None:
        self._check_up()
        if experiment.revision != expected_revision + 1:
            raise ValueError(f"revision {experiment.revision} cannot replace revision {expected_revision}")
        if self.before_replace is not None:
            racing, self.before_replace = self.before_replace, None
            await racing()
        current = self.experiments.get(experiment.name)
        if current is None or current.revision != expected_revision:
            return None
        busy = self._busy(experiment.model_name, experiment=experiment.name) if experiment.active else None
        if busy is not None:
            raise busy
        stored = experiment.with_changes(create_time=current.create_time, update_time=self._now())
        self._commit(stored, change)
        return stored

    async def history(self, name: str, *, after_revision: int = 0, limit: int = 100) -> list[ExperimentChange]:
        self._check_up()
        return [c for c in self.changes if c.experiment == name and c.revision > after_revision][:max(limit, 0)]

    async def changed_since(self, cursor: int) -> tuple[int, list[Experiment]]:
        self.feed_reads.append(cursor)
        self._check_up()
        changed = sorted((seq, name) for name, seq in self._written_at.items() if seq > cursor)
        if not changed:
            return cursor, []
        if cursor == 0:  # the first read leaves stopped experiments out (the port says so)
            live = [self.experiments[name] for _, name in changed
                    if self.experiments[name].state is not ExperimentState.STOPPED]
            return changed[-1][0], live
        return changed[-1][0], [self.experiments[name] for _, name in changed]

    async def wait_for_change(self, timeout_s: float) -> None:
        self.waits += 1
        if self.wait_returns_at_once:
            await asyncio.sleep(0)
            return
        # asyncio.wait, not wait_for: Python 3.11's wait_for can swallow a cancellation that
        # arrives as the event fires, and the catalog's close would then wait forever
        waiter = asyncio.ensure_future(self._changed.wait())
        try:
            await asyncio.wait({waiter}, timeout=timeout_s)
        finally:
            waiter.cancel()

    async def ping(self) -> bool:
        return not self.down

    async def close(self) -> None:
        pass

    # the canary half

    def _commit_canary(self, canary: Canary, events: Sequence[CanaryEvent]) -> None:
        self.canaries[canary.canary_id] = canary
        self._canary_written_at[canary.canary_id] = self._advance()
        for event in events:
            self.canary_trail.append(_with_sequence(event, len(self.canary_trail) + 1))

    async def create_canary(self, canary: Canary, event: CanaryEvent) -> tuple[Canary, bool]:
        self._check_up()
        if canary.request_id:
            earlier = next((c for c in self.canaries.values() if c.request_id == canary.request_id), None)
            if earlier is not None:
                return earlier, False
        busy = self._busy(canary.model_name, canary=canary.canary_id)
        if busy is not None:
            raise busy
        at = self._now()
        stored = canary.with_changes(revision=1, create_time=at, update_time=at, step_start_time=at)
        self._commit_canary(stored, [event])
        return stored, True

    async def get_canary(self, canary_id: str) -> Canary | None:
        self._check_up()
        return self.canaries.get(canary_id)

    async def list_canaries(self, *, model_name: str = "", states: Sequence[CanaryState] = (),
                            before: tuple[datetime, str] | None = None, limit: int = 100) -> list[Canary]:
        self._check_up()
        found = [c for c in self.canaries.values()
                 if (not states or c.state in states) and (not model_name or c.model_name == model_name)
                 and (before is None or (c.create_time, c.canary_id) < before)]
        found.sort(key=lambda c: (c.create_time, c.canary_id), reverse=True)
        return found[:max(limit, 0)]

    async def replace_canary(self, canary: Canary, expected_revision: int,
                             events: Sequence[CanaryEvent]) -> Canary | None:
        self._check_up()
        if canary.revision != expected_revision + 1:
            raise ValueError(f"revision {canary.revision} cannot replace revision {expected_revision}")
        current = self.canaries.get(canary.canary_id)
        if current is None or current.revision != expected_revision:
            return None
        at = self._now()
        stored = canary.with_changes(create_time=current.create_time, update_time=at,
                                     step_start_time=canary.step_start_time or at)
        self._commit_canary(stored, events)
        return stored

    async def canary_events(self, canary_id: str, *, after_sequence: int = 0,
                            limit: int = 100) -> list[CanaryEvent]:
        self._check_up()
        return [e for e in self.canary_trail
                if e.canary_id == canary_id and e.sequence > after_sequence][:max(limit, 0)]

    async def canaries_changed_since(self, cursor: int) -> tuple[int, list[Canary]]:
        self._check_up()
        changed = sorted((seq, cid) for cid, seq in self._canary_written_at.items() if seq > cursor)
        if not changed:
            return cursor, []
        if cursor == 0:  # the first read gives the active ones only
            return changed[-1][0], [self.canaries[cid] for _, cid in changed if self.canaries[cid].active]
        return changed[-1][0], [self.canaries[cid] for _, cid in changed]

    async def acquire_lease(self, canary_id: str, holder: str, ttl_s: float) -> bool:
        self._check_up()
        now = time.monotonic()
        held = self._leases.get(canary_id)
        if held is not None and held[0] != holder and held[1] > now:
            return False
        self._leases[canary_id] = (holder, now + ttl_s)
        return True

    async def release_lease(self, canary_id: str, holder: str) -> None:
        self._check_up()
        if self._leases.get(canary_id, ("", 0.0))[0] == holder:
            del self._leases[canary_id]


def _with_sequence(event: CanaryEvent, sequence: int) -> CanaryEvent:
    return dataclasses.replace(event, sequence=sequence)


# --- Measurements ----------------------------------------------------------------------------


class MemoryMeasurements:
    """Measurements in memory. `fail_writes` > 0 makes that many add_* calls raise
    StoreUnavailable (the batch is not applied); `down` makes every call raise."""

    def __init__(self) -> None:
        self.exposed: dict[tuple[str, str], set[str]] = defaultdict(set)  # (experiment, variant) -> users
        self.exposure_batches: list[list[Exposure]] = []
        self.request_batches: list[list[RequestSample]] = []
        self.outcome_calls: list[list[OutcomeEvent]] = []
        self.dedupe_seconds: list[int] = []
        self.down = False
        self.fail_writes = 0
        self.write_gate: asyncio.Event | None = None  # when set, add_* wait for it first
        self._seen_events: set[tuple[str, str]] = set()
        self._converted: dict[tuple[str, str, str], set[str]] = defaultdict(set)  # (exp, metric, variant)
        self._totals: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
        self._events: dict[tuple[str, str, str], int] = defaultdict(int)
        self._calls: dict[tuple[str, str, bool], list[RequestSample]] = defaultdict(list)

    def _check_up(self) -> None:
        if self.down:
            raise StoreUnavailable("the router's measurements store")

    async def _write(self) -> None:
        if self.write_gate is not None:
            await self.write_gate.wait()
        self._check_up()
        if self.fail_writes > 0:
            self.fail_writes -= 1
            raise StoreUnavailable("the router's measurements store")

    @property
    def exposures(self) -> list[Exposure]:
        return [e for batch in self.exposure_batches for e in batch]

    @property
    def samples(self) -> list[RequestSample]:
        return [s for batch in self.request_batches for s in batch]

    async def add_exposures(self, exposures: Sequence[Exposure]) -> None:
        await self._write()
        self.exposure_batches.append(list(exposures))
        for exposure in exposures:
            self.exposed[(exposure.experiment, exposure.variant)].add(exposure.user_id)

    async def add_requests(self, samples: Sequence[RequestSample]) -> None:
        await self._write()
        self.request_batches.append(list(samples))
        for sample in samples:
            self._calls[(sample.scope, sample.variant, sample.shadow)].append(sample)

    async def record_outcomes(self, events: Sequence[OutcomeEvent], dedupe_seconds: int) -> list[OutcomeResult]:
        self._check_up()
        self.outcome_calls.append(list(events))
        self.dedupe_seconds.append(dedupe_seconds)
        results = []
        for event in events:
            key = (event.experiment, event.event_id)
            if key in self._seen_events:
                results.append(OutcomeResult.DUPLICATE)
                continue
            self._seen_events.add(key)
            if event.user_id not in self.exposed[(event.experiment, event.variant)]:
                results.append(OutcomeResult.NOT_COUNTED)
                continue
            slot = (event.experiment, event.metric, event.variant)
            if event.kind is MetricKind.BINARY:
                if event.value:
                    self._converted[slot].add(event.user_id)
            else:
                totals = self._totals[slot]
                totals[event.user_id] = totals.get(event.user_id, 0.0) + event.value
            self._events[slot] += 1
            results.append(OutcomeResult.COUNTED)
        return results

    async def counts(self, experiment: str, variants: Sequence[str], metric: str,
                     kind: MetricKind) -> tuple[dict[str, Counts], dict[str, int], int]:
        self._check_up()
        counts, events = {}, {}
        for variant in variants:
            n = len(self.exposed[(experiment, variant)])
            slot = (experiment, metric, variant)
            if kind is MetricKind.BINARY:
                counts[variant] = Counts(n, successes=len(self._converted[slot]))
            else:
                totals = self._totals[slot].values()
                counts[variant] = Counts(n, sum=sum(totals), sum_sq=sum(t * t for t in totals))
            events[variant] = self._events[slot]
        return counts, events, len(self.exposed[(experiment, Exposure.HOLDOUT)])

    async def request_stats(self, scope: str, variants: Sequence[str]) -> dict[str, RequestStats]:
        self._check_up()
        stats = {}
        for variant in variants:
            calls = self._calls[(scope, variant, False)]
            latencies = sorted(s.latency_ms for s in calls)
            stats[variant] = RequestStats(len(calls), sum(s.error for s in calls), _quantile(latencies, 0.5),
                                          _quantile(latencies, 0.99))
        return stats

    def shadow_samples(self, scope: str) -> list[RequestSample]:
        return [s for (sc, _, shadow), samples in self._calls.items() if sc == scope and shadow for s in samples]

    async def ping(self) -> bool:
        return not self.down

    async def close(self) -> None:
        pass


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# --- Serving (the Inference use case) ----------------------------------------------------------


class FakeServing:
    """The Inference use case as the Router sees it: a registry of versions (with stages and
    aliases) and predictions that echo the payload, or raise what `failures` says for a
    (model, version). Errors are the Inference domain's, with its reasons."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], ResolvedVersion] = {}
        self.aliases: dict[tuple[str, str], str] = {}
        self.failures: dict[tuple[str, str], Callable[[], Exception]] = {}  # a fresh error per call
        self.loaded: set[tuple[str, str]] = set()  # what `describe` finds in the model server
        self.registry_down = False
        self.latency_ms = 12.5
        self.resolve_calls: list[tuple[str, Selector]] = []
        self.predict_calls: list[tuple[str, Selector, bytes, float | None]] = []

    def add(self, model: str, version: str, stage: str = "STAGING", alias: str = "") -> ResolvedVersion:
        resolved = ResolvedVersion(model, version, stage, f"s3://models/{model}/{version}/model.mar")
        self.versions[(model, version)] = resolved
        if alias:
            self.aliases[(model, alias)] = version
        return resolved

    async def resolve(self, name: str, selector: Selector) -> ResolvedVersion:
        self.resolve_calls.append((name, selector))
        if self.registry_down:
            raise Unavailable("the model registry is unavailable; retry later",
                              reason=InferenceReason.REGISTRY_UNAVAILABLE)
        known = [v for (model, _), v in self.versions.items() if model == name]
        if not known:
            raise NotFound(f"model {name!r} not found", reason=InferenceReason.MODEL_NOT_FOUND,
                           metadata={"model_name": name})
        if selector.kind is SelectorKind.VERSION:
            found = self.versions.get((name, selector.value))
            if found is None:
                raise NotFound(f"version {selector.value} of {name!r} not found",
                               reason=InferenceReason.VERSION_NOT_FOUND, metadata={"model_name": name})
            return found
        if selector.kind is SelectorKind.ALIAS:
            version = self.aliases.get((name, selector.value))
            if version is None:
                raise NotFound(f"alias {selector.value!r} of {name!r} not found",
                               reason=InferenceReason.ALIAS_NOT_FOUND, metadata={"model_name": name})
            return self.versions[(name, version)]
        stage = "PRODUCTION" if selector.kind is SelectorKind.PRODUCTION else selector.value
        in_stage = sorted((v for v in known if v.stage == stage), key=lambda v: int(v.version))
        if not in_stage:
            raise NotFound(f"no version of {name!r} in {stage}", reason=InferenceReason.NO_VERSION_IN_STAGE,
                           metadata={"model_name": name})
        return in_stage[-1]

    async def predict(self, name: str, selector: Selector, payload: bytes, timeout_s: float | None) -> Prediction:
        self.predict_calls.append((name, selector, payload, timeout_s))
        resolved = await self.resolve(name, selector)
        failure = self.failures.get((name, resolved.version))
        if failure is not None:
            raise failure()
        return Prediction(resolved, b'{"echo": ' + payload + b"}", self.latency_ms)

    async def describe(self, name: str, version: str) -> LoadedModel:
        if (name, version) not in self.loaded:
            raise NotFound(f"version {version} of {name!r} is not loaded", reason=InferenceReason.MODEL_NOT_LOADED,
                           metadata={"model_name": name, "version": version})
        return LoadedModel(name, version, "READY", 1, 1, 1, 100, 120)

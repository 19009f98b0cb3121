"""The event feed on one replica: a pump that follows the stored feed, a resolve cache kept
fresh by it, and WatchEvents streams.

Events are stored in PostgreSQL with gap-free sequences committed in order; every commit
NOTIFYs, so each replica's pump wakes, reads what is new and applies it to its cache. The
cache answers ResolveModelVersion from memory; a model it does not hold is loaded once
(from MLflow and PostgreSQL) and then kept current by the events alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from typing import AsyncIterator, Awaitable, Callable, Sequence

from ....errors import OutOfRange, Unavailable, quoted
from .errors import ErrorReason
from .model import EventType, ModelVersion, RegistryEvent, Stage
from .ports import BackendUnavailable, LifecycleStore

log = logging.getLogger(__name__)

PAGE = 500
"""Events read from the store at a time."""


@dataclass
class ModelSnapshot:
    """What ResolveModelVersion needs of one model: every version, current."""

    name: str
    versions: dict[str, ModelVersion] = field(default_factory=dict)
    sequence: int = 0  # the newest event applied

    def apply(self, event: RegistryEvent) -> None:
        if event.type in (EventType.VERSION_CREATED, EventType.VERSION_UPDATED, EventType.STAGE_CHANGED):
            if event.model_version is not None:
                self.versions[event.version] = event.model_version
        elif event.type == EventType.VERSION_DELETED:
            self.versions.pop(event.version, None)
        elif event.type == EventType.ALIAS_SET:
            self._drop_alias(event.alias)
            if event.model_version is not None:
                self.versions[event.version] = event.model_version
        elif event.type == EventType.ALIAS_DELETED:
            self._drop_alias(event.alias)
        self.sequence = max(self.sequence, event.sequence)

    def _drop_alias(self, alias: str) -> None:
        for number, version in self.versions.items():
            if alias in version.aliases:
                self.versions[number] = replace(version, aliases=tuple(a for a in version.aliases if a != alias))

    def in_stage(self, stage: Stage) -> ModelVersion | None:
        """Production's one version, else the newest version in the stage."""
        found = [v for v in self.versions.values() if v.stage == stage]
        return max(found, key=lambda v: v.number) if found else None

    def with_alias(self, alias: str) -> ModelVersion | None:
        return next((v for v in self.versions.values() if alias in v.aliases), None)


Loader = Callable[[str], Awaitable[ModelSnapshot | None]]
"""Reads one model whole from the backends; None when it does not exist."""


class ResolveCache:
    """Model snapshots of this replica, fed by the pump. Unknown models are remembered as
    absent for `negative_ttl_s`, so asking for them again does not reach MLflow each time."""

    def __init__(self, loader: Loader, max_models: int, negative_ttl_s: float = 1.0):
        self._loader = loader
        self._max_models = max_models
        self._negative_ttl_s = negative_ttl_s
        self._models: dict[str, ModelSnapshot] = {}
        self._absent: dict[str, float] = {}
        self._loading: dict[str, asyncio.Future] = {}
        self.applied = 0  # newest sequence the pump applied
        self._store: LifecycleStore | None = None

    def attach(self, store: LifecycleStore, head: int) -> None:
        self._store = store
        self.applied = head

    def forget_absent(self, name: str) -> None:
        self._absent.pop(name, None)

    def peek(self, name: str) -> ModelSnapshot | None:
        return self._models.get(name)

    async def get(self, name: str) -> ModelSnapshot | None:
        snapshot = self._models.get(name)
        if snapshot is not None:
            return snapshot
        if self._absent.get(name, 0.0) > time.monotonic():
            return None
        pending = self._loading.get(name)
        if pending is None:  # one load per model however many callers wait
            pending = asyncio.ensure_future(self._load(name))
            self._loading[name] = pending
            pending.add_done_callback(lambda _: self._loading.pop(name, None))
        return await asyncio.shield(pending)

    async def _load(self, name: str) -> ModelSnapshot | None:
        start = self.applied
        snapshot = await self._loader(name)
        if snapshot is None:
            self._absent[name] = time.monotonic() + self._negative_ttl_s
            return None
        snapshot.sequence = start
        # Events committed while it loaded: replay them until none is missing, then publish
        # in the same step (no await) so the pump applies everything after.
        while self.applied > snapshot.sequence and self._store is not None:
            head = self.applied
            for event in await self._store.events_after(snapshot.sequence, head, PAGE * 20, [name]):
                snapshot.apply(event)
            snapshot.sequence = head
        if len(self._models) >= self._max_models:
            self._models.pop(next(iter(self._models)))  # the oldest loaded
        self._models[name] = snapshot
        return snapshot

    def apply(self, event: RegistryEvent) -> None:
        if event.type in (EventType.MODEL_CREATED, EventType.VERSION_CREATED):
            self._absent.pop(event.model_name, None)
        if event.type == EventType.MODEL_DELETED:
            self._models.pop(event.model_name, None)
        else:
            snapshot = self._models.get(event.model_name)
            if snapshot is not None and event.sequence > snapshot.sequence:
                snapshot.apply(event)
        self.applied = max(self.applied, event.sequence)


class EventPump:
    """Follows the stored feed: applies new events to the cache and wakes WatchEvents streams."""

    def __init__(self, store: LifecycleStore, cache: ResolveCache, poll_s: float = 1.0):
        self._store = store
        self._cache = cache
        self._poll_s = poll_s
        self._changed = asyncio.Condition()
        self._catching_up = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self.head = 0
        self.closing = False  # the server is draining: WatchEvents streams end

    async def start(self) -> None:
        self.head = await self._store.head_sequence()
        self._cache.attach(self._store, self.head)
        self._task = asyncio.create_task(self._run(), name="registry-event-pump")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self.catch_up()
                await self._store.wait_for_change(self._poll_s, after_sequence=self.head)
            except asyncio.CancelledError:
                raise
            except BackendUnavailable:
                await asyncio.sleep(self._poll_s)  # the cache keeps answering from memory meanwhile
            except Exception:  # a bug must not stop the pump for good
                log.exception("registry event pump failed; retrying")
                await asyncio.sleep(self._poll_s)

    async def catch_up(self) -> None:
        """Apply what is new now (after a change this replica committed: it reads its own writes)."""
        async with self._catching_up:
            await self._catch_up()

    async def _catch_up(self) -> None:
        head = await self._store.head_sequence()
        while self._cache.applied < head:
            events = await self._store.events_after(self._cache.applied, head, PAGE)
            if not events:
                break
            for event in events:
                self._cache.apply(event)
        self._cache.applied = max(self._cache.applied, head)
        if head > self.head:
            self.head = head
            async with self._changed:
                self._changed.notify_all()

    async def wait_past(self, sequence: int, timeout: float) -> None:
        """Return once the feed's head passed `sequence`, after `timeout` seconds, or at closing."""
        # asyncio.timeout, not wait_for: wait_for runs the wait in a task of its own, which a
        # cancellation at the timeout can leave holding the condition's lock for good.
        try:
            async with self._changed, asyncio.timeout(timeout):
                await self._changed.wait_for(lambda: self.head > sequence or self.closing)
        except TimeoutError:
            pass

    async def close_watches(self) -> None:
        """End every WatchEvents stream (they would hold a draining server for its whole grace period)."""
        self.closing = True
        async with self._changed:
            self._changed.notify_all()


@dataclass(frozen=True)
class FeedBatch:
    events: list[RegistryEvent]
    head: int


async def watch(store: LifecycleStore, pump: EventPump, after: int | None, model_names: Sequence[str],
                types: Sequence[EventType], heartbeat_s: float) -> AsyncIterator[FeedBatch]:
    """Stored events after `after` (None: from now), then live ones; an empty batch is a heartbeat.

    The cursor only moves to a head read before the events up to it were read, and sequences
    commit in order, so a stream never skips an event that commits later."""
    cursor = await store.head_sequence() if after is None else after
    if after is not None:
        first = await store.first_retained_sequence()
        if after < first - 1:
            raise OutOfRange(f"after_sequence {quoted(after)} is older than the retained history, which starts "
                             f"at {first}; reload and watch from its head", reason=ErrorReason.CURSOR_EXPIRED,
                             metadata={"first_retained_sequence": first})
    last_sent = time.monotonic()
    while True:
        head = await store.head_sequence()
        if head > cursor:
            events = await store.events_after(cursor, head, PAGE, model_names, types)
            cursor = events[-1].sequence if len(events) == PAGE else head
            if events:
                yield FeedBatch(events, head)
                last_sent = time.monotonic()
                continue
        quiet = time.monotonic() - last_sent
        if quiet >= heartbeat_s:
            yield FeedBatch([], head)
            last_sent, quiet = time.monotonic(), 0.0
        await pump.wait_past(cursor, heartbeat_s - quiet)
        if pump.closing:
            raise Unavailable("this registry replica is shutting down; watch again after your last sequence",
                              reason=ErrorReason.BACKEND_UNAVAILABLE)

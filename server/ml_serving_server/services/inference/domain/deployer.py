"""The deployer: what TorchServe serves follows the Registry's lifecycle.

A version entering Staging or Production is loaded; one leaving them (or deleted) is unloaded
after a grace period, so requests already routed to it finish. The deployer follows the
Registry's event stream, resuming after its last sequence when the stream breaks or the
process restarts (the cursor store keeps it), and reconciles on start and every few seconds:
what should serve is compared with what does, which repairs any drift (a model loaded or
unloaded by hand, every model gone after a TorchServe restart). What should serve is read
whole from the Registry at start and every few minutes; the events keep it current between.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Protocol

from ....errors import AlreadyExists, DomainError, NotFound
from .model import LoadSpec, Selector, SelectorKind
from .naming import parse_served_name
from .service import InferenceService

log = logging.getLogger(__name__)

SERVING_STAGES = frozenset({"STAGING", "PRODUCTION"})
Key = tuple[str, str]  # (model, version)


@dataclass(frozen=True)
class StageEvent:
    """A Registry event as the deployer needs it; `to_stage` is set for stage changes, and a
    deletion has kind MODEL_DELETED (version "") or VERSION_DELETED."""

    sequence: int
    kind: str  # STAGE_CHANGED, MODEL_DELETED, VERSION_DELETED, or another (ignored)
    model_name: str
    version: str = ""
    to_stage: str = ""


class CursorExpired(Exception):
    """The Registry no longer keeps events that old: start from now (the reconcile covers the gap)."""


class ServingFeed(Protocol):
    async def serving_versions(self) -> tuple[set[Key], int]:
        """Every version in Staging or Production, and the event sequence that answer is current at."""

    def events(self, after: int | None) -> AsyncIterator[list[StageEvent]]:
        """Batches of events after `after` (None: from now on), until the stream breaks; raises
        CursorExpired when `after` is older than the Registry keeps."""


class CursorStore(Protocol):
    async def load(self) -> int | None: ...

    async def save(self, sequence: int) -> None: ...


class Deployer:
    def __init__(self, service: InferenceService, feed: ServingFeed, cursor: CursorStore, *, grace_s: float = 30.0,
                 reconcile_s: float = 10.0, refresh_s: float = 300.0, load_spec: LoadSpec = LoadSpec(),
                 clock: Callable[[], float] = time.monotonic):
        self.service = service
        self.feed = feed
        self.cursor = cursor
        self.grace_s = grace_s
        self.reconcile_s = reconcile_s
        self.load_spec = load_spec
        self.clock = clock
        self.wanted: set[Key] = set()
        self.unload_due: dict[Key, float] = {}
        self.sequence: int | None = None
        self.refresh_s = refresh_s
        self._refreshed_at: float | None = None  # when `wanted` was last read whole from the Registry

    async def run(self) -> None:
        """Forever: follow the events (replaying from the saved cursor first), reconcile meanwhile."""
        try:
            self.sequence = await self.cursor.load()
        except Exception:  # noqa: BLE001 - no cursor: the reconcile alone gives the truth
            log.warning("deployer cursor unreadable; starting from a reconcile")
        await asyncio.gather(self._follow(), self._reconcile_forever())

    async def reconcile(self, refresh: bool = True) -> None:
        """Make the model server serve exactly the Staging and Production versions; `refresh`: read
        them whole from the Registry first (else the events keep `wanted` current)."""
        if refresh:
            wanted, sequence = await self.feed.serving_versions()
            self.wanted = set(wanted)
            self._refreshed_at = self.clock()
            if self.sequence is None:
                self.sequence = sequence
        loaded = await self._loaded()
        for key in sorted(self.wanted - loaded):
            await self._load(key)
        for key in loaded - self.wanted:
            self.unload_due.setdefault(key, self.clock() + self.grace_s)
        for key in self.wanted:
            self.unload_due.pop(key, None)
        await self.unload_expired()

    async def apply(self, event: StageEvent) -> None:
        key = (event.model_name, event.version)
        if event.kind == "STAGE_CHANGED" and event.to_stage in SERVING_STAGES:
            self.wanted.add(key)
            self.unload_due.pop(key, None)
            await self._load(key)
        elif event.kind in ("STAGE_CHANGED", "VERSION_DELETED"):
            self._retire([key])
        elif event.kind == "MODEL_DELETED":
            self._retire([k for k in self.wanted if k[0] == event.model_name])

    async def unload_expired(self) -> None:
        now = self.clock()
        for key, due in sorted(self.unload_due.items()):
            if due > now or key in self.wanted:
                continue
            try:
                await self.service.unload(*key, drain_timeout_s=None)
                log.info("deployer unloaded %s version %s", *key)
            except NotFound:
                pass  # already gone
            except DomainError as error:
                log.warning("deployer could not unload %s version %s: %s", *key, error.message)
                continue  # retried at the next reconcile
            del self.unload_due[key]

    def _retire(self, keys) -> None:
        for key in keys:
            self.wanted.discard(key)
            self.unload_due.setdefault(key, self.clock() + self.grace_s)

    async def _load(self, key: Key) -> None:
        try:
            await self.service.load(key[0], Selector(SelectorKind.VERSION, key[1]), self.load_spec)
            log.info("deployer loaded %s version %s", *key)
        except AlreadyExists:
            pass
        except DomainError as error:  # retried at the next reconcile
            log.warning("deployer could not load %s version %s: %s", *key, error.message)

    async def _loaded(self) -> set[Key]:
        listed = await self.service.backend.list_models()
        return {parsed for name, _ in listed if (parsed := parse_served_name(name)) is not None}

    async def _follow(self) -> None:
        while True:
            try:
                async for batch in self.feed.events(self.sequence):
                    for event in batch:
                        await self.apply(event)
                        self.sequence = event.sequence
                    if batch:
                        await self._save_cursor()
            except asyncio.CancelledError:
                raise
            except CursorExpired:
                log.warning("deployer cursor %s expired; following from now", self.sequence)
                self.sequence = None
                continue
            except Exception as error:  # noqa: BLE001 - the stream broke: resume after the last sequence
                log.info("deployer event stream broke: %s", error)
            await asyncio.sleep(1.0)

    async def _reconcile_forever(self) -> None:
        while True:
            try:
                # Comparing with TorchServe is cheap and catches its restarts; reading every serving
                # version from the Registry is not (it asks MLflow), and the events keep it current.
                stale = self._refreshed_at is None or self.clock() - self._refreshed_at >= self.refresh_s
                await self.reconcile(refresh=stale)
                wait = self.reconcile_s
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the Registry or TorchServe is down (or this
                log.info("deployer reconcile failed: %s", error)  # server is not listening yet): soon again
                wait = min(1.0, self.reconcile_s)
            await asyncio.sleep(wait)

    async def _save_cursor(self) -> None:
        try:
            await self.cursor.save(self.sequence)
        except Exception:  # noqa: BLE001 - a lost cursor costs a replay, not correctness
            log.warning("deployer cursor not saved")

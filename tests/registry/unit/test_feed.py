"""The resolve cache and model snapshots: events applied in order, one load per model, nothing
missed while a model loads. Plain Python: the store is a list of events."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timezone

from ml_serving_server.services.registry.domain.feed import ModelSnapshot, ResolveCache
from ml_serving_server.services.registry.domain.model import EventType, ModelVersion, RegistryEvent, Stage

NOW = datetime(2026, 11, 29, tzinfo=timezone.utc)


def version(number: str, stage: Stage = Stage.DEVELOPMENT, aliases: tuple[str, ...] = ()) -> ModelVersion:
    return ModelVersion("m", number, stage=stage, aliases=aliases)


def event(sequence: int, kind: EventType, number: str = "", mv: ModelVersion | None = None, alias: str = "",
          model: str = "m") -> RegistryEvent:
    return RegistryEvent(kind, NOW, model, number, alias=alias, model_version=mv, sequence=sequence)


class ListStore:
    """events_after over a list: all the cache asks of a LifecycleStore."""

    def __init__(self):
        self.events: list[RegistryEvent] = []

    async def events_after(self, after, up_to, limit, model_names=(), types=()):
        found = [e for e in self.events if after < e.sequence <= up_to and (not model_names or e.model_name in
                                                                             model_names)]
        return found[:limit]


def test_a_snapshot_follows_version_stage_and_alias_events():
    snap = ModelSnapshot("m")
    snap.apply(event(1, EventType.VERSION_CREATED, "1", version("1")))
    snap.apply(event(2, EventType.VERSION_CREATED, "2", version("2")))
    snap.apply(event(3, EventType.STAGE_CHANGED, "1", version("1", Stage.PRODUCTION)))
    snap.apply(event(4, EventType.STAGE_CHANGED, "2", version("2", Stage.STAGING)))
    assert snap.in_stage(Stage.PRODUCTION).version == "1"
    assert snap.in_stage(Stage.STAGING).version == "2"
    snap.apply(event(5, EventType.ALIAS_SET, "1", version("1", Stage.PRODUCTION, ("champion",)), "champion"))
    snap.apply(event(6, EventType.ALIAS_SET, "2", version("2", Stage.STAGING, ("champion",)), "champion"))
    assert snap.with_alias("champion").version == "2"
    assert snap.versions["1"].aliases == ()  # moved, not copied
    snap.apply(event(7, EventType.ALIAS_DELETED, "2", alias="champion"))
    assert snap.with_alias("champion") is None
    snap.apply(event(8, EventType.VERSION_DELETED, "2"))
    assert set(snap.versions) == {"1"} and snap.sequence == 8


def test_the_newest_version_of_a_stage_wins_except_there_is_one_production():
    snap = ModelSnapshot("m", {n: version(n, Stage.STAGING) for n in ("2", "10", "9")})
    assert snap.in_stage(Stage.STAGING).version == "10"  # numerically newest, not "9"
    assert snap.in_stage(Stage.PRODUCTION) is None


async def test_concurrent_misses_load_a_model_once():
    loads = []

    async def loader(name):
        loads.append(name)
        await asyncio.sleep(0.01)
        return ModelSnapshot(name, {"1": version("1", Stage.PRODUCTION)})

    cache = ResolveCache(loader, max_models=10)
    cache.attach(ListStore(), head=0)
    results = await asyncio.gather(*(cache.get("m") for _ in range(20)))
    assert loads == ["m"] and all(r is results[0] for r in results)


async def test_an_unknown_model_is_remembered_briefly_and_forgotten_when_created():
    loads = []

    async def loader(name):
        loads.append(name)
        return None

    cache = ResolveCache(loader, max_models=10, negative_ttl_s=60)
    cache.attach(ListStore(), head=0)
    assert await cache.get("ghost") is None and await cache.get("ghost") is None
    assert loads == ["ghost"]
    cache.apply(event(1, EventType.MODEL_CREATED, model="ghost"))
    await cache.get("ghost")
    assert loads == ["ghost", "ghost"]


async def test_events_committed_while_a_model_loads_are_not_lost():
    store = ListStore()
    cache = ResolveCache(None, max_models=10)  # type: ignore[arg-type]
    cache.attach(store, head=0)

    async def loader(name):
        # While MLflow is read, a promotion commits and the pump applies it (the model is not cached yet).
        promoted = event(1, EventType.STAGE_CHANGED, "1", version("1", Stage.PRODUCTION))
        store.events.append(promoted)
        cache.apply(promoted)
        return ModelSnapshot(name, {"1": version("1", Stage.STAGING)})  # read before the promotion

    cache._loader = loader
    snapshot = await cache.get("m")
    assert snapshot.in_stage(Stage.PRODUCTION).version == "1" and snapshot.sequence == 1


async def test_old_events_do_not_undo_newer_state_and_deletion_drops_the_model():
    async def loader(name):
        return ModelSnapshot(name, {"1": version("1", Stage.PRODUCTION)})

    cache = ResolveCache(loader, max_models=10)
    cache.attach(ListStore(), head=5)
    snapshot = await cache.get("m")
    assert snapshot.sequence == 5
    cache.apply(event(4, EventType.STAGE_CHANGED, "1", version("1", Stage.ARCHIVED)))  # already reflected
    assert snapshot.in_stage(Stage.PRODUCTION) is not None
    cache.apply(event(6, EventType.STAGE_CHANGED, "1", replace(version("1"), stage=Stage.ARCHIVED)))
    assert snapshot.in_stage(Stage.PRODUCTION) is None
    cache.apply(event(7, EventType.MODEL_DELETED))
    assert cache.peek("m") is None


async def test_the_cache_holds_at_most_max_models():
    async def loader(name):
        return ModelSnapshot(name)

    cache = ResolveCache(loader, max_models=3)
    cache.attach(ListStore(), head=0)
    for name in "abcde":
        await cache.get(name)
    assert [n for n in "abcde" if cache.peek(n)] == ["c", "d", "e"]


async def test_a_watch_cancelled_as_its_wait_times_out_leaves_the_feed_usable():
    """A WatchEvents stream cancelled right after its heartbeat wait timed out, while another
    holds the feed's lock, must not leave the lock held: every later wait and close_watches at
    shutdown would hang."""
    from ml_serving_server.services.registry.domain.feed import EventPump

    pump = EventPump(store=None, cache=None)
    watcher = asyncio.create_task(pump.wait_past(0, 0.05))
    await asyncio.sleep(0.01)
    async with pump._changed:  # another stream, or the catch-up's notify, holds it as the timeout fires
        await asyncio.sleep(0.1)
        watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    await asyncio.wait_for(pump.close_watches(), 2.0)  # takes the lock: hung for good before
    assert not pump._changed.locked()
    await asyncio.wait_for(pump.wait_past(0, 5.0), 2.0)  # closing: returns at once

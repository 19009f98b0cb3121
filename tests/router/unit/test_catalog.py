"""The per-replica catalog of experiment definitions over an in-memory store: the change feed,
revisions, selection order, and serving from memory while the store is down. No I/O."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from ml_serving_server.services.router.domain.assignment import Variant, define_experiment
from ml_serving_server.services.router.domain.catalog import ExperimentCatalog
from ml_serving_server.services.router.domain.model import (
    ChangeAction,
    Experiment,
    ExperimentChange,
    ExperimentState,
    OutcomeMetric,
)
from ml_serving_server.services.router.domain.ports import StoreUnavailable
from ml_serving_server.services.router.domain.statistics import MetricKind

from .fakes import EPOCH, MemoryExperimentStore

RUNNING, PAUSED, STOPPED = ExperimentState.RUNNING, ExperimentState.PAUSED, ExperimentState.STOPPED


def experiment(name: str, model: str = "fraud", *, priority: int = 0, state: ExperimentState = RUNNING,
               revision: int = 1, created_s: float | None = None) -> Experiment:
    definition = define_experiment(name, [Variant("control", model, "1", 5000, control=True),
                                          Variant("treatment", model, "2", 5000)], salt="s")
    return Experiment(definition, (OutcomeMetric("click", MetricKind.BINARY),), state=state, priority=priority,
                      revision=revision,
                      create_time=None if created_s is None else EPOCH + timedelta(seconds=created_s))


def change(e: Experiment, action: ChangeAction = ChangeAction.CREATED) -> ExperimentChange:
    return ExperimentChange(e.name, e.revision, action, "test", EPOCH, after=e)


async def create(store: MemoryExperimentStore, e: Experiment) -> Experiment:
    return await store.create(e, change(e))


async def bump(store: MemoryExperimentStore, name: str, **changes) -> Experiment:
    current = store.experiments[name]
    changed = current.with_changes(revision=current.revision + 1, **changes)
    stored = await store.replace(changed, current.revision, change(changed, ChangeAction.UPDATED))
    assert stored is not None
    return stored


async def eventually(check, timeout_s: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting for the follow loop")
        await asyncio.sleep(0.002)


@pytest.fixture
def store():
    return MemoryExperimentStore()


async def test_refresh_loads_everything_then_only_what_changed(store):
    await create(store, experiment("a", "fraud"))
    await create(store, experiment("b", "churn"))
    catalog = ExperimentCatalog(store)
    await catalog.refresh()
    assert catalog.get("a").revision == 1 and catalog.get("b").revision == 1
    assert [e.name for e in catalog.running()] == ["a", "b"]

    paused = await bump(store, "a", state=PAUSED)
    await catalog.refresh()
    assert store.feed_reads == [0, 2]  # from the start, then after the two creates
    assert catalog.get("a") == paused and [e.name for e in catalog.running()] == ["b"]
    await catalog.refresh()
    assert store.feed_reads[-1] == 3  # nothing new: the cursor stays
    assert catalog.get("ghost") is None


async def test_refresh_applies_newer_revisions_only(store):
    await create(store, experiment("a"))
    catalog = ExperimentCatalog(store)
    await catalog.refresh()
    await bump(store, "a", description="by another replica")  # revision 2

    gate = asyncio.Event()
    feed = store.changed_since

    async def slow_feed(cursor):
        answer = await feed(cursor)  # a snapshot holding revision 2 ...
        await gate.wait()  # ... that arrives late
        return answer

    store.changed_since = slow_feed
    refreshing = asyncio.ensure_future(catalog.refresh())
    await eventually(lambda: len(store.feed_reads) == 2)
    mine = await bump(store, "a", description="by this replica")  # revision 3, applied at once
    catalog.put(mine)
    gate.set()
    await refreshing
    assert catalog.get("a") == mine and catalog.get("a").description == "by this replica"
    store.changed_since = feed
    await catalog.refresh()
    assert catalog.get("a") == mine


async def test_put_never_goes_back_a_revision(store):
    catalog = ExperimentCatalog(store)
    catalog.put(experiment("a", revision=3))
    catalog.put(experiment("a", revision=2, state=STOPPED))
    assert catalog.get("a").revision == 3 and [e.name for e in catalog.running()] == ["a"]
    catalog.put(experiment("a", revision=4, state=STOPPED))
    assert catalog.get("a").state is STOPPED and catalog.running() == [] and catalog.running("fraud") == []


async def test_running_is_highest_priority_first_then_oldest(store):
    catalog = ExperimentCatalog(store)
    for e in [experiment("low-old", priority=0, created_s=1), experiment("high-new", priority=7, created_s=50),
              experiment("high-old", priority=7, created_s=10), experiment("mid", priority=3, created_s=5),
              experiment("paused", priority=99, created_s=0, state=PAUSED),
              experiment("stopped", priority=99, created_s=0, state=STOPPED),
              experiment("other-model", model="churn", priority=5, created_s=2),
              experiment("negative", priority=-1, created_s=0)]:
        catalog.put(e)
    assert [e.name for e in catalog.running("fraud")] == ["high-old", "high-new", "mid", "low-old", "negative"]
    assert [e.name for e in catalog.running("churn")] == ["other-model"]
    assert [e.name for e in catalog.running()] == ["high-old", "high-new", "other-model", "mid", "low-old",
                                                   "negative"]
    assert catalog.running("ranker") == []
    # same priority and time: by name, so every replica picks the same one
    catalog.put(experiment("b-twin", model="ranker", created_s=3))
    catalog.put(experiment("a-twin", model="ranker", created_s=3))
    assert [e.name for e in catalog.running("ranker")] == ["a-twin", "b-twin"]


async def test_the_follow_loop_sees_another_replicas_writes(store):
    catalog = ExperimentCatalog(store, poll_s=60)  # a notification, not the poll, wakes it
    await catalog.start()
    try:
        await eventually(lambda: store.waits == 1)  # the loop waits for a notification
        await create(store, experiment("a"))
        await eventually(lambda: catalog.get("a") is not None)
        await eventually(lambda: store.waits == 2)
        await bump(store, "a", state=PAUSED)
        await eventually(lambda: catalog.get("a").state is PAUSED)
        assert catalog.running() == []
    finally:
        await catalog.close()


async def test_a_store_outage_keeps_serving_the_cached_definitions(store, caplog):
    await create(store, experiment("a"))
    store.wait_returns_at_once = True
    catalog = ExperimentCatalog(store, poll_s=0.005)
    await catalog.start()
    try:
        before = catalog.get("a")
        store.down = True
        waits = store.waits
        await eventually(lambda: store.waits >= waits + 3)  # refreshes failed, the loop went on
        assert catalog.get("a") == before and catalog.running("fraud") == [before]
        assert "serving the cached ones" in caplog.text

        store.down = False
        await create(store, experiment("b", "churn"))
        await eventually(lambda: catalog.get("b") is not None)  # recovered by itself
        assert catalog.get("a") == before
    finally:
        await catalog.close()
    waits = store.waits
    await asyncio.sleep(0.02)
    assert store.waits == waits  # closed: the loop is gone


async def test_start_needs_the_store_and_close_is_idempotent(store):
    store.down = True
    catalog = ExperimentCatalog(store)
    with pytest.raises(StoreUnavailable):
        await catalog.start()
    await catalog.close()
    await catalog.close()

"""The BanditStore port's contract, run over every implementation: in memory and over
real Redis. The in-memory store backs the domain's unit tests, so it must behave as the
real one does."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from ml_serving_server.services.bandit.domain.model import (
    ArmCounts,
    ArmDefinition,
    BanditDefinition,
    Decision,
    RewardEvent,
    RewardOutcome,
)
from ml_serving_server.services.bandit.memory_store import MemoryBanditStore
from ml_serving_server.services.bandit.redis_store import RedisBanditStore


@pytest.fixture(params=["memory", "redis"])
async def store(request, redis_url, key_prefix):
    if request.param == "memory":
        yield MemoryBanditStore()
        return
    # A prefix of its own per test, so listings see only this test's bandits.
    redis_store = RedisBanditStore.from_url(redis_url, f"{key_prefix}:contract:{uuid.uuid4().hex[:8]}", 2.0)
    yield redis_store
    await redis_store.close()


def definition(name: str, *arm_ids: str, dimension: int = 0, created: datetime | None = None) -> BanditDefinition:
    created = created or datetime.now(timezone.utc)
    return BanditDefinition(name=name, arms=tuple(ArmDefinition(a) for a in arm_ids), context_dimension=dimension,
                            create_time=created, update_time=created)


def reward(d: BanditDefinition, arm: str, value: float, event_id: str = "", context=(), decision_id="") -> RewardEvent:
    return RewardEvent(d.name, d.incarnation, arm, value, event_id, tuple(context), 60, decision_id)


APPLIED, DUPLICATE, CONFLICT, GONE = (RewardOutcome.APPLIED, RewardOutcome.DUPLICATE, RewardOutcome.CONFLICT,
                                      RewardOutcome.BANDIT_GONE)


async def test_create_is_once_per_name_and_round_trips_the_definition(store):
    d = definition("b", "x", "y", dimension=2)
    assert await store.create(d)
    assert not await store.create(definition("b", "z"))
    assert await store.get_definition("b") == d
    assert await store.get_definition("other") is None


async def test_listing_is_in_name_order_after_a_cursor(store):
    for name in ("c", "a", "b", "d"):
        await store.create(definition(name, "x"))
    assert [d.name for d in await store.list_definitions("", 10)] == ["a", "b", "c", "d"]
    assert [d.name for d in await store.list_definitions("a", 2)] == ["b", "c"]
    assert await store.list_definitions("d", 10) == []


async def test_replace_is_compare_and_set_on_the_version(store):
    d = definition("b", "x")
    await store.create(d)
    version, _ = await store.load_counts("b")
    changed = d.with_changes(arms=d.arms + (ArmDefinition("y"),))
    assert await store.replace_definition(changed, version) is True
    assert await store.replace_definition(changed, version) is False  # the version moved
    assert (await store.get_definition("b")).arm_ids() == ["x", "y"]
    assert (await store.load_counts("b"))[0] == version + 1
    assert await store.replace_definition(definition("gone", "x"), version) is None


async def test_delete_removes_the_bandit_and_its_evidence(store):
    d = definition("b", "x", dimension=1)
    await store.create(d)
    await store.apply_rewards([reward(d, "x", 1.0, context=[2.0])])
    assert await store.delete("b")
    assert not await store.delete("b")
    assert await store.get_definition("b") is None and await store.load_counts("b") is None
    recreated = definition("b", "x", dimension=1, created=d.create_time + timedelta(seconds=1))
    await store.create(recreated)
    assert (await store.load_counts("b"))[1] == {}
    assert await store.load_linear("b", 1) == {}


async def test_rewards_count_once_per_event_id(store):
    d = definition("b", "x", "y")
    await store.create(d)
    outcomes = await store.apply_rewards([reward(d, "x", 1.0, "e1"), reward(d, "x", 1.0, "e1"),
                                          reward(d, "y", 0.25), reward(d, "y", 0.25)])
    assert outcomes == [APPLIED, DUPLICATE, APPLIED, APPLIED]  # no event id: never deduplicated
    _, counts = await store.load_counts("b")
    assert counts["x"] == ArmCounts(pulls=0, reward_count=1, reward_sum=1.0, failure_sum=0.0)
    assert counts["y"] == ArmCounts(pulls=0, reward_count=2, reward_sum=0.5, failure_sum=1.5)


@pytest.mark.parametrize("other", [
    dict(arm="y", value=1.0, context=(1.0,)),
    dict(arm="x", value=0.5, context=(1.0,)),
    dict(arm="x", value=1.0, context=(2.0,)),
], ids=["another arm", "another reward", "another context"])
async def test_an_event_id_reused_for_other_content_is_a_conflict_that_changes_nothing(store, other):
    d = definition("b", "x", "y", dimension=1)
    await store.create(d)
    first = reward(d, "x", 1.0, "e1", context=(1.0,))
    reused = reward(d, other["arm"], other["value"], "e1", context=other["context"])
    assert await store.apply_rewards([first, reused, first]) == [APPLIED, CONFLICT, DUPLICATE]
    _, counts = await store.load_counts("b")
    assert set(counts) == {"x"} and counts["x"].reward_count == 1 and counts["x"].reward_sum == 1.0
    assert set(await store.load_linear("b", 1)) == {"x"}


async def test_event_ids_are_scoped_to_their_decision(store):
    d = definition("b", "x")
    await store.create(d)
    click = [reward(d, "x", 1.0, "click", decision_id="d-1"), reward(d, "x", 1.0, "click", decision_id="d-2"),
             reward(d, "x", 1.0, "click"), reward(d, "x", 1.0, "click", decision_id="d-1")]
    assert await store.apply_rewards(click) == [APPLIED, APPLIED, APPLIED, DUPLICATE]
    assert await store.apply_rewards([reward(d, "x", 0.0, "click", decision_id="d-2")]) == [CONFLICT]
    assert (await store.load_counts("b"))[1]["x"].reward_count == 3


async def test_markers_written_before_fingerprints_still_count_as_duplicates(redis_url, key_prefix):
    """Markers of an earlier release hold "1" instead of a fingerprint: a retry stays a duplicate."""
    store = RedisBanditStore.from_url(redis_url, f"{key_prefix}:contract:{uuid.uuid4().hex[:8]}", 2.0)
    try:
        d = definition("b", "x")
        await store.create(d)
        plain, of_decision = reward(d, "x", 1.0, "e-old"), reward(d, "x", 1.0, "e-old", decision_id="d-1")
        await store._redis.set(store._event_keys(plain)[0], "1", ex=60)  # then, markers were bandit-wide
        assert await store.apply_rewards([plain, of_decision]) == [DUPLICATE, DUPLICATE]
        assert await store.apply_rewards([reward(d, "x", 1.0, "e-new", decision_id="d-1")]) == [APPLIED]
    finally:
        await store.close()


async def test_a_gone_incarnation_takes_no_rewards_pulls_or_decisions(store):
    old = definition("b", "x")
    await store.create(old)
    await store.delete("b")
    new = definition("b", "x", created=old.create_time + timedelta(seconds=1))
    await store.create(new)
    assert await store.apply_rewards([reward(old, "x", 1.0, "e1")]) == [GONE]
    await store.add_pulls("b", old.incarnation, {"x": 5})
    decision = Decision("d-old", "b", ("x",), time=old.create_time)
    assert not await store.record_decision(decision, old.incarnation, 60)
    assert (await store.load_counts("b"))[1] == {}
    assert await store.apply_rewards([reward(new, "x", 1.0, "e1")]) == [APPLIED]  # old markers do not shadow


async def test_pulls_and_decisions(store):
    d = definition("b", "x", "y", dimension=2)
    await store.create(d)
    await store.add_pulls("b", d.incarnation, {"x": 3, "y": 1})
    decision = Decision("d-1", "b", ("y",), context=(1.0, 2.0), user_id="u", time=d.create_time)
    assert await store.record_decision(decision, d.incarnation, 60)
    assert await store.get_decisions(["d-1", "nope"]) == [decision, None]
    _, counts = await store.load_counts("b")
    assert (counts["x"].pulls, counts["y"].pulls) == (3, 2)


async def test_linear_sums_accumulate_per_arm(store):
    d = definition("b", "x", "y", dimension=2)
    await store.create(d)
    await store.apply_rewards([reward(d, "x", 1.0, context=[1.0, 2.0]), reward(d, "x", 0.5, context=[3.0, -1.0])])
    sums = await store.load_linear("b", 2)
    assert set(sums) == {"x"}
    xx, rx = sums["x"]
    np.testing.assert_allclose(xx, np.outer([1, 2], [1, 2]) + np.outer([3, -1], [3, -1]))
    np.testing.assert_allclose(rx, [1.0 * 1 + 0.5 * 3, 1.0 * 2 + 0.5 * -1])


async def test_the_decision_key_is_stable(store):
    key = await store.decision_key()
    assert len(key) >= 16 and await store.decision_key() == key

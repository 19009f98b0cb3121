"""The BanditStore port's contract, run over every implementation: in memory and over
real Redis. The in-memory store backs the domain's unit tests, so it must behave as the
real one does."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from ml_serving_server.services.bandit.domain.forgetting import fade
from ml_serving_server.services.bandit.domain.model import (
    ArmCounts,
    ArmDefinition,
    BanditDefinition,
    Decision,
    RewardEvent,
    RewardOutcome,
)
from ml_serving_server.services.bandit.memory_store import MemoryBanditStore
from ml_serving_server.services.bandit import redis_store
from ml_serving_server.services.bandit.redis_store import RedisBanditStore


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def store(request, redis_url, key_prefix):
    if request.param == "memory":
        yield MemoryBanditStore()
        return
    # A prefix of its own per test, so listings see only this test's bandits.
    prefix = f"{key_prefix}:contract:{uuid.uuid4().hex[:8]}"
    if request.param == "redis-cluster":
        redis_store = RedisBanditStore.from_url(request.getfixturevalue("redis_cluster_url"), prefix, 2.0, cluster=True)
    else:
        redis_store = RedisBanditStore.from_url(redis_url, prefix, 2.0)
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
    assert (await store.load_counts("b"))[1] == {}
    assert await store.apply_rewards([reward(new, "x", 1.0, "e1")]) == [APPLIED]  # old markers do not shadow


async def store_as_an_earlier_release_did(store, decision: Decision) -> None:
    """Contextual decisions used to be stored (ids now carry them): those still in a store stay readable."""
    if isinstance(store, MemoryBanditStore):
        store._decisions[decision.id] = decision
    else:
        await store._redis.set(store._decision_key(decision.id), redis_store._dump_decision(decision), ex=60)


async def test_pulls_and_decisions_of_an_earlier_release(store):
    d = definition("b", "x", "y", dimension=2)
    await store.create(d)
    await store.add_pulls("b", d.incarnation, {"x": 3, "y": 1})
    decision = Decision("d-1", "b", ("y",), context=(1.0, 2.0), user_id="u", time=d.create_time)
    await store_as_an_earlier_release_did(store, decision)
    assert await store.get_decisions(["d-1", "nope"]) == [decision, None]
    _, counts = await store.load_counts("b")
    assert (counts["x"].pulls, counts["y"].pulls) == (3, 1)


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


# ----- forgetting (a bandit with a discount) -----

def forgetting(d: BanditDefinition, arm: str, value: float, discount: float, context=()) -> RewardEvent:
    return RewardEvent(d.name, d.incarnation, arm, value, "", tuple(context), 60, "", discount)


def kept(arm: str, rewarded: str, discount: float) -> float:
    """What a reward to `rewarded` keeps of `arm`'s evidence (domain/forgetting.py)."""
    return (1 - fade(discount)) * ((1 - discount) if arm == rewarded else 1.0)


def expected_evidence(rewards: list[tuple[str, float]], discount: float) -> dict[str, tuple[float, float]]:
    """Directly: before each reward, every arm's evidence times what that reward keeps of it."""
    evidence: dict[str, tuple[float, float]] = {}
    for arm, value in rewards:
        evidence = {a: (s * kept(a, arm, discount), f * kept(a, arm, discount)) for a, (s, f) in evidence.items()}
        s, f = evidence.get(arm, (0.0, 0.0))
        evidence[arm] = (s + value, f + 1 - value)
    return evidence


# 0.5 passes an arm's rescaling point (weight 1e100) every ~330 of its rewards, and the bandit's
# (fade 0.02) after ~11,400 rewards.
@pytest.mark.parametrize("discount, count", [(0.01, 700), (0.5, 12_000)])
async def test_a_discount_forgets_an_arms_evidence_on_its_rewards_and_fades_all(store, discount, count):
    d = definition("b", "x", "y", "z")
    await store.create(d)
    rng = np.random.default_rng(7)
    rewards = [(str(rng.choice(["x", "y"])), float(rng.choice([0.0, 0.25, 1.0]))) for _ in range(count)]
    for start in range(0, count, 500):
        batch = rewards[start:start + 500]
        assert await store.apply_rewards([forgetting(d, a, v, discount) for a, v in batch]) == [APPLIED] * len(batch)
    _, counts = await store.load_counts("b")
    for arm, (successes, failures) in expected_evidence(rewards, discount).items():
        assert counts[arm].discounted == pytest.approx((successes, failures), rel=1e-9, abs=1e-12)
        # the plain sums still count everything: GetStats reports them
        assert counts[arm].reward_sum == pytest.approx(sum(v for a, v in rewards if a == arm))
        assert counts[arm].reward_count == sum(1 for a, _ in rewards if a == arm)
    assert "z" not in counts or counts["z"].discounted is None  # never rewarded: nothing to forget


async def test_a_discount_forgets_the_linear_evidence_too(store):
    d = definition("b", "x", "y", dimension=2)
    await store.create(d)
    discount, rng = 0.5, np.random.default_rng(3)
    gram = {a: np.zeros((2, 2)) for a in "xy"}
    target = {a: np.zeros(2) for a in "xy"}
    for _ in range(400):  # past the rescaling point: the linear sums are rescaled with the counts
        arm, x, value = str(rng.choice(["x", "y"])), rng.normal(size=2), float(rng.random())
        assert await store.apply_rewards([forgetting(d, arm, value, discount, context=x)]) == [APPLIED]
        for a in "xy":
            gram[a], target[a] = gram[a] * kept(a, arm, discount), target[a] * kept(a, arm, discount)
        gram[arm], target[arm] = gram[arm] + np.outer(x, x), target[arm] + value * x
    sums = await store.load_linear("b", 2)
    for a in "xy":
        np.testing.assert_allclose(sums[a][0], gram[a], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(sums[a][1], target[a], rtol=1e-9, atol=1e-12)


async def test_concurrent_rewards_with_a_discount_lose_nothing(store):
    d = definition("b", "x", "y")
    await store.create(d)
    discount, n = 0.01, 300
    events = [forgetting(d, "x", 1.0, discount) for _ in range(n)]
    # in any order: the evidence after n rewards of 1 to one arm is sum over j < n of keep^j
    await asyncio.gather(*(store.apply_rewards([event]) for event in events))
    _, counts = await store.load_counts("b")
    keep = kept("x", "x", discount)
    assert counts["x"].discounted[0] == pytest.approx(sum(keep**j for j in range(n)), rel=1e-9)
    assert counts["x"].reward_count == n

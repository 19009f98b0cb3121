"""Two bandit services sharing one real Redis, as two replicas would: one Redis, and a
three-node Redis Cluster."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from ml_serving_server.errors import Aborted, InvalidArgument, NotFound
from ml_serving_server.services.bandit.domain.forgetting import fade
from ml_serving_server.services.bandit.domain.model import ArmDefinition, BanditDefinition, RewardInput
from ml_serving_server.services.bandit.domain.service import BanditService
from ml_serving_server.services.bandit.redis_store import RedisBanditStore


@pytest.fixture(params=["redis", "redis-cluster"])
def shared_redis(request, redis_url) -> tuple[str, bool]:
    """(url, whether it is a cluster) of the Redis both replicas use."""
    if request.param == "redis-cluster":
        return request.getfixturevalue("redis_cluster_url"), True
    return redis_url, False


@contextlib.asynccontextmanager
async def two_replicas(redis: tuple[str, bool], key_prefix):
    # A context manager in the test rather than a fixture: pytest-asyncio's teardown of
    # function-scoped async fixtures did not see the test's background tasks finish.
    url, cluster = redis
    stores = [RedisBanditStore.from_url(url, key_prefix, 2.0, cluster=cluster) for _ in range(2)]
    services = [BanditService(store, max_state_age_s=0.0) for store in stores]
    try:
        yield services
    finally:
        for service, store in zip(services, stores):
            await service.close()
            await store.close()


def bandit(name: str, *arm_ids: str, dimension: int = 0) -> BanditDefinition:
    return BanditDefinition(name=name, arms=tuple(ArmDefinition(a) for a in arm_ids), context_dimension=dimension)


async def test_a_bandit_recreated_on_another_replica_replaces_the_old_one_everywhere(shared_redis, key_prefix):
    async with two_replicas(shared_redis, key_prefix) as (a, b):
        await _recreated(a, b)


async def _recreated(a, b):
    name = f"re-{uuid.uuid4().hex[:8]}"
    await a.create_bandit(bandit(name, "old1", "old2", dimension=2))
    old = (await a.select(name, 2, (), "")).decision
    old_contextual = (await a.select_contextual(name, [1.0, 2.0], None, (), "")).decision

    await b.delete_bandit(name)
    await b.create_bandit(bandit(name, "new1", "new2", dimension=3))

    assert {c.arm_id for c in (await a.select(name, 2, (), "")).choices} == {"new1", "new2"}
    for stale in (old, old_contextual):
        with pytest.raises(NotFound):
            await a.reward(RewardInput(decision_id=stale.id, arm_id=stale.arm_ids[0], reward=1))
    with pytest.raises(InvalidArgument):
        await a.reward(RewardInput(bandit=name, arm_id="old1", reward=1))
    fresh = await a.select_contextual(name, [1.0, 2.0, 3.0], None, (), "")
    await b.reward(RewardInput(decision_id=fresh.decision.id, reward=1))  # decided on a, rewarded on b
    stats = await b.stats(name)
    assert stats.total_reward_count == 1 and [s.arm_id for s in stats.arms] == ["new1", "new2"]


async def test_concurrent_updates_on_two_replicas_lose_nothing(shared_redis, key_prefix):
    async with two_replicas(shared_redis, key_prefix) as (a, b):
        await _concurrent_updates(a, b)


async def _concurrent_updates(a, b):
    name = f"upd-{uuid.uuid4().hex[:8]}"
    await a.create_bandit(bandit(name, "base"))

    async def add(service, arm):
        for _ in range(20):  # what a client does on ABORTED: read again and retry
            try:
                return await service.update_bandit(name, "", [ArmDefinition(arm)], [], [])
            except Aborted:
                await asyncio.sleep(0)
        raise AssertionError("update never went through")

    await asyncio.gather(*(add(service, f"arm{i}") for i, service in enumerate([a, b] * 4)))
    final = await a.get_bandit(name)
    assert sorted(final.arm_ids()) == sorted(["base"] + [f"arm{i}" for i in range(8)])


async def test_a_selection_on_one_replica_is_rewardable_on_the_other(shared_redis, key_prefix):
    async with two_replicas(shared_redis, key_prefix) as (a, b):
        await _cross_replica(a, b)


async def _cross_replica(a, b):
    name = f"x-{uuid.uuid4().hex[:8]}"
    await a.create_bandit(bandit(name, "p", "q"))
    decision = (await a.select(name, None, (), "")).decision
    duplicate, event = await b.reward(RewardInput(decision_id=decision.id, reward=0.5, event_id="e"))
    assert not duplicate and event.arm_id == decision.arm_ids[0]
    await a.close()  # a's pull tally reaches Redis when it closes, as on SIGTERM
    stats = await b.stats(name)
    assert stats.total_pulls == 1 and stats.total_reward_count == 1


async def test_rewards_on_two_replicas_of_a_discounted_bandit_are_all_forgotten_exactly(shared_redis, key_prefix):
    async with two_replicas(shared_redis, key_prefix) as (a, b):
        name = f"drift-{uuid.uuid4().hex[:8]}"
        await a.create_bandit(BanditDefinition(name=name, arms=(ArmDefinition("x"), ArmDefinition("y")),
                                               discount=0.01))
        n = 400

        async def reward(service, i):
            await service.reward(RewardInput(bandit=name, arm_id="x", reward=1.0, event_id=f"e{i}"))

        await asyncio.gather(*(reward(a if i % 2 else b, i) for i in range(n)))
        stats = await b.stats(name)
        # n rewards of 1 to one arm, in whatever order the replicas applied them: sum over j < n
        # of keep^j, keep what each reward keeps of its arm's evidence (forgotten and faded)
        keep = 0.99 * (1 - fade(0.01))
        evidence = sum(arm.alpha - 1.0 for arm in stats.arms)
        assert evidence == pytest.approx(sum(keep ** j for j in range(n)), rel=1e-9)
        assert stats.total_reward_count == n

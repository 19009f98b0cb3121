"""Four server processes, one Redis, 20,000 concurrent rewards of which 10% repeat an
event id: the stats must equal the exact expected counts (no lost or double update)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter

import grpc
import pytest
from mnbara.mlserving.bandit.v1 import bandit_pb2 as pb
from mnbara.mlserving.bandit.v1 import bandit_pb2_grpc

from ml_serving_tools import stack as stack_module

from ...support import BearerToken

SERVERS = 4
TOTAL = 8_000
REPEATED = TOTAL // 10
ARMS = ["a", "b", "c", "d", "e"]
IN_FLIGHT = 128


@pytest.fixture(scope="module")
def servers(tmp_path_factory, stack_env):
    state = tmp_path_factory.mktemp("replicas")
    procs, addrs = [], []
    try:
        for index in range(SERVERS):
            addr = f"127.0.0.1:{stack_module.free_port()}"
            env = {**stack_env, "MESH_GRPC_ADDR": addr, "MESH_SERVICES": "bandit", "MESH_METRICS_ADDR": "",
                   "MESH_ACCESS_LOG": "false"}
            procs.append(stack_module.start_mesh(env, state / f"replica-{index}.log"))
            addrs.append(addr)
        yield addrs
    finally:
        for proc in procs:
            stack_module.stop(proc)


def plan(seed: int = 7) -> tuple[list[pb.RewardRequest], Counter, dict[str, float]]:
    """20,000 rewards: 18,000 distinct events plus 2,000 copies of earlier ones, shuffled."""
    rng = random.Random(seed)
    unique = [pb.RewardRequest(arm_id=ARMS[i % len(ARMS)], reward=rng.choice((0.0, 0.25, 0.5, 1.0)),
                               event_id=f"ev-{i}") for i in range(TOTAL - REPEATED)]
    copies = [unique[i] for i in rng.sample(range(len(unique)), REPEATED)]
    rewards = unique + copies
    rng.shuffle(rewards)
    counts = Counter(r.arm_id for r in unique)
    sums: dict[str, float] = {}
    for r in unique:
        sums[r.arm_id] = sums.get(r.arm_id, 0.0) + r.reward
    return rewards, counts, sums


async def send_all(addrs: list[str], bandit: str, rewards: list[pb.RewardRequest], token: str) -> Counter:
    channels = [grpc.aio.insecure_channel(a, interceptors=[BearerToken(token)]) for a in addrs]
    stubs = [bandit_pb2_grpc.BanditServiceStub(c) for c in channels]
    outcome: Counter = Counter()
    queue = list(enumerate(rewards))

    async def worker():
        while queue:
            index, reward = queue.pop()
            reward = pb.RewardRequest(bandit=bandit, arm_id=reward.arm_id, reward=reward.reward,
                                      event_id=reward.event_id)
            reply = await stubs[index % len(stubs)].Reward(reward, timeout=30)
            outcome["duplicate" if reply.duplicate else "applied"] += 1

    try:
        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    finally:
        for channel in channels:
            await channel.close()
    return outcome


async def test_concurrent_rewards_from_four_replicas_are_exact(servers, token):
    bandit = f"conc-{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(servers[0], interceptors=[BearerToken(token)]) as channel:
        stub = bandit_pb2_grpc.BanditServiceStub(channel)
        await stub.CreateBandit(pb.CreateBanditRequest(bandit=pb.Bandit(name=bandit, arms=[pb.Arm(id=a)
                                                                                           for a in ARMS])))
        rewards, counts, sums = plan()
        outcome = await send_all(servers, bandit, rewards, token)
        stats = await stub.GetStats(pb.GetStatsRequest(bandit=bandit))

    assert outcome == {"applied": TOTAL - REPEATED, "duplicate": REPEATED}
    assert stats.total_reward_count == TOTAL - REPEATED
    for arm in stats.arms:
        assert arm.reward_count == counts[arm.arm_id]
        assert arm.reward_sum == sums[arm.arm_id]  # quarters add exactly in binary floating point
        assert arm.posterior_alpha == 1.0 + sums[arm.arm_id]
        assert arm.posterior_beta == 1.0 + counts[arm.arm_id] - sums[arm.arm_id]

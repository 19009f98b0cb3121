"""The Bandit's domain metrics through a real server and Redis: selections per chosen arm,
rewards and their values per arm when applied (a duplicate counts nothing), BatchReward too."""

from __future__ import annotations

import uuid

import pytest
from mnbara.mlserving.bandit.v1 import bandit_pb2 as pb
from mnbara.mlserving.bandit.v1 import bandit_pb2_grpc
from prometheus_client import REGISTRY

from ml_serving_server.runtime import metric_labels


def sample(name: str, bandit: str, arm: str) -> float:
    return REGISTRY.get_sample_value(name, {"bandit": bandit, "arm": arm}) or 0.0


@pytest.fixture(autouse=True)
def fresh_label_bounds(monkeypatch):
    """The session's other tests may have used up the names a label admits: these start afresh."""
    monkeypatch.setattr(metric_labels, "BOUNDS", metric_labels.LabelBounds())


@pytest.fixture
def stub(channel):
    return bandit_pb2_grpc.BanditServiceStub(channel)


async def new_bandit(stub, **fields) -> str:
    name = f"metrics-{uuid.uuid4().hex[:10]}"
    await stub.CreateBandit(pb.CreateBanditRequest(bandit=pb.Bandit(name=name, arms=[pb.Arm(id=a) for a in "abc"],
                                                                    **fields)))
    return name


async def test_selections_count_each_chosen_arm(stub):
    name = await new_bandit(stub, context_dimension=2)
    chosen = (await stub.Select(pb.SelectRequest(bandit=name, k=2))).choices
    contextual = (await stub.SelectContextual(pb.SelectContextualRequest(bandit=name, context=[1.0, 0.5]))).choices
    expected = {arm: 0 for arm in "abc"}
    for choice in [*chosen, *contextual]:
        expected[choice.arm_id] += 1
    assert {arm: sample("mlserving_bandit_selections_total", name, arm) for arm in "abc"} == expected
    assert sum(expected.values()) == 3


async def test_rewards_count_once_with_their_values(stub):
    name = await new_bandit(stub)
    decision = await stub.Select(pb.SelectRequest(bandit=name))
    arm = decision.choices[0].arm_id
    reward = pb.RewardRequest(decision_id=decision.decision_id, reward=0.75, event_id="click-1")
    assert not (await stub.Reward(reward)).duplicate
    assert (await stub.Reward(reward)).duplicate  # the same event again changes nothing
    await stub.BatchReward(pb.BatchRewardRequest(rewards=[
        pb.RewardRequest(bandit=name, arm_id="b", reward=1.0, event_id="batch-1"),
        pb.RewardRequest(bandit=name, arm_id="b", reward=0.5, event_id="batch-2"),
        pb.RewardRequest(decision_id=decision.decision_id, reward=0.75, event_id="click-1")]))  # a duplicate
    counts = {a: sample("mlserving_bandit_rewards_total", name, a) for a in "abc"}
    values = {a: sample("mlserving_bandit_reward_value_total", name, a) for a in "abc"}
    expected_counts, expected_values = dict.fromkeys("abc", 0.0), dict.fromkeys("abc", 0.0)
    for reward_arm, value in ((arm, 0.75), ("b", 1.0), ("b", 0.5)):
        expected_counts[reward_arm] += 1
        expected_values[reward_arm] += value
    assert counts == expected_counts
    assert values == pytest.approx(expected_values)

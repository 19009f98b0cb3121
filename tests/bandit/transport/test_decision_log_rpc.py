"""ListDecisions and EvaluatePolicy through a real server: the log in the session's PostgreSQL."""

from __future__ import annotations

import uuid

import grpc
import numpy as np
import pytest
from google.protobuf import timestamp_pb2
from mnbara.mlserving.bandit.v1 import bandit_pb2 as pb
from mnbara.mlserving.bandit.v1 import bandit_pb2_grpc

from .test_rpc import expect_error


@pytest.fixture
def stub(channel):
    return bandit_pb2_grpc.BanditServiceStub(channel)


async def create(stub, arms=("a", "b", "c"), **fields) -> str:
    name = f"log-{uuid.uuid4().hex[:10]}"
    await stub.CreateBandit(pb.CreateBanditRequest(bandit=pb.Bandit(name=name, arms=[pb.Arm(id=a) for a in arms],
                                                                    **fields)))
    return name


async def test_decisions_are_listed_with_propensities_rewards_and_context(stub):
    name = await create(stub, context_dimension=2)
    plain = await stub.Select(pb.SelectRequest(bandit=name, k=2, user_id="u-1"))
    contextual = await stub.SelectContextual(pb.SelectContextualRequest(bandit=name, context=[0.5, 2.0],
                                                                        candidate_arm_ids=["a", "c"]))
    await stub.Reward(pb.RewardRequest(decision_id=plain.decision_id, arm_id=plain.choices[1].arm_id, reward=1))
    first = await stub.ListDecisions(pb.ListDecisionsRequest(bandit=name, page_size=1))
    second = await stub.ListDecisions(pb.ListDecisionsRequest(bandit=name, page_size=1,
                                                              page_token=first.next_page_token))
    [newest], [older] = first.decisions, second.decisions
    assert (newest.decision_id, older.decision_id) == (contextual.decision_id, plain.decision_id)
    assert list(newest.context) == [0.5, 2.0] and list(newest.offered_arm_ids) == ["a", "c"]
    assert newest.algorithm == pb.CONTEXTUAL_ALGORITHM_LINEAR_THOMPSON
    assert newest.propensity == pytest.approx(0.5, abs=1e-3)  # two arms, no evidence: a coin
    assert (older.user_id, older.reward_sum, older.reward_count) == ("u-1", 1.0, 1)
    assert [c.arm_id for c in older.choices] == [c.arm_id for c in plain.choices]
    # Monte Carlo over 3,000 draws: standard error 0.0086; 0.04 is over 4 of them
    assert older.propensity == pytest.approx(1 / 3, abs=0.04)
    assert list(older.choice_probabilities) == pytest.approx([2 / 3, 2 / 3], abs=0.04)
    assert second.next_page_token == "" and older.algorithm == pb.CONTEXTUAL_ALGORITHM_UNSPECIFIED


async def test_a_fixed_candidate_is_evaluated_on_the_logged_traffic(stub):
    name = await create(stub, prior_alpha=20, prior_beta=20)
    means = {"a": 0.2, "b": 0.6, "c": 0.4}
    coins = np.random.default_rng(3).random(600)
    for i, coin in enumerate(coins):
        decision = await stub.Select(pb.SelectRequest(bandit=name))
        arm = decision.choices[0].arm_id
        await stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, reward=float(coin < means[arm]),
                                           event_id=f"e{i}"))
    reply = await stub.EvaluatePolicy(pb.EvaluatePolicyRequest(bandit=name, arm_probabilities={"b": 1.0}))
    assert (reply.decision_count, reply.rewarded_count) == (600, 600)
    assert [e.estimator for e in reply.estimates] == [pb.OFF_POLICY_ESTIMATOR_IPS, pb.OFF_POLICY_ESTIMATOR_SNIPS,
                                                      pb.OFF_POLICY_ESTIMATOR_DOUBLY_ROBUST]
    for estimate in reply.estimates:
        # the live policy's draws are not seeded: a 95% interval misses 1 run in 20, so allow 4 standard errors
        standard_error = (estimate.confidence_interval_upper - estimate.confidence_interval_lower) / (2 * 1.96)
        assert abs(estimate.value - 0.6) <= 4 * standard_error, estimate
    learning = await stub.EvaluatePolicy(pb.EvaluatePolicyRequest(
        bandit=name, policy=pb.CandidatePolicy(prior_alpha=1, prior_beta=1),
        estimators=[pb.OFF_POLICY_ESTIMATOR_SNIPS]))
    [snips] = learning.estimates
    assert 0.2 <= snips.value <= 0.7 and snips.confidence_interval_lower < snips.confidence_interval_upper


@pytest.mark.parametrize("request_fields, field", [
    ({"arm_probabilities": {"nope": 1.0}}, "arm_probabilities"),
    ({}, "policy"),
    ({"policy": pb.CandidatePolicy(discount=2.0)}, "policy.discount"),
    ({"policy": pb.CandidatePolicy(), "estimators": [7]}, "estimators[0]"),
    ({"arm_probabilities": {"a": 1.0}, "start_time": timestamp_pb2.Timestamp(seconds=10),
      "end_time": timestamp_pb2.Timestamp(seconds=5)}, "end_time"),
    ({"arm_probabilities": {"a": 1.0}, "start_time": timestamp_pb2.Timestamp(seconds=10**15)}, "start_time"),
])
async def test_bad_evaluations_name_their_field(stub, request_fields, field):
    name = await create(stub)
    await stub.Select(pb.SelectRequest(bandit=name))
    info = await expect_error(stub.EvaluatePolicy(pb.EvaluatePolicyRequest(bandit=name, **request_fields)),
                              grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_ARM" if field == "arm_probabilities"
                              else "INVALID_FIELD")
    assert info.metadata["field"] == field


async def test_the_log_of_a_missing_bandit_is_not_found(stub):
    await expect_error(stub.ListDecisions(pb.ListDecisionsRequest(bandit="never-made")),
                       grpc.StatusCode.NOT_FOUND, "BANDIT_NOT_FOUND")
    await expect_error(stub.ListDecisions(pb.ListDecisionsRequest(bandit="b", page_token="x" * 300)),
                       grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN")

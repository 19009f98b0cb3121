"""BanditService through a real server and real Redis: results, status codes, ErrorInfo reasons."""

from __future__ import annotations

import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from mnbara.mlserving.bandit.v1 import bandit_pb2 as pb
from mnbara.mlserving.bandit.v1 import bandit_pb2_grpc

from ...support import error_info


async def expect_error(call, code: grpc.StatusCode, reason: str) -> error_details_pb2.ErrorInfo:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    info = error_info(caught.value)
    assert info.reason == reason
    assert info.domain == "bandit.mlserving.mnbara"
    return info


@pytest.fixture
def stub(channel):
    return bandit_pb2_grpc.BanditServiceStub(channel)


def new_name() -> str:
    return f"b-{uuid.uuid4().hex[:10]}"


async def create(stub, arms=("a", "b", "c"), **fields) -> str:
    name = new_name()
    await stub.CreateBandit(pb.CreateBanditRequest(bandit=pb.Bandit(name=name, arms=[pb.Arm(id=a) for a in arms],
                                                                    **fields)))
    return name


async def test_create_get_list_update_delete(stub):
    name = await create(stub, description="hello")
    got = (await stub.GetBandit(pb.GetBanditRequest(name=name))).bandit
    assert [a.id for a in got.arms] == ["a", "b", "c"]
    assert got.prior_alpha == 1.0 and got.decision_ttl_seconds == 7 * 24 * 3600
    assert got.create_time.seconds > 0
    await expect_error(stub.CreateBandit(pb.CreateBanditRequest(bandit=pb.Bandit(name=name, arms=[pb.Arm(id="x")]))),
                       grpc.StatusCode.ALREADY_EXISTS, "BANDIT_ALREADY_EXISTS")

    updated = (await stub.UpdateBandit(pb.UpdateBanditRequest(name=name, add_arms=[pb.Arm(id="d")],
                                                              disable_arm_ids=["a"]))).bandit
    assert [(a.id, a.disabled) for a in updated.arms] == [("a", True), ("b", False), ("c", False), ("d", False)]
    for _ in range(20):  # a disabled arm is never chosen
        chosen = (await stub.Select(pb.SelectRequest(bandit=name, k=3))).choices
        assert "a" not in {c.arm_id for c in chosen}

    names, token = [], ""
    while True:
        page = await stub.ListBandits(pb.ListBanditsRequest(page_size=2, page_token=token))
        names += [b.name for b in page.bandits]
        token = page.next_page_token
        if not token:
            break
    assert name in names and names == sorted(names)

    await stub.DeleteBandit(pb.DeleteBanditRequest(name=name))
    await expect_error(stub.GetBandit(pb.GetBanditRequest(name=name)), grpc.StatusCode.NOT_FOUND, "BANDIT_NOT_FOUND")


async def test_select_reward_stats(stub):
    name = await create(stub)
    selected = await stub.Select(pb.SelectRequest(bandit=name, k=2, user_id="u1"))
    assert len(selected.choices) == 2 and selected.decision_id
    assert selected.choices[0].score >= selected.choices[1].score
    first = selected.choices[0].arm_id

    reply = await stub.Reward(pb.RewardRequest(decision_id=selected.decision_id, arm_id=first, reward=1.0,
                                               event_id="e1"))
    assert not reply.duplicate and reply.bandit == name and reply.arm_id == first
    again = await stub.Reward(pb.RewardRequest(decision_id=selected.decision_id, arm_id=first, reward=1.0,
                                               event_id="e1"))
    assert again.duplicate

    stats = await stub.GetStats(pb.GetStatsRequest(bandit=name))
    by_arm = {a.arm_id: a for a in stats.arms}
    assert stats.total_pulls == 2 and stats.total_reward_count == 1
    assert by_arm[first].reward_count == 1 and by_arm[first].posterior_alpha == 2.0
    assert by_arm[first].posterior_mean == pytest.approx(2 / 3)
    assert by_arm[first].credible_interval_lower < 2 / 3 < by_arm[first].credible_interval_upper
    assert sum(a.selection_share for a in stats.arms) == pytest.approx(1.0)


async def test_select_respects_candidates(stub):
    name = await create(stub, arms=("a", "b", "c", "d"))
    for _ in range(10):
        chosen = (await stub.Select(pb.SelectRequest(bandit=name, k=2, candidate_arm_ids=["b", "d"]))).choices
        assert {c.arm_id for c in chosen} == {"b", "d"}


async def test_select_contextual_and_reward_learns(stub):
    name = await create(stub, arms=("x", "y"), context_dimension=2)
    for _ in range(60):
        decision = await stub.SelectContextual(pb.SelectContextualRequest(bandit=name, context=[1.0, 0.0]))
        arm = decision.choices[0].arm_id
        await stub.Reward(pb.RewardRequest(decision_id=decision.decision_id, reward=1.0 if arm == "y" else 0.0))
    late = [(await stub.SelectContextual(pb.SelectContextualRequest(bandit=name, context=[1.0, 0.0]))).choices[0].arm_id
            for _ in range(20)]
    assert late.count("y") >= 15
    assert decision.algorithm == pb.CONTEXTUAL_ALGORITHM_LINEAR_THOMPSON


async def test_batch_reward_is_all_or_nothing(stub):
    name = await create(stub)
    good = [pb.RewardRequest(bandit=name, arm_id="a", reward=1.0, event_id=f"ev{i}") for i in range(5)]
    bad = pb.RewardRequest(bandit=name, arm_id="a", reward=2.0)
    info = await expect_error(stub.BatchReward(pb.BatchRewardRequest(rewards=[*good, bad])),
                              grpc.StatusCode.INVALID_ARGUMENT, "REWARD_OUT_OF_RANGE")
    assert info.metadata["field"] == "rewards[5].reward"
    assert (await stub.GetStats(pb.GetStatsRequest(bandit=name))).total_reward_count == 0

    done = await stub.BatchReward(pb.BatchRewardRequest(rewards=[*good, good[0]]))
    assert (done.applied_count, done.duplicate_count) == (5, 1)
    assert (await stub.GetStats(pb.GetStatsRequest(bandit=name))).total_reward_count == 5


@pytest.mark.parametrize("request_, code, reason", [
    (pb.SelectRequest(bandit=""), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
    (pb.SelectRequest(bandit="no-such-bandit"), grpc.StatusCode.NOT_FOUND, "BANDIT_NOT_FOUND"),
    (pb.SelectRequest(bandit="bad name!"), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD"),
])
async def test_select_rejects(stub, request_, code, reason):
    await expect_error(stub.Select(request_), code, reason)


async def test_bad_inputs_change_nothing(stub):
    name = await create(stub, context_dimension=3)
    info = await expect_error(stub.Select(pb.SelectRequest(bandit=name, k=0)), grpc.StatusCode.INVALID_ARGUMENT,
                              "INVALID_FIELD")
    assert info.metadata["field"] == "k"
    await expect_error(stub.Select(pb.SelectRequest(bandit=name, k=4)), grpc.StatusCode.INVALID_ARGUMENT,
                       "NOT_ENOUGH_ARMS")
    await expect_error(stub.Select(pb.SelectRequest(bandit=name, candidate_arm_ids=["zz"])),
                       grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_ARM")
    await expect_error(stub.SelectContextual(pb.SelectContextualRequest(bandit=name, context=[1.0])),
                       grpc.StatusCode.INVALID_ARGUMENT, "CONTEXT_DIMENSION_MISMATCH")
    await expect_error(stub.Reward(pb.RewardRequest(bandit=name, arm_id="a", reward=1.5)),
                       grpc.StatusCode.INVALID_ARGUMENT, "REWARD_OUT_OF_RANGE")
    await expect_error(stub.Reward(pb.RewardRequest(bandit=name, arm_id="a", reward=float("nan"))),
                       grpc.StatusCode.INVALID_ARGUMENT, "REWARD_OUT_OF_RANGE")
    await expect_error(stub.Reward(pb.RewardRequest(decision_id="nope", reward=1.0)),
                       grpc.StatusCode.NOT_FOUND, "DECISION_NOT_FOUND")
    await expect_error(stub.Reward(pb.RewardRequest(bandit=name, arm_id="zz", reward=1.0)),
                       grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_ARM")
    one = await stub.Select(pb.SelectRequest(bandit=name))
    other = next(a for a in "abc" if a != one.choices[0].arm_id)
    await expect_error(stub.Reward(pb.RewardRequest(decision_id=one.decision_id, arm_id=other, reward=1.0)),
                       grpc.StatusCode.INVALID_ARGUMENT, "ARM_NOT_IN_DECISION")
    await expect_error(stub.CreateBandit(pb.CreateBanditRequest(bandit=pb.Bandit(name=new_name()))),
                       grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FIELD")

    stats = await stub.GetStats(pb.GetStatsRequest(bandit=name))
    assert stats.total_pulls == 1 and stats.total_reward_count == 0


async def test_who_created_and_who_changed_a_bandit_is_recorded(mesh, dev_keys):
    from ml_serving_tools.devauth import mint_token

    from ...support import BearerToken

    name = f"audit-{uuid.uuid4().hex[:8]}"
    async def as_user(subject: str):
        token = mint_token(dev_keys, subject=subject)
        return grpc.aio.insecure_channel(f"127.0.0.1:{mesh.port}", interceptors=[BearerToken(token)])

    async with await as_user("alice") as alice, await as_user("bob") as bob:
        created = await bandit_pb2_grpc.BanditServiceStub(alice).CreateBandit(
            pb.CreateBanditRequest(bandit=pb.Bandit(name=name, arms=[pb.Arm(id="a")])))
        updated = await bandit_pb2_grpc.BanditServiceStub(bob).UpdateBandit(
            pb.UpdateBanditRequest(name=name, add_arms=[pb.Arm(id="b")]))
        stored = await bandit_pb2_grpc.BanditServiceStub(alice).GetBandit(pb.GetBanditRequest(name=name))
    assert (created.bandit.created_by, created.bandit.updated_by) == ("alice", "alice")
    assert (updated.bandit.created_by, updated.bandit.updated_by) == ("alice", "bob")
    assert (stored.bandit.created_by, stored.bandit.updated_by) == ("alice", "bob")

"""Limits and bounded, precise errors through a real server: what a gRPC caller gets."""

from __future__ import annotations

import uuid

import grpc
import pytest
from mnbara.mlserving.bandit.v1 import bandit_pb2 as pb
from mnbara.mlserving.bandit.v1 import bandit_pb2_grpc

from ml_serving_server.services.bandit.domain import limits

from ...support import error_info

TRAILERS_BOUND = 5 * 1024  # runtime/status.py keeps every error's trailers under this


@pytest.fixture
def stub(channel):
    return bandit_pb2_grpc.BanditServiceStub(channel)


async def create(stub, arms=("a", "b")) -> str:
    name = f"bounded-{uuid.uuid4().hex[:10]}"
    await stub.CreateBandit(pb.CreateBanditRequest(bandit=pb.Bandit(name=name, arms=[pb.Arm(id=a) for a in arms])))
    return name


async def failure(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def trailer_bytes(error: grpc.aio.AioRpcError) -> int:
    """What the status costs in HTTP/2 trailers (grpc-message is sent percent-encoded)."""
    details = error.details() or ""
    return len(details.encode()) * 3 + sum(len(k) + len(v) for k, v in error.trailing_metadata() or ())


async def test_many_unknown_candidates_give_a_short_error_not_a_reset_stream(stub):
    name = await create(stub)
    too_many = await failure(stub.Select(pb.SelectRequest(bandit=name, candidate_arm_ids=[f"arm-{i}" for i in
                                                                                         range(20_000)])))
    assert too_many.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(too_many).metadata["field"] == "candidate_arm_ids"
    assert "at most 1000 ids, got 20000" in too_many.details()

    unknown = await failure(stub.Select(pb.SelectRequest(bandit=name, candidate_arm_ids=[f"{'x' * 120}-{i}" for i in
                                                                                       range(999)])))
    assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(unknown).reason == "UNKNOWN_ARM"
    assert unknown.details().endswith("and 994 more") and unknown.details().count("x" * 64 + "'…") == 5
    assert trailer_bytes(unknown) < TRAILERS_BOUND


async def test_update_names_the_field_of_its_own_request(stub):
    name = await create(stub)
    error = await failure(stub.UpdateBandit(pb.UpdateBanditRequest(name=name, add_arms=[pb.Arm(id="b")])))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).metadata["field"] == "add_arms[0].id"
    assert error.details().startswith("add_arms[0].id: ")


async def test_long_strings_are_refused_before_anything_is_written(stub):
    name = f"bounded-{uuid.uuid4().hex[:10]}"
    long_arm = pb.Arm(id="a", description="d" * (limits.MAX_DESCRIPTION_LENGTH + 1))
    error = await failure(stub.CreateBandit(pb.CreateBanditRequest(bandit=pb.Bandit(name=name, arms=[long_arm]))))
    assert error_info(error).metadata["field"] == "bandit.arms[0].description"
    assert "d" * 100 not in error.details()
    assert (await failure(stub.GetBandit(pb.GetBanditRequest(name=name)))).code() == grpc.StatusCode.NOT_FOUND


async def test_a_reused_event_id_with_other_content_is_already_exists(stub):
    name = await create(stub)
    first = pb.RewardRequest(bandit=name, arm_id="a", reward=1.0, event_id="click")
    assert not (await stub.Reward(first)).duplicate
    assert (await stub.Reward(first)).duplicate
    error = await failure(stub.Reward(pb.RewardRequest(bandit=name, arm_id="b", reward=1.0, event_id="click")))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    info = error_info(error)
    assert (info.reason, info.metadata["field"], info.metadata["event_id"]) == ("EVENT_ID_CONFLICT", "event_id",
                                                                                 "click")
    assert (await stub.GetStats(pb.GetStatsRequest(bandit=name))).total_reward_count == 1


async def test_two_decisions_may_each_use_the_same_event_id(stub):
    name = await create(stub, arms=("a",))
    one, two = [(await stub.Select(pb.SelectRequest(bandit=name))).decision_id for _ in range(2)]
    click = pb.RewardRequest(reward=1.0, event_id="click")
    for decision_id in (one, two):
        click.decision_id = decision_id
        assert not (await stub.Reward(click)).duplicate
    click.decision_id = one
    assert (await stub.Reward(click)).duplicate
    click.reward = 0.0
    error = await failure(stub.Reward(click))
    assert error_info(error).reason == "EVENT_ID_CONFLICT"

"""BanditService's rules, over an in-memory store: no Redis, no gRPC."""

from __future__ import annotations

from datetime import timedelta
from unittest.mock import ANY

import numpy as np
import pytest

from ml_serving_server.errors import Aborted, AlreadyExists, InvalidArgument, NotFound
from ml_serving_server.services.bandit.domain.errors import ErrorReason
from ml_serving_server.services.bandit.domain.model import (
    ArmDefinition,
    BanditDefinition,
    ContextualAlgorithm,
    RewardInput,
)
from ml_serving_server.services.bandit.domain.service import BanditService
from ml_serving_server.services.bandit.memory_store import MemoryBanditStore as MemoryStore


def arms(*ids):
    return tuple(ArmDefinition(i) for i in ids)


@pytest.fixture
def service():
    return BanditService(MemoryStore(), rng=np.random.default_rng(1))


async def test_defaults_are_filled_in(service):
    created = await service.create_bandit(BanditDefinition(name="b", arms=arms("x")))
    assert (created.prior_alpha, created.prior_beta, created.exploration, created.ridge_lambda) == (1, 1, 0.15, 1)
    assert created.decision_ttl_seconds == 7 * 24 * 3600 and created.create_time is not None
    ucb = await service.create_bandit(BanditDefinition(name="u", arms=arms("x"),
                                                       contextual_algorithm=ContextualAlgorithm.LIN_UCB))
    assert ucb.exploration == 1.0  # each algorithm's own default (bench/bandit_learning.py)


@pytest.mark.parametrize("definition, field", [
    (BanditDefinition(name="", arms=arms("x")), "bandit.name"),
    (BanditDefinition(name="b", arms=()), "bandit.arms"),
    (BanditDefinition(name="b", arms=arms("x", "x")), "bandit.arms[1].id"),
    (BanditDefinition(name="b", arms=arms("x"), prior_alpha=-1), "bandit.prior_alpha"),
    (BanditDefinition(name="b", arms=arms("x"), exploration=float("inf")), "bandit.exploration"),
    (BanditDefinition(name="b", arms=arms("x"), discount=0.6), "bandit.discount"),
    (BanditDefinition(name="b", arms=arms("x"), prior_alpha=1e308), "bandit.prior_alpha"),
    (BanditDefinition(name="b", arms=arms("x"), context_dimension=10_000), "bandit.context_dimension"),
])
async def test_bad_definitions_name_their_field(service, definition, field):
    with pytest.raises(InvalidArgument) as caught:
        await service.create_bandit(definition)
    assert caught.value.field == field


@pytest.mark.parametrize("context", [[1e200, 1.0], [float("nan"), 1.0]])
async def test_context_values_are_bounded(service, context):
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x"), context_dimension=2))
    with pytest.raises(InvalidArgument) as caught:
        await service.reward(RewardInput(bandit="b", arm_id="x", reward=1, context=tuple(context)))
    assert caught.value.field == "context"


async def test_long_ids_are_rejected_before_any_lookup(service):
    with pytest.raises(InvalidArgument) as caught:
        await service.reward(RewardInput(decision_id="d1." + "x" * 20_000, reward=1))
    assert caught.value.field == "decision_id"
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x")))
    with pytest.raises(InvalidArgument) as caught:
        await service.select("b", None, ["y" * 20_000], "")
    assert caught.value.field == "candidate_arm_ids[0]" and "y" * 200 not in caught.value.message


async def test_names_are_unique(service):
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x")))
    with pytest.raises(AlreadyExists):
        await service.create_bandit(BanditDefinition(name="b", arms=arms("y")))


async def test_unknown_bandit_is_not_created_implicitly(service):
    with pytest.raises(NotFound) as caught:
        await service.select("ghost", None, (), "")
    assert caught.value.reason is ErrorReason.BANDIT_NOT_FOUND
    assert (await service.list_bandits(0, ""))[0] == []


async def test_reward_rules(service):
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x", "y", "z")))
    pair = await service.select("b", 2, (), "u")
    chosen = [c.arm_id for c in pair.choices]
    with pytest.raises(InvalidArgument, match="arm_id: is required"):
        await service.reward(RewardInput(decision_id=pair.decision.id, reward=1))
    outsider = ({"x", "y", "z"} - set(chosen)).pop()
    with pytest.raises(InvalidArgument) as caught:
        await service.reward(RewardInput(decision_id=pair.decision.id, arm_id=outsider, reward=1))
    assert caught.value.reason is ErrorReason.ARM_NOT_IN_DECISION
    with pytest.raises(InvalidArgument, match="belongs to bandit"):
        await service.reward(RewardInput(decision_id=pair.decision.id, arm_id=chosen[0], bandit="other", reward=1))

    duplicate, event = await service.reward(RewardInput(decision_id=pair.decision.id, arm_id=chosen[0],
                                                        reward=0.5, event_id="e"))
    assert not duplicate and event.arm_id == chosen[0]
    duplicate, _ = await service.reward(RewardInput(decision_id=pair.decision.id, arm_id=chosen[0],
                                                    reward=0.5, event_id="e"))
    assert duplicate
    stats = await service.stats("b")
    rewarded = next(a for a in stats.arms if a.arm_id == chosen[0])
    assert (rewarded.alpha, rewarded.beta, rewarded.counts.reward_count) == (1.5, 1.5, 1)


async def test_batch_is_checked_whole_before_anything_is_applied(service):
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x")))
    batch = [RewardInput(bandit="b", arm_id="x", reward=1), RewardInput(decision_id="missing", reward=1)]
    with pytest.raises(NotFound) as caught:
        await service.batch_reward(batch)
    assert caught.value.metadata == {"field": "rewards[1].decision_id", "index": "1"}
    assert (await service.stats("b")).total_reward_count == 0


async def test_disabled_arms_and_candidates(service):
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x", "y", "z")))
    await service.update_bandit("b", "", [ArmDefinition("w")], ["x"], [])
    for _ in range(20):
        picked = {c.arm_id for c in (await service.select("b", 3, (), "")).choices}
        assert picked == {"y", "z", "w"}
    with pytest.raises(InvalidArgument) as caught:
        await service.select("b", 2, ["x", "y"], "")  # x is disabled: one candidate left
    assert caught.value.reason is ErrorReason.NOT_ENOUGH_ARMS


async def test_pagination_walks_every_name_once(service):
    for name in ("c", "a", "e", "b", "d"):
        await service.create_bandit(BanditDefinition(name=name, arms=arms("x")))
    seen, token = [], ""
    while True:
        page, token = await service.list_bandits(2, token)
        seen += [d.name for d in page]
        if not token:
            break
    assert seen == ["a", "b", "c", "d", "e"]
    with pytest.raises(InvalidArgument) as caught:
        await service.list_bandits(2, "!!not-a-token!!")
    assert caught.value.reason is ErrorReason.INVALID_PAGE_TOKEN


async def test_select_samples_from_a_snapshot_no_older_than_the_max_age():
    now = [0.0]
    store = MemoryStore()
    service = BanditService(store, rng=np.random.default_rng(1), max_state_age_s=0.1, clock=lambda: now[0])
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x", "y")))
    await service.select("b", None, (), "")
    await service.select("b", None, (), "")
    assert store.count_reads == 1  # the second select used the snapshot
    now[0] = 0.2
    await service.select("b", None, (), "")
    assert store.count_reads == 2  # too old: read again
    await service.stats("b")
    assert store.count_reads == 3  # statistics always read fresh


async def test_a_bandit_deleted_elsewhere_is_gone_once_the_snapshot_ages():
    now = [0.0]
    store = MemoryStore()
    service = BanditService(store, rng=np.random.default_rng(1), max_state_age_s=0.1, clock=lambda: now[0])
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x")))
    decision = (await service.select("b", None, (), "")).decision
    await BanditService(store).delete_bandit("b")  # another replica deleted it
    with pytest.raises(NotFound):  # rewards go to the store at once
        await service.reward(RewardInput(decision_id=decision.id, reward=1))
    now[0] = 0.2
    with pytest.raises(NotFound):
        await service.select("b", None, (), "")


async def test_decision_ids_are_signed_and_expire(service):
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x"), decision_ttl_seconds=60))
    decision = (await service.select("b", None, (), "")).decision
    head, body, mac = decision.id.split(".")
    forged = ".".join([head, body, mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB")])
    for bad in (forged, decision.id[:-1], "d1.garbage", "d1.a.b.c", "d2.garbage", "d2.a.b.c"):
        with pytest.raises(NotFound):
            await service.reward(RewardInput(decision_id=bad, reward=1))
    stale = service._codec.encode("b", (0,), decision.time - timedelta(seconds=61))
    with pytest.raises(NotFound):
        await service.reward(RewardInput(decision_id=stale, reward=1))
    assert not (await service.reward(RewardInput(decision_id=decision.id, reward=1)))[0]


async def test_pulls_are_tallied_then_written(service):
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x", "y")))
    for _ in range(5):
        await service.select("b", 2, (), "")
    stats = await service.stats("b")  # flushes this replica's tally first
    assert stats.total_pulls == 10 and {a.counts.pulls for a in stats.arms} == {5}
    await service.close()


async def test_an_arm_added_elsewhere_can_be_rewarded_at_once():
    store = MemoryStore()
    service = BanditService(store, max_state_age_s=60)
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x")))
    await service.select("b", None, (), "")
    await BanditService(store).update_bandit("b", "", arms("new"), [], [])  # another replica
    # (this replica's snapshot is young and knows no arm "new")
    duplicate, event = await service.reward(RewardInput(bandit="b", arm_id="new", reward=1))
    assert not duplicate and event.arm_id == "new"


async def test_a_recreated_bandit_owes_nothing_to_its_predecessor(service):
    await service.create_bandit(BanditDefinition(name="b", arms=arms("old"), context_dimension=2))
    old = (await service.select("b", None, (), "")).decision
    await service.reward(RewardInput(bandit="b", arm_id="old", reward=1, event_id="click-1"))
    await service.delete_bandit("b")
    await service.create_bandit(BanditDefinition(name="b", arms=arms("new"), context_dimension=3))

    with pytest.raises(NotFound):  # a decision of the deleted bandit
        await service.reward(RewardInput(decision_id=old.id, reward=1))
    duplicate, _ = await service.reward(RewardInput(bandit="b", arm_id="new", reward=1, event_id="click-1"))
    assert not duplicate  # event ids of the deleted bandit do not shadow new events
    stats = await service.stats("b")
    assert [a.arm_id for a in stats.arms] == ["new"] and stats.total_reward_count == 1


async def test_concurrent_updates_do_not_overwrite_each_other():
    store = MemoryStore()
    service, other_replica = BanditService(store), BanditService(store)
    await service.create_bandit(BanditDefinition(name="b", arms=arms("a")))
    real_replace = store.replace_definition

    async def racing_replace(definition, expected_version):
        # Another replica adds arm "y" between our read and our write.
        store.replace_definition = real_replace
        await other_replica.update_bandit("b", "", arms("y"), [], [])
        return await real_replace(definition, expected_version)

    store.replace_definition = racing_replace
    with pytest.raises(Aborted):
        await service.update_bandit("b", "", [ArmDefinition("x")], [], [])
    assert (await store.get_definition("b")).arm_ids() == ["a", "y"]  # the other update survived
    updated = await service.update_bandit("b", "", [ArmDefinition("x")], [], [])  # a retry succeeds
    assert updated.arm_ids() == ["a", "y", "x"]


async def test_update_errors_name_the_requests_own_fields(service):
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x", "y", "z")))
    cases = [
        (dict(add_arms=[ArmDefinition("new"), ArmDefinition("x")]), "add_arms[1].id", ErrorReason.INVALID_FIELD),
        (dict(add_arms=[ArmDefinition("n"), ArmDefinition("n")]), "add_arms[1].id", ErrorReason.INVALID_FIELD),
        (dict(add_arms=[ArmDefinition("bad id")]), "add_arms[0].id", ErrorReason.INVALID_FIELD),
        (dict(disable_ids=["x", "nope"]), "disable_arm_ids[1]", ErrorReason.UNKNOWN_ARM),
        (dict(enable_ids=["nope"]), "enable_arm_ids[0]", ErrorReason.UNKNOWN_ARM),
    ]
    for fields, field, reason in cases:
        request = {"description": "", "add_arms": [], "disable_ids": [], "enable_ids": [], **fields}
        with pytest.raises(InvalidArgument) as caught:
            await service.update_bandit("b", **request)
        assert (caught.value.field, caught.value.reason.name) == (field, reason.name)
    assert (await service.get_bandit("b")).arm_ids() == ["x", "y", "z"]


async def test_messages_quote_a_short_prefix_of_a_few_ids(service):
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x")))
    unknown = [f"{'u' * 100}-{i}" for i in range(999)]
    with pytest.raises(InvalidArgument) as caught:
        await service.select("b", None, unknown, "")
    message = caught.value.message
    assert caught.value.reason is ErrorReason.UNKNOWN_ARM and caught.value.field == "candidate_arm_ids"
    assert message.count("'" + "u" * 64 + "'…") == 5 and message.endswith("and 994 more")
    assert len(message) < 500
    with pytest.raises(NotFound) as caught:
        await service.reward(RewardInput(decision_id="d" * 500, reward=1))
    assert len(caught.value.message) < 150


async def test_an_event_id_reused_for_another_reward_is_a_conflict(service):
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x", "y")))
    first = RewardInput(bandit="b", arm_id="x", reward=1, event_id="e")
    assert await service.reward(first) == (False, ANY)
    assert (await service.reward(first))[0]  # the same again: a duplicate
    for other in (dict(arm_id="y"), dict(reward=0.0)):
        with pytest.raises(AlreadyExists) as caught:
            await service.reward(RewardInput(**{**first.__dict__, **other}))
        assert caught.value.reason is ErrorReason.EVENT_ID_CONFLICT
        assert caught.value.metadata == {"field": "event_id", "event_id": "e", "index": "0"}
    batch = [RewardInput(bandit="b", arm_id="y", reward=1, event_id="f"),
             RewardInput(**{**first.__dict__, "reward": 0.5})]
    with pytest.raises(AlreadyExists) as caught:
        await service.batch_reward(batch)
    assert caught.value.metadata["field"] == "rewards[1].event_id"
    assert (await service.stats("b")).total_reward_count == 2  # e once, and the batch's other reward


async def test_each_decision_has_its_own_event_ids(service):
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x")))
    one, two = [(await service.select("b", None, (), "")).decision.id for _ in range(2)]
    assert not (await service.reward(RewardInput(decision_id=one, reward=1, event_id="click")))[0]
    assert not (await service.reward(RewardInput(decision_id=two, reward=1, event_id="click")))[0]
    assert (await service.reward(RewardInput(decision_id=one, arm_id="x", reward=1, event_id="click")))[0]
    with pytest.raises(AlreadyExists):
        await service.reward(RewardInput(decision_id=one, reward=0, event_id="click"))


async def test_who_acted_is_recorded_and_bounded(service):
    created = await service.create_bandit(BanditDefinition(name="b", arms=arms("x")), actor="alice")
    assert (created.created_by, created.updated_by) == ("alice", "alice")
    updated = await service.update_bandit("b", "", arms("y"), [], [], actor="b" * 10_000)
    assert updated.created_by == "alice" and len(updated.updated_by) == 256

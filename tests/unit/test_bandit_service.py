"""BanditService's rules, over an in-memory store: no Redis, no gRPC."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from ml_serving_server.bandit.model import ArmCounts, ArmDefinition, BanditDefinition, RewardInput
from ml_serving_server.bandit.service import BanditService
from ml_serving_server.errors import Aborted, AlreadyExists, InvalidArgument, NotFound


class MemoryStore:
    """The BanditStore port in a few dicts, enough to exercise the service's rules,
    including what survives a delete (decisions, event markers) and incarnations."""

    def __init__(self):
        self.definitions: dict[str, tuple[int, BanditDefinition]] = {}
        self.counts: dict[str, dict[str, ArmCounts]] = {}
        self.decisions = {}
        self.events: set[tuple[str, int, str]] = set()
        self.count_reads = 0

    def _alive(self, name, incarnation):
        return name in self.definitions and self.definitions[name][1].incarnation == incarnation

    async def create(self, definition):
        if definition.name in self.definitions:
            return False
        self.definitions[definition.name] = (definition.incarnation, definition)
        self.counts[definition.name] = {}
        return True

    async def get_definition(self, name):
        return self.definitions.get(name, (0, None))[1]

    async def list_definitions(self, after, limit):
        return [d for n, (_, d) in sorted(self.definitions.items()) if n > after][:limit]

    async def replace_definition(self, definition, expected_version):
        if definition.name not in self.definitions:
            return None
        version, _ = self.definitions[definition.name]
        if version != expected_version:
            return False
        self.definitions[definition.name] = (version + 1, definition)
        return True

    async def delete(self, name):
        return self.definitions.pop(name, None) is not None

    async def load_counts(self, name):
        self.count_reads += 1
        if name not in self.definitions:
            return None
        return self.definitions[name][0], dict(self.counts[name])

    async def load_linear(self, name, dimension):
        return {}

    def _add(self, name, arm, pulls=0, rewards=0, reward=0.0):
        c = self.counts[name].get(arm, ArmCounts())
        self.counts[name][arm] = ArmCounts(c.pulls + pulls, c.reward_count + rewards, c.reward_sum + reward,
                                           c.failure_sum + rewards - reward)

    async def record_decision(self, decision, incarnation, ttl_seconds):
        if not self._alive(decision.bandit, incarnation):
            return False
        self.decisions[decision.id] = decision
        for arm in decision.arm_ids:
            self._add(decision.bandit, arm, pulls=1)
        return True

    async def add_pulls(self, name, incarnation, pulls):
        if self._alive(name, incarnation):
            for arm, n in pulls.items():
                self._add(name, arm, pulls=n)

    async def decision_key(self):
        return b"k" * 32

    async def get_decisions(self, ids):
        return [self.decisions.get(i) for i in ids]

    async def apply_rewards(self, events):
        applied = []
        for e in events:
            if not self._alive(e.bandit, e.incarnation):
                applied.append(None)
            elif e.event_id and (e.bandit, e.incarnation, e.event_id) in self.events:
                applied.append(False)
            else:
                self.events.add((e.bandit, e.incarnation, e.event_id))
                self._add(e.bandit, e.arm_id, rewards=1, reward=e.reward)
                applied.append(True)
        return applied


def arms(*ids):
    return tuple(ArmDefinition(i) for i in ids)


@pytest.fixture
def service():
    return BanditService(MemoryStore(), rng=np.random.default_rng(1))


async def test_defaults_are_filled_in(service):
    created = await service.create_bandit(BanditDefinition(name="b", arms=arms("x")))
    assert (created.prior_alpha, created.prior_beta, created.exploration, created.ridge_lambda) == (1, 1, 1, 1)
    assert created.decision_ttl_seconds == 7 * 24 * 3600 and created.create_time is not None


@pytest.mark.parametrize("definition, field", [
    (BanditDefinition(name="", arms=arms("x")), "bandit.name"),
    (BanditDefinition(name="b", arms=()), "bandit.arms"),
    (BanditDefinition(name="b", arms=arms("x", "x")), "bandit.arms[1].id"),
    (BanditDefinition(name="b", arms=arms("x"), prior_alpha=-1), "bandit.prior_alpha"),
    (BanditDefinition(name="b", arms=arms("x"), exploration=float("inf")), "bandit.exploration"),
    (BanditDefinition(name="b", arms=arms("x"), discount=0.5), "bandit.discount"),
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
    assert caught.value.field == "candidate_arm_ids" and "y" * 200 not in caught.value.message


async def test_names_are_unique(service):
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x")))
    with pytest.raises(AlreadyExists):
        await service.create_bandit(BanditDefinition(name="b", arms=arms("y")))


async def test_unknown_bandit_is_not_created_implicitly(service):
    with pytest.raises(NotFound) as caught:
        await service.select("ghost", None, (), "")
    assert caught.value.reason == "BANDIT_NOT_FOUND"
    assert await service._store.get_definition("ghost") is None


async def test_reward_rules(service):
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x", "y", "z")))
    pair = await service.select("b", 2, (), "u")
    chosen = [c.arm_id for c in pair.choices]
    with pytest.raises(InvalidArgument, match="arm_id: is required"):
        await service.reward(RewardInput(decision_id=pair.decision.id, reward=1))
    outsider = ({"x", "y", "z"} - set(chosen)).pop()
    with pytest.raises(InvalidArgument) as caught:
        await service.reward(RewardInput(decision_id=pair.decision.id, arm_id=outsider, reward=1))
    assert caught.value.reason == "ARM_NOT_IN_DECISION"
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
    assert caught.value.reason == "NOT_ENOUGH_ARMS"


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
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


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
    del store.definitions["b"]  # another replica deleted it
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
    for bad in (forged, decision.id[:-1], "d1.garbage", "d1.a.b.c"):
        with pytest.raises(NotFound):
            await service.reward(RewardInput(decision_id=bad, reward=1))
    stale = service._codec.encode("b", ("x",), decision.time - timedelta(seconds=61))
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


async def test_an_arm_added_elsewhere_can_be_rewarded_at_once(service):
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x")))
    await service.select("b", None, (), "")
    version, definition = service._store.definitions["b"]
    service._store.definitions["b"] = (version + 1, definition.with_changes(arms=arms("x", "new")))
    # (the snapshot still has version `version` and knows no arm "new")
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


async def test_concurrent_updates_do_not_overwrite_each_other(service):
    await service.create_bandit(BanditDefinition(name="b", arms=arms("a")))
    store = service._store
    real_replace = store.replace_definition

    async def racing_replace(definition, expected_version):
        # Another replica adds arm "y" between our read and our write.
        version, current = store.definitions["b"]
        store.definitions["b"] = (version + 1, current.with_changes(arms=current.arms + arms("y")))
        store.replace_definition = real_replace
        return await real_replace(definition, expected_version)

    store.replace_definition = racing_replace
    with pytest.raises(Aborted):
        await service.update_bandit("b", "", [ArmDefinition("x")], [], [])
    assert store.definitions["b"][1].arm_ids() == ["a", "y"]  # the other update survived
    updated = await service.update_bandit("b", "", [ArmDefinition("x")], [], [])  # a retry succeeds
    assert updated.arm_ids() == ["a", "y", "x"]

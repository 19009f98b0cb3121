"""Decision ids carry what a reward needs, context included, exactly and tamper-proof."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import datetime, timezone

import numpy as np
import pytest

from ml_serving_server.services.bandit.domain import limits
from ml_serving_server.services.bandit.domain.decision_ids import MAX_ID_LENGTH, DecisionCodec
from ml_serving_server.services.bandit.domain.model import ArmDefinition, BanditDefinition, RewardInput
from ml_serving_server.services.bandit.domain.service import BanditService
from ml_serving_server.services.bandit.memory_store import MemoryBanditStore

KEY = b"k" * 32
NOW = datetime(2026, 12, 7, 12, 0, 0, 123456, tzinfo=timezone.utc)


def test_an_id_round_trips_positions_time_and_the_exact_context():
    codec = DecisionCodec(KEY)
    context = np.array([0.1, -1e-300, 123456.789, 1 / 3])
    decoded = codec.decode(codec.encode("bandit-1", (3, 0, 999), NOW, context))
    assert (decoded.bandit, decoded.arm_positions, decoded.time) == ("bandit-1", (3, 0, 999), NOW)
    assert decoded.context == tuple(context)  # bit for bit: the reward updates with what was scored
    assert decoded.arm_ids == ()  # named from the definition by the service


def test_the_longest_id_issued_fits_the_limit_a_reward_accepts():
    codec = DecisionCodec(KEY)
    longest = codec.encode("b" * limits.MAX_NAME_LENGTH, tuple(range(limits.MAX_ARMS)), NOW,
                           np.full(limits.MAX_CONTEXT_DIMENSION, np.pi))
    assert len(longest) <= MAX_ID_LENGTH == limits.MAX_DECISION_ID_LENGTH
    assert codec.decode(longest).arm_positions == tuple(range(limits.MAX_ARMS))


@pytest.mark.parametrize("tamper", [
    lambda i: i[:-1],
    lambda i: i.replace("d2.", "d1.", 1),
    lambda i: "d2." + i.split(".")[1][:-4] + "." + i.split(".")[2],
    lambda i: i + "A",
])
def test_a_changed_id_is_no_decision(tamper):
    codec = DecisionCodec(KEY)
    issued = codec.encode("b", (1,), NOW, (1.0, 2.0))
    assert codec.decode(tamper(issued)) is None
    assert DecisionCodec(b"other" * 7).decode(issued) is None


def test_ids_of_the_earlier_form_still_decode():
    payload = json.dumps(["b", ["x", "y"], int(NOW.timestamp() * 1_000_000), "ab12"]).encode()
    mac = hmac.new(KEY, payload, hashlib.sha256).digest()[:16]
    b64 = lambda data: base64.urlsafe_b64encode(data).rstrip(b"=").decode()  # noqa: E731
    decoded = DecisionCodec(KEY).decode(f"d1.{b64(payload)}.{b64(mac)}")
    assert (decoded.bandit, decoded.arm_ids, decoded.time) == ("b", ("x", "y"), NOW)


async def test_a_contextual_decision_is_rewarded_with_its_context_on_a_replica_that_never_saw_it():
    store = MemoryBanditStore()
    one, other = BanditService(store), BanditService(store)
    await one.create_bandit(BanditDefinition(name="b", arms=(ArmDefinition("x"), ArmDefinition("y")),
                                             context_dimension=3))
    selection = await one.select_contextual("b", [0.5, -2.0, 7.25], 2, (), "user-1")
    duplicate, event = await other.reward(RewardInput(decision_id=selection.decision.id,
                                                      arm_id=selection.decision.arm_ids[1], reward=1.0))
    assert not duplicate and event.context == (0.5, -2.0, 7.25) and event.arm_id == selection.decision.arm_ids[1]
    gram, target = (await store.load_linear("b", 3))[event.arm_id]
    np.testing.assert_array_equal(target, [0.5, -2.0, 7.25])


async def test_an_arm_added_after_a_replica_read_the_bandit_is_named_from_a_fresh_read():
    store = MemoryBanditStore()
    deciding, rewarding = BanditService(store), BanditService(store, max_state_age_s=60)
    await deciding.create_bandit(BanditDefinition(name="b", arms=(ArmDefinition("x"),)))
    await rewarding.select("b", None, (), "")  # its snapshot knows arm x only, for a minute
    await deciding.update_bandit("b", "", (ArmDefinition("new"),), ["x"], [])
    decision = (await deciding.select("b", None, (), "")).decision
    assert decision.arm_ids == ("new",)
    _, event = await rewarding.reward(RewardInput(decision_id=decision.id, reward=1.0))
    assert event.arm_id == "new"

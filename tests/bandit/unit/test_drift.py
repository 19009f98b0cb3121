"""A bandit with a discount follows rewards that drift; one without sticks to the old best arm.

The whole service (selection, rewards, forgetting) over the in-memory store, which forgets
exactly as the Redis store does (tests/bandit/transport/test_store_contract.py holds both to it).
"""

from __future__ import annotations

import numpy as np
import pytest

from ml_serving_server.services.bandit.domain.model import ArmDefinition, BanditDefinition, RewardInput
from ml_serving_server.services.bandit.domain.service import BanditService
from ml_serving_server.services.bandit.memory_store import MemoryBanditStore

PHASE = 1_000  # rounds before the flip
WINDOW = 200  # rounds after it, where the new best arm's share is measured
RATES = {"a": 0.8, "b": 0.2}  # then swapped


async def share_of_new_best_after_the_flip(discount: float, seed: int) -> float:
    service = BanditService(MemoryBanditStore(), rng=np.random.default_rng([seed, 1]), max_state_age_s=0.0)
    await service.create_bandit(BanditDefinition(name="drift", arms=(ArmDefinition("a"), ArmDefinition("b")),
                                                 discount=discount))
    coins = np.random.default_rng([seed, 2]).random(PHASE + WINDOW)
    pulls_of_b = 0
    for t in range(PHASE + WINDOW):
        rates = RATES if t < PHASE else {"a": RATES["b"], "b": RATES["a"]}
        arm = (await service.select("drift", 1, [], "")).decision.arm_ids[0]
        await service.reward(RewardInput(bandit="drift", arm_id=arm, reward=float(coins[t] < rates[arm])))
        pulls_of_b += t >= PHASE and arm == "b"
    return pulls_of_b / WINDOW


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_a_discounted_bandit_moves_to_the_new_best_arm_and_a_plain_one_does_not(seed):
    # discount 0.02: a memory of about 50 rewards, plenty to tell 0.8 from 0.2 (seen: 0.8 to 0.9)
    assert await share_of_new_best_after_the_flip(0.02, seed) > 0.7
    # without forgetting, 800 successes of arm a outweigh 200 rounds of its failures (seen: 0 to 0.02)
    assert await share_of_new_best_after_the_flip(0.0, seed) < 0.1

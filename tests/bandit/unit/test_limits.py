"""Every limit of domain/limits.py, over the in-memory store: a value at the limit passes
it, one past it is INVALID_ARGUMENT naming the field. Requests past a limit name a bandit
that does not exist, so getting INVALID_ARGUMENT rather than NOT_FOUND shows the limit is
checked before anything is read (and so before anything is written)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Awaitable, Callable

import numpy as np
import pytest

from ml_serving_server.errors import InvalidArgument, NotFound
from ml_serving_server.services.bandit.domain import limits
from ml_serving_server.services.bandit.domain.errors import ErrorReason
from ml_serving_server.services.bandit.domain.model import ArmDefinition, BanditDefinition, RewardInput
from ml_serving_server.services.bandit.domain.service import BanditService
from ml_serving_server.services.bandit.memory_store import MemoryBanditStore


def arms(*ids: str) -> tuple[ArmDefinition, ...]:
    return tuple(ArmDefinition(i) for i in ids)


def numbered_arms(count: int, start: int = 0) -> tuple[ArmDefinition, ...]:
    return arms(*(f"a{i}" for i in range(start, start + count)))


def definition_of_size(name: str, size: int) -> BanditDefinition:
    """A definition whose estimated size is exactly `size` bytes (padded with arm descriptions)."""
    d = BanditDefinition(name=name, arms=())
    padded: list[ArmDefinition] = []
    while limits.estimated_bytes(d) < size:
        room = size - limits.estimated_bytes(d) - limits.ARM_BASE_BYTES - len(f"a{len(padded)}")
        assert room >= 0, "cannot hit the size exactly"
        padded.append(ArmDefinition(f"a{len(padded)}", "d" * min(room, limits.MAX_DESCRIPTION_LENGTH)))
        d = d.with_changes(arms=tuple(padded))
    assert limits.estimated_bytes(d) == size
    return d


@pytest.fixture
async def service() -> BanditService:
    """A service with bandit "b" (arms x and y, context dimension 2)."""
    service = BanditService(MemoryBanditStore(), rng=np.random.default_rng(1))
    await service.create_bandit(BanditDefinition(name="b", arms=arms("x", "y"), context_dimension=2))
    return service


@dataclass
class Limit:
    """A limit of `value`, and a call that sends `size` of the limited thing, past it naming `field`."""

    value: int
    field: str
    attempt: Callable[[BanditService, int], Awaitable[object]]


def reward(**fields) -> RewardInput:
    return RewardInput(**{"bandit": "b", "arm_id": "x", "reward": 1.0, **fields})


LIMITS = {
    "bandit name": Limit(limits.MAX_NAME_LENGTH, "bandit.name",
                         lambda s, n: s.create_bandit(BanditDefinition(name="n" * n, arms=arms("x")))),
    "arm id": Limit(limits.MAX_NAME_LENGTH, "bandit.arms[1].id",
                    lambda s, n: s.create_bandit(BanditDefinition(name="c", arms=arms("x", "a" * n)))),
    "bandit description": Limit(limits.MAX_DESCRIPTION_LENGTH, "bandit.description",
                                lambda s, n: s.create_bandit(BanditDefinition("c", arms("x"), description="d" * n))),
    "arm description": Limit(limits.MAX_DESCRIPTION_LENGTH, "bandit.arms[0].description",
                             lambda s, n: s.create_bandit(BanditDefinition("c", (ArmDefinition("x", "d" * n),)))),
    "arm model_version": Limit(limits.MAX_MODEL_VERSION_LENGTH, "bandit.arms[0].model_version",
                               lambda s, n: s.create_bandit(BanditDefinition(
                                   "c", (ArmDefinition("x", model_version="m" * n),)))),
    "arms per bandit": Limit(limits.MAX_ARMS, "bandit.arms",
                             lambda s, n: s.create_bandit(BanditDefinition("c", numbered_arms(n)))),
    "definition size": Limit(limits.MAX_DEFINITION_BYTES, "bandit",
                             lambda s, n: s.create_bandit(definition_of_size("c", n))),
    "update description": Limit(limits.MAX_DESCRIPTION_LENGTH, "description",
                                lambda s, n: s.update_bandit("ghost" if n > 1024 else "b", "d" * n, [], [], [])),
    "add_arms": Limit(limits.MAX_ARMS, "add_arms",
                      lambda s, n: s.update_bandit("ghost", "", numbered_arms(n), [], [])),
    "disable_arm_ids": Limit(limits.MAX_ARMS, "disable_arm_ids",
                             lambda s, n: s.update_bandit("ghost", "", [], ["x"] * n, [])),
    "enable_arm_ids": Limit(limits.MAX_ARMS, "enable_arm_ids",
                            lambda s, n: s.update_bandit("ghost", "", [], [], ["x"] * n)),
    "candidate_arm_ids": Limit(limits.MAX_ARMS, "candidate_arm_ids",
                               lambda s, n: s.select("ghost", None, ["x"] * n, "")),
    "user_id": Limit(limits.MAX_USER_ID_LENGTH, "user_id", lambda s, n: s.select("ghost", None, (), "u" * n)),
    "contextual user_id": Limit(limits.MAX_USER_ID_LENGTH, "user_id",
                                lambda s, n: s.select_contextual("ghost", [0.0], None, (), "u" * n)),
    "selection context": Limit(limits.MAX_CONTEXT_DIMENSION, "context",
                               lambda s, n: s.select_contextual("ghost", [0.0] * n, None, (), "")),
    "reward context": Limit(limits.MAX_CONTEXT_DIMENSION, "context",
                            lambda s, n: s.reward(reward(bandit="ghost", context=(0.0,) * n))),
    "reward arm_id": Limit(limits.MAX_NAME_LENGTH, "arm_id", lambda s, n: s.reward(reward(bandit="ghost",
                                                                                         arm_id="a" * n))),
    "event id": Limit(limits.MAX_EVENT_ID_LENGTH, "event_id",
                      lambda s, n: s.reward(reward(bandit="ghost", event_id="e" * n))),
    "decision id": Limit(limits.MAX_DECISION_ID_LENGTH, "decision_id",
                         lambda s, n: s.reward(RewardInput(decision_id="d" * n, reward=1.0))),
    "batch size": Limit(limits.MAX_BATCH, "rewards",
                        lambda s, n: s.batch_reward([reward(bandit="ghost")] * n)),
    "page size": Limit(limits.MAX_PAGE_SIZE, "page_size", lambda s, n: s.list_bandits(n, "")),
}


@pytest.mark.parametrize("limit", LIMITS.values(), ids=LIMITS.keys())
async def test_a_limit_admits_its_value_and_names_its_field_past_it(service, limit):
    try:
        await limit.attempt(service, limit.value)
    except InvalidArgument as error:  # pragma: no cover - shown on failure
        pytest.fail(f"at the limit: {error}")
    except NotFound:
        pass  # past the limit check, to the lookup
    with pytest.raises(InvalidArgument) as caught:
        await limit.attempt(service, limit.value + 1)
    assert caught.value.field == limit.field
    assert caught.value.reason.name == "INVALID_FIELD"
    assert str(limit.value) in caught.value.message and len(caught.value.message) < 200


async def test_names_on_every_rpc_are_bounded(service):
    calls = [service.get_bandit, service.delete_bandit, service.stats,
             lambda name: service.select(name, None, (), ""), lambda name: service.update_bandit(name, "", [], [], [])]
    for call in calls:
        with pytest.raises(InvalidArgument):
            await call("n" * (limits.MAX_NAME_LENGTH + 1))
    with pytest.raises(InvalidArgument, match="name"):
        await service.get_bandit("b\n")  # the whole name must match, not a prefix of it


async def test_arms_after_an_update_are_bounded(service):
    await service.update_bandit("b", "", numbered_arms(limits.MAX_ARMS - 2), [], [])
    with pytest.raises(InvalidArgument) as caught:
        await service.update_bandit("b", "", arms("one-too-many"), [], [])
    assert caught.value.field == "add_arms" and "1001" in caught.value.message
    assert len((await service.get_bandit("b")).arms) == limits.MAX_ARMS  # unchanged


async def test_definition_size_after_an_update_is_bounded(service):
    big = definition_of_size("big", limits.MAX_DEFINITION_BYTES - 20)
    await service.create_bandit(big)
    with pytest.raises(InvalidArgument) as caught:
        await service.update_bandit("big", "", [ArmDefinition("new", "d" * 20)], [], [])
    assert caught.value.field == "add_arms"
    with pytest.raises(InvalidArgument) as caught:
        await service.update_bandit("big", "d" * 30, [], [], [])
    assert caught.value.field == "description"
    assert (await service.get_bandit("big")).arm_ids() == big.arm_ids()


async def test_a_page_ends_early_rather_than_exceed_its_byte_budget(service):
    await service.delete_bandit("b")
    size = limits.MAX_DEFINITION_BYTES - 1000
    names = [f"big-{i:02d}" for i in range(20)]
    for name in names:
        await service.create_bandit(definition_of_size(name, size))
    seen, token, pages = [], "", 0
    while True:
        page, token = await service.list_bandits(100, token)
        assert sum(limits.estimated_bytes(d) for d in page) <= limits.MAX_PAGE_BYTES
        seen += [d.name for d in page]
        pages += 1
        if not token:
            break
    assert seen == names
    assert pages == 2  # 16 definitions of ~63 KiB fill 1 MiB


async def test_a_page_token_is_bounded_before_it_is_decoded(service):
    with pytest.raises(InvalidArgument) as caught:
        await service.list_bandits(0, "QQ" * limits.MAX_PAGE_TOKEN_LENGTH)
    assert caught.value.reason is ErrorReason.INVALID_PAGE_TOKEN
    longest_name = "n" * limits.MAX_NAME_LENGTH
    await service.create_bandit(BanditDefinition(name=longest_name, arms=arms("x")))
    assert await service.list_bandits(1, limits.encode_page_token(longest_name)) == ([], "")


@pytest.mark.parametrize("limit, field, call", [
    ("context value", "context", lambda s: s.select_contextual("b", [1e7, 0.0], None, (), "")),
    ("context_dimension", "bandit.context_dimension",
     lambda s: s.create_bandit(BanditDefinition("c", arms("x"), context_dimension=limits.MAX_CONTEXT_DIMENSION + 1))),
    ("prior", "bandit.prior_alpha", lambda s: s.create_bandit(BanditDefinition("c", arms("x"), prior_alpha=2e6))),
])
async def test_numeric_limits(service, limit, field, call):
    with pytest.raises(InvalidArgument) as caught:
        await call(service)
    assert caught.value.field == field

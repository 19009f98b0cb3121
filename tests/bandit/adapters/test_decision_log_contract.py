"""The DecisionLogStore contract, over a real PostgreSQL and in memory (what the domain's unit
tests use): writes, pages, evaluation columns, retention; and PostgreSQL's failures."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from ml_serving_server.errors import Unavailable
from ml_serving_server.services.bandit.domain.decision_log import (
    LogCursor,
    LoggedDecision,
    LoggedReward,
    decision_key,
)
from ml_serving_server.services.bandit.memory_decision_log import MemoryDecisionLog
from ml_serving_server.services.bandit.postgres_decision_log import PostgresDecisionLog

T0 = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)  # within any retention


@pytest.fixture(params=["postgres", "memory"])
async def store(request, database_url):
    if request.param == "memory":
        yield MemoryDecisionLog()
        return
    log = PostgresDecisionLog(database_url, timeout_s=5, evaluation_timeout_s=30)
    yield log
    await log.close()


def bandit_name() -> str:
    return f"log-{uuid.uuid4().hex[:10]}"


def decision(bandit: str, i: int, *, chosen=(0,), offered=(0, 1, 2), context=(), incarnation=1,
             at: datetime | None = None) -> LoggedDecision:
    decision_id = f"d2.decision-{bandit}-{i}"
    return LoggedDecision(bandit=bandit, incarnation=incarnation, key=decision_key(decision_id), decision_id=decision_id,
                          time=at or T0 + timedelta(seconds=i), user_id=f"user-{i}", offered=offered, chosen=chosen,
                          scores=tuple(0.5 for _ in chosen), propensity=0.25,
                          choice_probabilities=tuple(0.25 for _ in chosen), context=context, policy="thompson")


def reward(d: LoggedDecision, arm: int, value: float) -> LoggedReward:
    return LoggedReward(d.bandit, d.incarnation, d.key, arm, value, d.time + timedelta(seconds=1))


async def test_decisions_page_newest_first_with_their_rewards(store):
    bandit = bandit_name()
    decisions = [decision(bandit, i, chosen=(i % 3, (i + 1) % 3)) for i in range(7)]
    await store.write(decisions, [reward(decisions[2], 2, 1.0), reward(decisions[2], 0, 0.5)])
    first = await store.page(bandit, 1, None, None, 3, None)
    assert [r.row.decision_id for r in first] == [d.decision_id for d in reversed(decisions[4:])]
    assert first[0].row == decisions[6]  # every field round-trips
    rest = await store.page(bandit, 1, None, None, 10, LogCursor(first[-1].row.time, first[-1].row.key))
    assert [r.row.decision_id for r in rest] == [d.decision_id for d in reversed(decisions[:4])]
    rewarded = next(r for r in rest if r.row.decision_id == decisions[2].decision_id)
    assert (rewarded.reward_sum, rewarded.reward_count) == (1.5, 2)
    window = await store.page(bandit, 1, T0 + timedelta(seconds=2), T0 + timedelta(seconds=4), 10, None)
    assert [r.row.decision_id for r in window] == [decisions[3].decision_id, decisions[2].decision_id]
    assert await store.page(bandit, 2, None, None, 10, None) == []  # another incarnation of the name


async def test_a_batch_written_twice_counts_once(store):
    bandit = bandit_name()
    d = decision(bandit, 1)
    rewards = [reward(d, 0, 1.0)]
    await store.write([d], rewards)
    await store.write([d], rewards)  # as after an acknowledgement lost on the way back
    [record] = await store.page(bandit, 1, None, None, 10, None)
    assert (record.reward_sum, record.reward_count) == (1.0, 1)


async def test_evaluation_columns_hold_the_first_arms_rewards_oldest_first(store):
    bandit = bandit_name()
    decisions = [decision(bandit, i, chosen=(i % 2, 2), offered=(0, 1, 2) if i % 2 else (0, 2),
                          context=(float(i), 1.0)) for i in range(4)]
    rewards = [reward(decisions[1], 1, 1.0), reward(decisions[1], 1, 0.5), reward(decisions[2], 2, 1.0)]
    await store.write(decisions, rewards)
    rows = await store.evaluation_rows(bandit, 1, None, None, 10)
    np.testing.assert_array_equal(rows.first_chosen, [0, 1, 0, 1])
    np.testing.assert_array_equal(rows.reward, [0.0, 1.5, 0.0, 0.0])  # decision 2's reward went to its 2nd arm
    np.testing.assert_array_equal(rows.rewarded, [False, True, False, False])
    np.testing.assert_array_equal(rows.offered_lengths, [2, 3, 2, 3])
    np.testing.assert_array_equal(rows.offered_flat, [0, 2, 0, 1, 2, 0, 2, 0, 1, 2])
    np.testing.assert_array_equal(rows.contexts, [[0, 1], [1, 1], [2, 1], [3, 1]])
    assert await store.evaluation_rows(bandit, 1, None, None, 3) is None  # more than the limit


async def test_retention_deletes_what_is_older_than_the_cut(store):
    bandit = bandit_name()
    old, new = decision(bandit, 1, at=T0 - timedelta(days=400)), decision(bandit, 2)
    await store.write([old, new], [reward(old, 0, 1.0), reward(new, 0, 1.0)])
    assert await store.delete_before(T0 - timedelta(days=300)) >= 2
    assert [r.row.decision_id for r in await store.page(bandit, 1, None, None, 10, None)] == [new.decision_id]


async def test_postgres_unreachable_is_unavailable_with_the_logs_reason():
    log = PostgresDecisionLog("postgresql://postgres@127.0.0.1:1/none", timeout_s=1, evaluation_timeout_s=1)
    with pytest.raises(Unavailable) as raised:
        await log.write([decision(bandit_name(), 1)], [])
    assert raised.value.reason.name == "DECISION_LOG_UNAVAILABLE"
    with pytest.raises(Unavailable):
        await log.page("b", 1, None, None, 10, None)
    await log.close()

"""The decision log through the service: what a selection logs, rewards, bounds, listing and
off-policy evaluation; over the in-memory stores (the contract tests hold PostgreSQL to the same)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from ml_serving_server.errors import FailedPrecondition, InvalidArgument, ResourceExhausted, Unavailable
from ml_serving_server.services.bandit.domain import off_policy
from ml_serving_server.services.bandit.domain.decision_log import DecisionLog
from ml_serving_server.services.bandit.domain.errors import ErrorReason
from ml_serving_server.services.bandit.domain.model import (
    ArmDefinition,
    BanditDefinition,
    ContextualAlgorithm,
    LearningCandidate,
    RewardInput,
)
from ml_serving_server.services.bandit.domain.service import BanditService
from ml_serving_server.services.bandit.memory_decision_log import MemoryDecisionLog
from ml_serving_server.services.bandit.memory_store import MemoryBanditStore

ALL = list(off_policy.Estimator)


def bandit(name: str = "b", arms=("a", "b", "c"), **fields) -> BanditDefinition:
    return BanditDefinition(name=name, arms=tuple(ArmDefinition(a) for a in arms), **fields)


@pytest.fixture
def logged():
    """A service whose decisions go to an in-memory log; (service, decision log, log store)."""
    store = MemoryDecisionLog()
    decision_log = DecisionLog(store, np.random.default_rng(5), flush_interval_s=60)
    service = BanditService(MemoryBanditStore(), rng=np.random.default_rng(6), max_state_age_s=0.0,
                            decision_log=decision_log)
    return service, decision_log, store


async def test_a_select_is_logged_with_the_probability_thompson_sampling_had_of_it(logged):
    service, decision_log, _ = logged
    await service.create_bandit(bandit(arms=("a", "b", "c", "d")))
    selection = await service.select("b", 2, ("a", "b", "d"), "user-7")
    page, token = await service.list_decisions("b", None, None, 10, "")
    [row] = page
    assert token == "" and row.decision_id == selection.decision.id and row.user_id == "user-7"
    assert row.offered_arm_ids == ("a", "b", "d") and [c.arm_id for c in row.choices] == list(
        selection.decision.arm_ids)
    # three arms with the same uniform posterior: each is first with 1/3, among two chosen with 2/3
    assert row.propensity == pytest.approx(1 / 3, abs=0.03)
    assert row.choice_probabilities == pytest.approx((2 / 3, 2 / 3), abs=0.03)
    assert row.algorithm is None and decision_log.counters.written_decisions == 1


async def test_lin_ucb_decisions_are_certain(logged):
    service, _, _ = logged
    await service.create_bandit(bandit(context_dimension=2, contextual_algorithm=ContextualAlgorithm.LIN_UCB))
    await service.select_contextual("b", [1.0, 0.5], None, (), "")
    [row], _ = await service.list_decisions("b", None, None, 10, "")
    assert (row.propensity, row.choice_probabilities, row.context) == (1.0, (1.0,), (1.0, 0.5))
    assert row.algorithm is ContextualAlgorithm.LIN_UCB


async def test_linear_thompson_decisions_log_the_probability_of_their_first_arm(logged):
    service, _, _ = logged
    await service.create_bandit(bandit(context_dimension=2))
    for _ in range(20):
        await service.select_contextual("b", [1.0, 0.5], None, (), "")
    page, _ = await service.list_decisions("b", None, None, 100, "")
    # no evidence yet: every arm's score has the same distribution, so each is first with 1/3
    assert [row.propensity for row in page] == pytest.approx([1 / 3] * 20, abs=1e-3)


async def test_rewards_of_decisions_are_logged_with_them(logged):
    service, _, _ = logged
    await service.create_bandit(bandit())
    decision = (await service.select("b", 2, (), "")).decision
    await service.reward(RewardInput(decision_id=decision.id, arm_id=decision.arm_ids[1], reward=0.25))
    await service.reward(RewardInput(decision_id=decision.id, arm_id=decision.arm_ids[0], reward=1.0, event_id="e"))
    await service.reward(RewardInput(decision_id=decision.id, arm_id=decision.arm_ids[0], reward=1.0, event_id="e"))
    await service.reward(RewardInput(bandit="b", arm_id="a", reward=1.0))  # no decision: nothing to log with
    [row], _ = await service.list_decisions("b", None, None, 10, "")
    assert (row.reward_sum, row.reward_count) == (1.25, 2)  # the duplicate counted once


async def test_pages_run_newest_first_and_a_foreign_token_is_refused(logged):
    service, _, _ = logged
    await service.create_bandit(bandit())
    ids = [(await service.select("b", None, (), "")).decision.id for _ in range(5)]
    first, token = await service.list_decisions("b", None, None, 3, "")
    rest, last = await service.list_decisions("b", None, None, 3, token)
    assert [d.decision_id for d in first + rest] == ids[::-1] and last == ""
    with pytest.raises(InvalidArgument) as raised:
        await service.list_decisions("b", None, None, 3, "bm90IG91cnM=")
    assert raised.value.reason is ErrorReason.INVALID_PAGE_TOKEN
    now = datetime.now(timezone.utc)
    with pytest.raises(InvalidArgument) as raised:
        await service.list_decisions("b", now, now - timedelta(seconds=1), 3, "")
    assert raised.value.field == "end_time"


async def test_what_is_pending_is_bounded_and_kept_while_the_store_is_down():
    class Down(MemoryDecisionLog):
        up = False

        async def write(self, decisions, rewards):
            if not self.up:  # as the PostgreSQL adapter says it
                raise Unavailable("down", reason=ErrorReason.DECISION_LOG_UNAVAILABLE)
            await super().write(decisions, rewards)

    store = Down()
    decision_log = DecisionLog(store, flush_interval_s=60, max_pending=100)
    service = BanditService(MemoryBanditStore(), decision_log=decision_log)
    await service.create_bandit(bandit())
    for _ in range(130):
        await service.select("b", None, (), "")
    assert (decision_log.pending, decision_log.counters.dropped) == (100, 30)
    with pytest.raises(Unavailable):
        await decision_log.flush()
    assert decision_log.pending == 100  # a failed write gives its batch back
    store.up = True
    await decision_log.close()
    assert decision_log.pending == 0 and len(await store.page("b", (await service.get_bandit("b")).incarnation,
                                                                None, None, 1000, None)) == 100


async def test_off_policy_estimates_cover_the_true_value_of_a_candidate(logged):
    service, _, _ = logged
    means = {"a": 0.2, "b": 0.5, "c": 0.35}
    await service.create_bandit(bandit(prior_alpha=20, prior_beta=20))  # strong priors: it keeps exploring
    coins = np.random.default_rng(11).random(3000)
    for coin in coins:
        decision = (await service.select("b", None, (), "")).decision
        arm = decision.arm_ids[0]
        await service.reward(RewardInput(decision_id=decision.id, reward=float(coin < means[arm])))
    candidate = {"a": 0.5, "c": 0.5}  # true value: 0.275, an arm mix the live policy rarely played
    result = await service.evaluate_policy("b", candidate, None, ALL, None, None)
    assert result.decision_count == 3000 and result.rewarded_count == 3000
    for estimate in result.estimates:
        # DR's folds are drawn unseeded: allow 4 standard errors rather than the 95% interval
        assert abs(estimate.value - 0.275) <= 4 * (estimate.upper - estimate.lower) / (2 * 1.96), estimate
        assert estimate.value == pytest.approx(0.275, abs=0.06), estimate
    assert 0 < result.effective_sample_size < 3000


async def test_evaluation_needs_one_candidate_known_arms_and_a_log():
    service = BanditService(MemoryBanditStore())
    await service.create_bandit(bandit())
    with pytest.raises(FailedPrecondition) as raised:
        await service.evaluate_policy("b", {"a": 1.0}, None, ALL, None, None)
    assert raised.value.reason is ErrorReason.DECISION_LOG_DISABLED


@pytest.mark.parametrize("probabilities, candidate, field", [
    ({}, None, "policy"),
    ({"a": 1.0}, LearningCandidate(), "policy"),
    ({"zzz": 1.0}, None, "arm_probabilities"),
    ({"a": 1.5}, None, "arm_probabilities"),
    ({"a": 0.0}, None, "arm_probabilities"),
    ({}, LearningCandidate(contextual=True), "policy.contextual"),
    ({}, LearningCandidate(prior_alpha=0.0), "policy.prior_alpha"),
    ({}, LearningCandidate(discount=0.9), "policy.discount"),
    ({}, LearningCandidate(exploration=float("nan")), "policy.exploration"),
])
async def test_bad_candidates_name_their_field(logged, probabilities, candidate, field):
    service, _, _ = logged
    await service.create_bandit(bandit())
    await service.select("b", None, (), "")
    with pytest.raises(InvalidArgument) as raised:
        await service.evaluate_policy("b", probabilities, candidate, ALL, None, None)
    assert raised.value.field == field


async def test_an_empty_window_says_so(logged):
    service, _, _ = logged
    await service.create_bandit(bandit())
    with pytest.raises(InvalidArgument) as raised:
        await service.evaluate_policy("b", {"a": 1.0}, None, ALL, None, None)
    assert "no decisions" in str(raised.value)


async def test_a_replica_runs_a_bounded_number_of_evaluations_at_once():
    class Slow(MemoryDecisionLog):
        def __init__(self):
            super().__init__()
            self.reading, self.go = asyncio.Event(), asyncio.Event()

        async def evaluation_rows(self, *args):
            self.reading.set()
            await self.go.wait()
            return await super().evaluation_rows(*args)

    store = Slow()
    service = BanditService(MemoryBanditStore(), decision_log=DecisionLog(store, flush_interval_s=60),
                            evaluation_concurrency=1)
    await service.create_bandit(bandit())
    await service.select("b", None, (), "")
    first = asyncio.create_task(service.evaluate_policy("b", {"a": 1.0}, None, ALL, None, None))
    await store.reading.wait()
    with pytest.raises(ResourceExhausted) as raised:
        await service.evaluate_policy("b", {"a": 1.0}, None, ALL, None, None)
    assert raised.value.reason is ErrorReason.EVALUATIONS_BUSY
    store.go.set()
    assert (await first).decision_count == 1
    assert (await service.evaluate_policy("b", {"a": 1.0}, None, ALL, None, None)).decision_count == 1  # free again


async def test_a_batch_the_store_refuses_is_dropped_and_the_log_goes_on(logged):
    class Picky(MemoryDecisionLog):
        refuse = True

        async def write(self, decisions, rewards):
            if self.refuse:
                self.refuse = False
                raise ValueError("a value the database rejects")
            await super().write(decisions, rewards)

    store = Picky()
    decision_log = DecisionLog(store, flush_interval_s=60)
    service = BanditService(MemoryBanditStore(), decision_log=decision_log)
    await service.create_bandit(bandit())
    await service.select("b", None, (), "")
    await decision_log.flush()  # refused: dropped, not retried forever
    later = (await service.select("b", None, (), "")).decision.id
    await decision_log.flush()
    assert decision_log.counters.dropped == 1 and decision_log.pending == 0
    [row], _ = await service.list_decisions("b", None, None, 10, "")
    assert row.decision_id == later


async def test_a_user_id_with_nul_is_refused_before_anything_is_logged(logged):
    service, decision_log, _ = logged
    await service.create_bandit(bandit())
    with pytest.raises(InvalidArgument) as raised:
        await service.select("b", None, (), "user\x00")
    assert raised.value.field == "user_id" and decision_log.pending == 0

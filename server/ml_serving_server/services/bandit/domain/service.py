"""The bandit service: selection and learning over a BanditStore.

Plain Python: no gRPC, no Redis. Requests are checked first (limits.py), so a rejected
request changes nothing.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from typing import Sequence

import numpy as np

from ....errors import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    listed,
    quoted,
)
from . import limits, linear_models, off_policy, policy
from .decision_ids import DecisionCodec, is_self_contained
from .errors import ErrorReason
from .decision_log import (
    DecisionLog,
    DecisionRecord,
    EvaluationRows,
    LogCursor,
    LoggedReward,
    PendingDecision,
    decision_key,
)
from .linear_models import LinearModelCache
from .model import (
    ArmCounts,
    ArmDefinition,
    BanditDefinition,
    ContextualAlgorithm,
    Decision,
    LearningCandidate,
    RewardEvent,
    RewardInput,
    RewardOutcome,
)
from .ports import BanditStore
from .pulls import PullTally
from .results import ArmStatistics, BanditStatistics, Choice, LoggedDecisionView, PolicyEvaluation, Selection
from .snapshot import Snapshot, SnapshotCache


def _now() -> datetime:
    return datetime.now(timezone.utc)


class BanditService:
    """The hot path, Select, does no state-store round trip in the steady state:

    - it samples from a snapshot of the bandit's counts at most `max_state_age_s` old
      (snapshot.py); SelectContextual scores from linear models as old, factorised once
      per read (linear_models.py);
    - its decision id is self-contained and signed (decision_ids.py), context included,
      so there is no decision record to write;
    - its pull counts are tallied in memory and written in batches (pulls.py).

    Rewards are applied to the store at once; statistics read it fresh. A definition
    change made here is seen at once, one made on another replica within `max_state_age_s`.
    """

    def __init__(self, store: BanditStore, rng: np.random.Generator | None = None,
                 max_state_age_s: float = 0.1, pull_flush_interval_s: float = 0.05, clock=time.monotonic,
                 decision_log: DecisionLog | None = None, evaluation_max_decisions: int = 1_000_000,
                 evaluation_concurrency: int = 1):
        self._store = store
        self._log = decision_log  # None: off (no PostgreSQL)
        self._evaluation_max = evaluation_max_decisions
        self._evaluation_slots = evaluation_concurrency  # evaluations that may run at once here
        self._rng = rng or np.random.default_rng()
        self._snapshots = SnapshotCache(store, max_state_age_s, clock)
        self._linear = LinearModelCache(store, max_state_age_s, clock)
        self._pulls = PullTally(store, pull_flush_interval_s)
        self._codec: DecisionCodec | None = None

    async def close(self) -> None:
        """Write the pull counts and log entries still pending."""
        await self._pulls.close()
        if self._log is not None:
            await self._log.close()

    # ----- definitions -----

    async def create_bandit(self, definition: BanditDefinition, actor: str = "") -> BanditDefinition:
        """Store a new bandit; `actor` (who asked) is recorded as its creator."""
        now, actor = _now(), limits.actor(actor)
        definition = definition.with_changes(create_time=now, update_time=now, created_by=actor, updated_by=actor)
        definition = limits.normalised(definition)
        if not await self._store.create(definition):
            raise AlreadyExists(f"bandit {quoted(definition.name)} already exists",
                                reason=ErrorReason.BANDIT_ALREADY_EXISTS, metadata={"bandit": definition.name})
        return definition

    async def get_bandit(self, name: str) -> BanditDefinition:
        limits.check_name(name, "name")
        definition = await self._store.get_definition(name)
        if definition is None:
            raise _bandit_not_found(name)
        return definition

    async def list_bandits(self, page_size: int, page_token: str) -> tuple[list[BanditDefinition], str]:
        limit = limits.check_page_size(page_size)
        after = limits.decode_page_token(page_token)
        found = await self._store.list_definitions(after, limit + 1)
        page = limits.page_within_budget(found, limit)
        more = len(found) > len(page)
        return page, (limits.encode_page_token(page[-1].name) if more else "")

    async def update_bandit(self, name: str, description: str, add_arms: Sequence[ArmDefinition],
                            disable_ids: Sequence[str], enable_ids: Sequence[str], actor: str = "") -> BanditDefinition:
        """Change a bandit's definition (compare-and-set); `actor` is recorded as its last editor."""
        limits.check_name(name, "name")
        limits.check_update(description, add_arms, disable_ids, enable_ids)
        both = set(disable_ids) & set(enable_ids)
        if both:
            raise InvalidArgument("enable_arm_ids", f"arms both enabled and disabled: {listed(sorted(both))}")
        snapshot = await self._snapshot(name, fresh=True)
        current = snapshot.definition
        known = set(current.arm_ids())
        limits.check_arm_ids("disable_arm_ids", disable_ids, known)
        limits.check_arm_ids("enable_arm_ids", enable_ids, known)
        arms = [
            ArmDefinition(a.id, a.description, (a.disabled or a.id in disable_ids) and a.id not in enable_ids,
                          a.model_version)
            for a in current.arms
        ]
        arms += list(add_arms)
        updated = current.with_changes(arms=tuple(arms), description=description or current.description,
                                       update_time=_now(), updated_by=limits.actor(actor))
        limits.check_updated(current, updated, add_arms)
        replaced = await self._store.replace_definition(updated, snapshot.version)
        self._snapshots.forget(name)
        if replaced is None:
            raise _bandit_not_found(name)
        if not replaced:
            raise Aborted(f"bandit {quoted(name)} changed while this update was made; read it again and retry",
                          reason=ErrorReason.CONCURRENT_UPDATE, metadata={"bandit": name})
        return updated

    async def delete_bandit(self, name: str) -> None:
        limits.check_name(name, "name")
        self._snapshots.forget(name)
        self._linear.forget(name)
        if not await self._store.delete(name):
            raise _bandit_not_found(name)

    # ----- selection -----

    async def select(self, bandit: str, k: int | None, candidates: Sequence[str], user_id: str) -> Selection:
        limits.check_selection(bandit, k, candidates, user_id)
        snapshot = await self._snapshot(bandit)
        definition = snapshot.definition
        arms = limits.candidates(definition, candidates, k)
        posteriors = {arm: snapshot.posteriors[arm] for arm in arms}
        ranked = policy.thompson_select(posteriors, k or 1, self._rng)
        return await self._decided(snapshot, arms, ranked, user_id)

    async def select_contextual(self, bandit: str, context: Sequence[float], k: int | None,
                                candidates: Sequence[str], user_id: str) -> Selection:
        limits.check_selection(bandit, k, candidates, user_id)
        limits.check_context_size(context, "context")
        snapshot = await self._snapshot(bandit)
        definition = snapshot.definition
        x = limits.context_vector(definition, context, "context")
        arms = limits.candidates(definition, candidates, k)
        models = await self._linear.get(definition)
        positions = np.fromiter((snapshot.positions[arm] for arm in arms), dtype=np.intp, count=len(arms))
        choice = linear_models.select(models, arms, positions, x, k or 1, definition, self._rng)
        return await self._decided(snapshot, arms, choice.ranked, user_id, x, choice)

    async def _decided(self, snapshot: Snapshot, offered: Sequence[str], ranked: list[tuple[str, float]],
                       user_id: str, context: np.ndarray | None = None,
                       choice: linear_models.LinearChoice | None = None) -> Selection:
        """The decision for `ranked`: its id carries what a reward needs, its pulls are tallied,
        and the decision log gets it (by reference: the log works out the rest off the request path)."""
        definition = snapshot.definition
        arm_ids, now = tuple(arm for arm, _ in ranked), _now()
        codec = await self._decision_codec()
        context = () if context is None else tuple(float(v) for v in context)
        decision_id = codec.encode(definition.name, tuple(snapshot.positions[arm] for arm in arm_ids), now, context)
        decision = Decision(decision_id, definition.name, arm_ids, context=context, user_id=user_id, time=now)
        self._pulls.add(definition.name, definition.incarnation, arm_ids)
        algorithm = definition.contextual_algorithm if choice is not None else None
        if self._log is not None:
            self._log.decided(PendingDecision(
                definition.name, definition.incarnation, decision_id, now, user_id, offered, ranked,
                snapshot.positions, algorithm, posteriors=snapshot.posteriors if choice is None else None,
                context=context, mean=choice.mean if choice else None, scale=choice.scale if choice else None))
        return Selection.ranked(decision, ranked, algorithm)

    # ----- rewards -----

    async def reward(self, item: RewardInput) -> tuple[bool, RewardEvent]:
        """(whether it was a duplicate, the event); an event id reused for another reward is a conflict."""
        events = await self._resolve([item], field_prefix="")
        applied = await self._apply(events, field_prefix="")
        return (not applied[0]), events[0]

    async def batch_reward(self, items: Sequence[RewardInput]) -> tuple[int, int]:
        """(newly applied, duplicates). A conflicting event id fails the call after the
        batch's other rewards were applied, as a store failure midway would."""
        limits.check_batch_size(items)
        events = await self._resolve(items, field_prefix="rewards[{}].")
        applied = await self._apply(events, field_prefix="rewards[{}].")
        newly = sum(applied)
        return newly, len(applied) - newly

    # ----- statistics -----

    async def stats(self, bandit: str) -> BanditStatistics:
        limits.check_name(bandit, "bandit")
        await self._pulls.flush(bandit)  # this replica's own selections show at once
        snapshot = await self._snapshot(bandit, fresh=True)
        definition, counts = snapshot.definition, snapshot.counts
        total_pulls = sum(c.pulls for c in counts.values())
        arms = []
        for arm in definition.arms:
            c = counts.get(arm.id, ArmCounts())
            posterior = snapshot.posteriors[arm.id]
            arms.append(ArmStatistics(
                arm_id=arm.id, counts=c, alpha=posterior.alpha, beta=posterior.beta, mean=posterior.mean,
                interval=policy.credible_interval(posterior.alpha, posterior.beta), disabled=arm.disabled,
                selection_share=(c.pulls / total_pulls) if total_pulls else 0.0,
            ))
        return BanditStatistics(bandit, total_pulls, sum(c.reward_count for c in counts.values()), arms)

    # ----- the decision log -----

    async def list_decisions(self, bandit: str, start: datetime | None, end: datetime | None, page_size: int,
                             page_token: str) -> tuple[list[LoggedDecisionView], str]:
        """Newest first; this replica's own pending entries are written first, so they show at once."""
        limits.check_name(bandit, "bandit")
        limit = limits.check_page_size(page_size)
        cursor = limits.decode_log_cursor(page_token)
        limits.check_window(start, end)
        definition = await self._logged_definition(bandit)
        await self._log.flush()
        records = await self._log.store.page(bandit, definition.incarnation, start, end, limit + 1, cursor)
        page = [_decision_view(definition, record) for record in records[:limit]]
        last = records[limit - 1].row if len(records) > limit else None
        return page, (limits.encode_log_cursor(LogCursor(last.time, last.key)) if last else "")

    async def evaluate_policy(self, bandit: str, arm_probabilities: dict[str, float],
                              candidate: LearningCandidate | None, estimators: Sequence[off_policy.Estimator],
                              start: datetime | None, end: datetime | None) -> PolicyEvaluation:
        """Off-policy estimates of the candidate's mean reward on the logged decisions in [start, end)."""
        limits.check_name(bandit, "bandit")
        limits.check_window(start, end)
        if bool(arm_probabilities) == (candidate is not None):
            raise InvalidArgument("policy", "set exactly one of arm_probabilities and policy")
        if candidate is not None:
            limits.check_candidate_values({name: getattr(candidate, name) for name in _CANDIDATE_VALUES})
        definition = await self._logged_definition(bandit)
        target = _candidate_policy(definition, arm_probabilities, candidate)
        if self._evaluation_slots < 1:
            raise ResourceExhausted("as many policy evaluations as this replica runs at once are running; retry "
                                    "later", reason=ErrorReason.EVALUATIONS_BUSY)
        self._evaluation_slots -= 1
        try:
            return await self._evaluate(definition, target, estimators, start, end)
        finally:
            self._evaluation_slots += 1

    async def _evaluate(self, definition: BanditDefinition, target: off_policy.CandidatePolicy,
                        estimators: Sequence[off_policy.Estimator], start: datetime | None,
                        end: datetime | None) -> PolicyEvaluation:
        bandit = definition.name
        await self._log.flush()
        rows = await self._log.store.evaluation_rows(bandit, definition.incarnation, start, end, self._evaluation_max)
        logged = _logged_decisions(definition, rows, target, self._evaluation_max)
        # Seconds of numpy on a million decisions: in a thread, so the server keeps serving meanwhile.
        evaluation = await asyncio.to_thread(off_policy.evaluate, logged, target, list(estimators) or
                                             list(off_policy.Estimator), np.random.default_rng())
        return PolicyEvaluation(evaluation.decision_count, int(rows.rewarded.sum()), evaluation.logged_value,
                                evaluation.effective_sample_size, evaluation.estimates)

    async def _logged_definition(self, bandit: str) -> BanditDefinition:
        if self._log is None:
            raise FailedPrecondition("the decision log is off: it needs PostgreSQL (DATABASE_URL) and "
                                     "BANDIT_DECISION_LOG=true", reason=ErrorReason.DECISION_LOG_DISABLED)
        return (await self._snapshot(bandit, fresh=True)).definition

    # ----- helpers -----

    async def _snapshot(self, name: str, fresh: bool = False) -> Snapshot:
        snapshot = await self._snapshots.get(name, fresh)
        if snapshot is None:
            raise _bandit_not_found(name)
        return snapshot

    async def _definition_with_arm(self, name: str, arm_id: str) -> BanditDefinition:
        """The definition, re-read once if a cached one lacks the arm (arms are only ever added)."""
        definition = (await self._snapshot(name)).definition
        if arm_id and arm_id not in definition.arm_ids():
            definition = (await self._snapshot(name, fresh=True)).definition
        return definition

    async def _apply(self, events: list[RewardEvent], field_prefix: str) -> list[bool]:
        """Per event, whether it was newly counted (False: a duplicate)."""
        outcomes = await self._store.apply_rewards(events)
        for event, outcome in zip(events, outcomes):
            if outcome is RewardOutcome.BANDIT_GONE:  # deleted meanwhile
                self._snapshots.forget(event.bandit)
                raise _bandit_not_found(event.bandit)
        self._log_rewards(events, outcomes)
        for index, outcome in enumerate(outcomes):
            if outcome is RewardOutcome.CONFLICT:
                raise _event_id_conflict(events[index], field_prefix.format(index), index, batch=len(events) > 1)
        return [outcome is RewardOutcome.APPLIED for outcome in outcomes]

    def _log_rewards(self, events: list[RewardEvent], outcomes: list[RewardOutcome]) -> None:
        """Rewards of decisions go to the decision log; the others have no decision to go with."""
        if self._log is None:
            return
        now = _now()
        for event, outcome in zip(events, outcomes):
            if outcome is RewardOutcome.APPLIED and event.decision_id:
                self._log.rewarded(LoggedReward(event.bandit, event.incarnation, decision_key(event.decision_id),
                                                event.arm_position, event.reward, now))

    async def _decision_codec(self, reload: bool = False) -> DecisionCodec:
        if self._codec is None or reload:
            self._codec = DecisionCodec(await self._store.decision_key())
        return self._codec

    async def _find_decisions(self, ids: Sequence[str]) -> dict[str, Decision | None]:
        """Self-contained ids are decoded here; the others (contextual decisions of an earlier
        release, which stored them) are looked up."""
        found: dict[str, Decision | None] = {}
        if any(is_self_contained(i) for i in ids):
            codec = await self._decision_codec()
            found.update((i, codec.decode(i)) for i in ids if is_self_contained(i))
            if None in found.values():  # the shared key may have been replaced: read it once more
                codec = await self._decision_codec(reload=True)
                found.update((i, codec.decode(i)) for i, d in list(found.items()) if d is None)
        stored = [i for i in ids if not is_self_contained(i)]
        if stored:
            found.update(zip(stored, await self._store.get_decisions(stored)))
        return found

    async def _resolve(self, items: Sequence[RewardInput], field_prefix: str) -> list[RewardEvent]:
        """Check every reward and tie it to a bandit and arm; raise before anything is applied."""
        for index, item in enumerate(items):
            limits.check_reward_fields(item, field_prefix.format(index), index)
        decisions = await self._find_decisions([item.decision_id for item in items if item.decision_id])
        definitions: dict[str, BanditDefinition] = {}
        events = []
        for index, item in enumerate(items):
            prefix = field_prefix.format(index)
            decision = decisions.get(item.decision_id) if item.decision_id else None
            if item.decision_id and decision is None:
                raise _decision_not_found(item.decision_id, prefix, index)
            name = decision.bandit if decision else item.bandit
            if decision and item.bandit and item.bandit != decision.bandit:
                raise InvalidArgument(prefix + "bandit", f"decision belongs to bandit {quoted(decision.bandit)}")
            if name not in definitions or (item.arm_id and item.arm_id not in definitions[name].arm_ids()):
                definitions[name] = await self._definition_with_arm(name, item.arm_id)
            definition = definitions[name]
            if decision and decision.arm_positions:  # an arm added since our snapshot: read it again
                if decision.named(definition) is None:
                    definitions[name] = definition = (await self._snapshot(name, fresh=True)).definition
                decision = decision.named(definition)
            if item.decision_id and (decision is None or not _current(decision, definition)):
                raise _decision_not_found(item.decision_id, prefix, index)
            arm = _reward_arm(definition, decision, item, prefix)
            context = decision.context if decision else tuple(item.context)
            if context and not decision:
                limits.context_vector(definition, context, prefix + "context")
            events.append(RewardEvent(name, definition.incarnation, arm, float(item.reward), item.event_id,
                                      context, definition.decision_ttl_seconds, item.decision_id,
                                      definition.discount, definition.positions[arm]))
        return events


def _reward_arm(definition: BanditDefinition, decision: Decision | None, item: RewardInput, prefix: str) -> str:
    if decision is None:
        if item.arm_id not in definition.arm_ids():
            raise InvalidArgument(prefix + "arm_id", f"unknown arm {quoted(item.arm_id)}",
                                  reason=ErrorReason.UNKNOWN_ARM)
        return item.arm_id
    if not item.arm_id:
        if len(decision.arm_ids) != 1:
            raise InvalidArgument(prefix + "arm_id", "is required: the decision chose several arms")
        return decision.arm_ids[0]
    if item.arm_id not in decision.arm_ids:
        raise InvalidArgument(prefix + "arm_id", f"arm {quoted(item.arm_id)} was not chosen by this decision",
                              reason=ErrorReason.ARM_NOT_IN_DECISION)
    return item.arm_id


def _linear_state(definition: BanditDefinition, sums) -> policy.LinearArmState:
    if sums is None:
        return policy.LinearArmState.initial(definition.context_dimension, definition.ridge_lambda)
    return policy.LinearArmState.from_sums(*sums, definition.ridge_lambda)


def _current(decision: Decision, definition: BanditDefinition) -> bool:
    """Made by this incarnation of the bandit (not one deleted since), and not expired."""
    if decision.time is None or (definition.create_time and decision.time < definition.create_time):
        return False
    if decision.context and len(decision.context) != definition.context_dimension:
        return False
    return (_now() - decision.time).total_seconds() <= definition.decision_ttl_seconds


def _bandit_not_found(name: str) -> NotFound:
    return NotFound(f"bandit {quoted(name)} not found; create it with CreateBandit first",
                    reason=ErrorReason.BANDIT_NOT_FOUND, metadata={"bandit": name})


def _decision_not_found(decision_id: str, prefix: str, index: int) -> NotFound:
    return NotFound(f"decision {quoted(decision_id)} not found (unknown or expired)",
                    reason=ErrorReason.DECISION_NOT_FOUND,
                    metadata={"field": prefix + "decision_id", "index": str(index)})


def _event_id_conflict(event: RewardEvent, prefix: str, index: int, batch: bool) -> AlreadyExists:
    scope = "this decision" if event.decision_id else f"bandit {quoted(event.bandit)}"
    message = (f"{prefix}event_id: event id {quoted(event.event_id)} was already counted for {scope} with another "
               "arm, reward or context; a retry must repeat the reward exactly, a new reward needs a new event id")
    if batch:
        message += "; the batch's other rewards went through (sent again, none counts twice)"
    return AlreadyExists(message, reason=ErrorReason.EVENT_ID_CONFLICT,
                         metadata={"field": prefix + "event_id", "event_id": event.event_id, "index": str(index)})


_ALGORITHM_BY_POLICY = {"thompson": None, "linear_thompson": ContextualAlgorithm.LINEAR_THOMPSON,
                        "lin_ucb": ContextualAlgorithm.LIN_UCB}


def _decision_view(definition: BanditDefinition, record: DecisionRecord) -> LoggedDecisionView:
    row, arms = record.row, definition.arms
    return LoggedDecisionView(
        decision_id=row.decision_id, bandit=row.bandit,
        choices=[Choice(arms[p].id, score, rank) for rank, (p, score) in enumerate(zip(row.chosen, row.scores))],
        propensity=row.propensity, choice_probabilities=row.choice_probabilities,
        offered_arm_ids=tuple(arms[p].id for p in row.offered), context=row.context, user_id=row.user_id,
        time=row.time, reward_sum=record.reward_sum, reward_count=record.reward_count,
        algorithm=_ALGORITHM_BY_POLICY[row.policy])


_CANDIDATE_VALUES = ("prior_alpha", "prior_beta", "exploration", "ridge_lambda", "discount")


def _candidate_policy(definition: BanditDefinition, arm_probabilities: dict[str, float],
                      candidate: LearningCandidate | None) -> off_policy.CandidatePolicy:
    if candidate is None:
        limits.check_arm_probabilities(arm_probabilities, definition)
        return off_policy.CandidatePolicy.fixed({definition.positions[arm]: p for arm, p in arm_probabilities.items()})
    if candidate.contextual and not definition.context_dimension:
        raise InvalidArgument("policy.contextual", f"bandit {quoted(definition.name)} has no context to score",
                              reason=ErrorReason.NOT_CONTEXTUAL)
    values = {name: getattr(candidate, name) for name in _CANDIDATE_VALUES}
    own = {name: getattr(definition, name) for name in _CANDIDATE_VALUES}
    chosen = {name: own[name] if value is None else value for name, value in values.items()}
    if not candidate.contextual:
        kind = off_policy.CandidateKind.THOMPSON
    elif (candidate.contextual_algorithm or definition.contextual_algorithm) is ContextualAlgorithm.LIN_UCB:
        kind = off_policy.CandidateKind.LIN_UCB
    else:
        kind = off_policy.CandidateKind.LINEAR_THOMPSON
    return off_policy.CandidatePolicy(kind, **chosen)


def _logged_decisions(definition: BanditDefinition, rows: EvaluationRows | None,
                      candidate: off_policy.CandidatePolicy, most: int) -> off_policy.LoggedDecisions:
    if rows is None:
        raise InvalidArgument("start_time", f"the window holds more than {most} logged decisions "
                              "(BANDIT_EVALUATION_MAX_DECISIONS); narrow it with start_time and end_time")
    n = rows.first_chosen.shape[0]
    if n == 0:
        raise InvalidArgument("start_time", "no decisions were logged in this window")
    if candidate.contextual and rows.contexts is None:
        raise InvalidArgument("policy.contextual", "decisions in this window were made without a context "
                              "(by Select): evaluate a context-free candidate, or a window of SelectContextual "
                              "decisions only")
    offered = np.zeros((n, len(definition.arms)), dtype=bool)
    offered[np.repeat(np.arange(n), rows.offered_lengths), rows.offered_flat] = True
    if candidate.kind is off_policy.CandidateKind.FIXED:
        known = np.zeros(len(definition.arms), dtype=bool)
        known[list(candidate.distribution)] = True
        uncovered = ~(offered & known).any(axis=1)
        if uncovered.any():
            raise InvalidArgument("arm_probabilities", f"{int(uncovered.sum())} logged decisions offered none of "
                                  "these arms: give a probability to an arm each decision offered")
    return off_policy.LoggedDecisions(
        chosen=rows.first_chosen, propensity=rows.propensity, reward=rows.reward, arm_count=len(definition.arms),
        contexts=rows.contexts if candidate.contextual else None, offered=offered, rewarded=rows.rewarded)

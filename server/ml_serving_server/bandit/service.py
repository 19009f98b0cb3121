"""The bandit service: validation, selection and learning, over a BanditStore.

Plain Python: no gRPC, no Redis. Every way a request can be wrong is checked here,
before anything is written, so a rejected request changes nothing.
"""

from __future__ import annotations

import base64
import math
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

import numpy as np

from ..errors import Aborted, AlreadyExists, InvalidArgument, NotFound
from . import policy
from .decision_ids import DecisionCodec, is_self_contained
from .model import (
    ArmCounts,
    ArmDefinition,
    BanditDefinition,
    ContextualAlgorithm,
    Decision,
    RewardEvent,
    RewardInput,
)
from .ports import BanditStore
from .pulls import PullTally

NAME_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_ARMS = 1000
MAX_CONTEXT_DIMENSION = 256
MAX_BATCH = 10_000
MAX_PAGE_SIZE = 1000
MAX_ID_LENGTH = 512  # decision and event ids: longer ones are not ours, and would bloat error messages
MAX_CONTEXT_VALUE = 1e6  # larger features would overflow the sums x x^T kept per arm
MAX_PRIOR = 1e6


@dataclass(frozen=True)
class _Snapshot:
    """A bandit's definition, counts and posteriors as last read, and when."""

    version: int
    definition: BanditDefinition
    counts: dict[str, ArmCounts]
    posteriors: dict[str, policy.BetaPosterior]  # built once per read, reused by every Select
    loaded_at: float


@dataclass(frozen=True)
class Choice:
    arm_id: str
    score: float
    rank: int


@dataclass(frozen=True)
class Selection:
    decision: Decision
    choices: list[Choice]
    algorithm: ContextualAlgorithm | None = None


@dataclass(frozen=True)
class ArmStatistics:
    arm_id: str
    counts: ArmCounts
    alpha: float
    beta: float
    mean: float
    interval: tuple[float, float]
    selection_share: float
    disabled: bool


@dataclass(frozen=True)
class BanditStatistics:
    bandit: str
    total_pulls: int
    total_reward_count: int
    arms: list[ArmStatistics]


def _check_name(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if not NAME_PATTERN.match(value):
        raise InvalidArgument(field, "must be 1 to 128 characters of letters, digits and . _ : -")
    return value


def _now() -> datetime:
    return datetime.now(timezone.utc)


class BanditService:
    """The hot path, Select, does no state-store round trip in the steady state:

    - it samples from a snapshot of the bandit's counts at most `max_state_age_s` old
      (Thompson sampling tolerates slightly stale posteriors; rewards arrive late anyway);
    - its decision id is self-contained and signed (decision_ids.py), so there is no
      decision record to write;
    - its pull counts are tallied in memory and written in batches (pulls.py).

    Rewards are applied to the store at once; statistics read it fresh. A definition
    change made here is seen at once, one made on another replica within `max_state_age_s`.
    """

    def __init__(self, store: BanditStore, rng: np.random.Generator | None = None,
                 max_state_age_s: float = 0.1, pull_flush_interval_s: float = 0.05, clock=time.monotonic):
        self._store = store
        self._rng = rng or np.random.default_rng()
        self._max_age = max_state_age_s
        self._clock = clock
        self._snapshots: dict[str, _Snapshot] = {}
        self._pulls = PullTally(store, pull_flush_interval_s)
        self._codec: DecisionCodec | None = None

    async def close(self) -> None:
        """Write the pull counts still pending."""
        await self._pulls.close()

    # ----- definitions -----

    async def create_bandit(self, definition: BanditDefinition) -> BanditDefinition:
        definition = self._normalised(definition)
        now = _now()
        definition = definition.with_changes(create_time=now, update_time=now)
        if not await self._store.create(definition):
            raise AlreadyExists(f"bandit {definition.name!r} already exists", reason="BANDIT_ALREADY_EXISTS",
                                metadata={"bandit": definition.name})
        return definition

    async def get_bandit(self, name: str) -> BanditDefinition:
        _check_name(name, "name")
        definition = await self._store.get_definition(name)
        if definition is None:
            raise self._not_found(name)
        return definition

    async def list_bandits(self, page_size: int, page_token: str) -> tuple[list[BanditDefinition], str]:
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"must be 0 to {MAX_PAGE_SIZE}")
        limit = page_size or 100
        after = _decode_token(page_token)
        page = await self._store.list_definitions(after, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        return page, (_encode_token(page[-1].name) if more else "")

    async def update_bandit(self, name: str, description: str, add_arms: Sequence[ArmDefinition],
                            disable_ids: Sequence[str], enable_ids: Sequence[str]) -> BanditDefinition:
        _check_name(name, "name")
        snapshot = await self._snapshot(name, fresh=True)
        current = snapshot.definition
        known = set(current.arm_ids())
        for field, ids in (("disable_arm_ids", disable_ids), ("enable_arm_ids", enable_ids)):
            for arm_id in ids:
                _check_name(arm_id, field)
                if arm_id not in known:
                    raise InvalidArgument(field, f"unknown arm {arm_id!r}", reason="UNKNOWN_ARM")
        both = set(disable_ids) & set(enable_ids)
        if both:
            raise InvalidArgument("enable_arm_ids", f"arms both enabled and disabled: {sorted(both)}")
        arms = [
            ArmDefinition(a.id, a.description, (a.disabled or a.id in disable_ids) and a.id not in enable_ids,
                          a.model_version)
            for a in current.arms
        ]
        arms += list(add_arms)
        updated = current.with_changes(arms=tuple(arms), description=description or current.description,
                                       update_time=_now())
        updated = self._normalised(updated)
        replaced = await self._store.replace_definition(updated, snapshot.version)
        self._snapshots.pop(name, None)
        if replaced is None:
            raise self._not_found(name)
        if not replaced:
            raise Aborted(f"bandit {name!r} changed while this update was made; read it again and retry",
                          metadata={"bandit": name})
        return updated

    async def delete_bandit(self, name: str) -> None:
        _check_name(name, "name")
        self._snapshots.pop(name, None)
        if not await self._store.delete(name):
            raise self._not_found(name)

    # ----- selection -----

    async def select(self, bandit: str, k: int | None, candidates: Sequence[str], user_id: str) -> Selection:
        _check_name(bandit, "bandit")
        snapshot = await self._snapshot(bandit)
        definition = snapshot.definition
        arms = self._candidates(definition, candidates, k)
        posteriors = {arm: snapshot.posteriors[arm] for arm in arms}
        ranked = policy.thompson_select(posteriors, k or 1, self._rng)
        arm_ids, now = tuple(arm for arm, _ in ranked), _now()
        codec = await self._decision_codec()
        decision = Decision(codec.encode(bandit, arm_ids, now), bandit, arm_ids, user_id=user_id, time=now)
        self._pulls.add(bandit, definition.incarnation, arm_ids)
        return Selection(decision, _choices(ranked))

    async def select_contextual(self, bandit: str, context: Sequence[float], k: int | None,
                                candidates: Sequence[str], user_id: str) -> Selection:
        _check_name(bandit, "bandit")
        definition = (await self._snapshot(bandit)).definition
        x = self._context_vector(definition, context, "context")
        arms = self._candidates(definition, candidates, k)
        sums = await self._store.load_linear(bandit, definition.context_dimension)
        states = {arm: self._linear_state(definition, sums.get(arm)) for arm in arms}
        if definition.contextual_algorithm is ContextualAlgorithm.LIN_UCB:
            ranked = policy.linucb_select(states, x, k or 1, definition.exploration)
        else:
            ranked = policy.linear_thompson_select(states, x, k or 1, definition.exploration, self._rng)
        decision = Decision(id=uuid.uuid4().hex, bandit=bandit, arm_ids=tuple(a for a, _ in ranked),
                            context=tuple(float(v) for v in x), user_id=user_id, time=_now())
        if not await self._store.record_decision(decision, definition.incarnation, definition.decision_ttl_seconds):
            self._snapshots.pop(bandit, None)  # deleted since our snapshot
            raise self._not_found(bandit)
        return Selection(decision, _choices(ranked), definition.contextual_algorithm)

    # ----- rewards -----

    async def reward(self, item: RewardInput) -> tuple[bool, RewardEvent]:
        events = await self._resolve([item], field_prefix="")
        applied = await self._apply(events)
        return (not applied[0]), events[0]

    async def batch_reward(self, items: Sequence[RewardInput]) -> tuple[int, int]:
        if not items:
            raise InvalidArgument("rewards", "must hold at least one reward")
        if len(items) > MAX_BATCH:
            raise InvalidArgument("rewards", f"at most {MAX_BATCH} rewards per batch")
        events = await self._resolve(items, field_prefix="rewards[{}].")
        applied = await self._apply(events)
        newly = sum(applied)
        return newly, len(applied) - newly

    # ----- statistics -----

    async def stats(self, bandit: str) -> BanditStatistics:
        _check_name(bandit, "bandit")
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

    # ----- helpers -----

    async def _snapshot(self, name: str, fresh: bool = False) -> _Snapshot:
        """The cached snapshot while young enough, else counts in one round trip (and the
        definition too, only when its version moved)."""
        cached = self._snapshots.get(name)
        now = self._clock()
        if cached is not None and not fresh and now - cached.loaded_at <= self._max_age:
            return cached
        loaded = await self._store.load_counts(name)
        if loaded is None:
            self._snapshots.pop(name, None)
            raise self._not_found(name)
        version, counts = loaded
        if cached is not None and cached.version == version:
            definition = cached.definition
        else:
            definition = await self._store.get_definition(name)
            if definition is None:
                raise self._not_found(name)
        posteriors = {arm: _posterior(definition, counts.get(arm, ArmCounts())) for arm in definition.arm_ids()}
        self._snapshots[name] = _Snapshot(version, definition, counts, posteriors, now)
        return self._snapshots[name]

    async def _definition_with_arm(self, name: str, arm_id: str) -> BanditDefinition:
        """The definition, re-read once if a cached one lacks the arm (arms are only ever added)."""
        definition = (await self._snapshot(name)).definition
        if arm_id and arm_id not in definition.arm_ids():
            definition = (await self._snapshot(name, fresh=True)).definition
        return definition

    async def _apply(self, events: list[RewardEvent]) -> list[bool]:
        outcomes = await self._store.apply_rewards(events)
        for event, outcome in zip(events, outcomes):
            if outcome is None:  # the bandit was deleted meanwhile
                self._snapshots.pop(event.bandit, None)
                raise self._not_found(event.bandit)
        return outcomes

    def _candidates(self, definition: BanditDefinition, candidates: Sequence[str], k: int | None) -> list[str]:
        enabled = definition.enabled_arm_ids()
        if candidates:
            for arm_id in candidates:
                _check_name(arm_id, "candidate_arm_ids")
            known = set(definition.arm_ids())
            unknown = [c for c in candidates if c not in known]
            if unknown:
                raise InvalidArgument("candidate_arm_ids", f"unknown arms {unknown}", reason="UNKNOWN_ARM")
            allowed = set(enabled)
            arms = [c for c in dict.fromkeys(candidates) if c in allowed]
        else:
            arms = enabled
        if k is not None and k < 1:
            raise InvalidArgument("k", f"must be at least 1, got {k}")
        if (k or 1) > len(arms):
            raise InvalidArgument("k", f"asks for {k or 1} arms but only {len(arms)} enabled candidates exist",
                                  reason="NOT_ENOUGH_ARMS")
        return arms

    def _context_vector(self, definition: BanditDefinition, context: Sequence[float], field: str) -> np.ndarray:
        if definition.context_dimension == 0:
            raise InvalidArgument("bandit", f"bandit {definition.name!r} has no context_dimension",
                                  reason="NOT_CONTEXTUAL")
        if len(context) != definition.context_dimension:
            raise InvalidArgument(field, f"has {len(context)} values, bandit {definition.name!r} expects "
                                  f"{definition.context_dimension}", reason="CONTEXT_DIMENSION_MISMATCH")
        x = np.asarray(context, dtype=np.float64)
        if not (np.all(np.isfinite(x)) and np.all(np.abs(x) <= MAX_CONTEXT_VALUE)):
            raise InvalidArgument(field, f"values must be finite numbers within ±{MAX_CONTEXT_VALUE:g}")
        return x

    def _linear_state(self, definition: BanditDefinition, sums) -> policy.LinearArmState:
        if sums is None:
            return policy.LinearArmState.initial(definition.context_dimension, definition.ridge_lambda)
        return policy.LinearArmState.from_sums(*sums, definition.ridge_lambda)

    async def _decision_codec(self, reload: bool = False) -> DecisionCodec:
        if self._codec is None or reload:
            self._codec = DecisionCodec(await self._store.decision_key())
        return self._codec

    async def _find_decisions(self, ids: Sequence[str]) -> dict[str, Decision | None]:
        """Self-contained ids are decoded here; the others (contextual) are looked up."""
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
            _check_reward_fields(item, field_prefix.format(index), index)
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
                raise InvalidArgument(prefix + "bandit", f"decision belongs to bandit {decision.bandit!r}")
            if name not in definitions or (item.arm_id and item.arm_id not in definitions[name].arm_ids()):
                definitions[name] = await self._definition_with_arm(name, item.arm_id)
            definition = definitions[name]
            if decision and not _current(decision, definition):
                raise _decision_not_found(item.decision_id, prefix, index)
            arm = self._reward_arm(definition, decision, item, prefix)
            context = decision.context if decision else tuple(item.context)
            if context and not decision:
                self._context_vector(definition, context, prefix + "context")
            events.append(RewardEvent(name, definition.incarnation, arm, float(item.reward), item.event_id,
                                      context, definition.decision_ttl_seconds))
        return events

    def _reward_arm(self, definition: BanditDefinition, decision: Decision | None, item: RewardInput,
                    prefix: str) -> str:
        if decision is None:
            if item.arm_id not in definition.arm_ids():
                raise InvalidArgument(prefix + "arm_id", f"unknown arm {item.arm_id!r}", reason="UNKNOWN_ARM")
            return item.arm_id
        if not item.arm_id:
            if len(decision.arm_ids) != 1:
                raise InvalidArgument(prefix + "arm_id", "is required: the decision chose several arms")
            return decision.arm_ids[0]
        if item.arm_id not in decision.arm_ids:
            raise InvalidArgument(prefix + "arm_id", f"arm {item.arm_id!r} was not chosen by this decision",
                                  reason="ARM_NOT_IN_DECISION")
        return item.arm_id

    def _normalised(self, d: BanditDefinition) -> BanditDefinition:
        """Validate a definition and fill in defaults (0 means 'the default')."""
        _check_name(d.name, "bandit.name")
        if not d.arms:
            raise InvalidArgument("bandit.arms", "must hold at least one arm")
        if len(d.arms) > MAX_ARMS:
            raise InvalidArgument("bandit.arms", f"at most {MAX_ARMS} arms")
        seen: set[str] = set()
        for index, arm in enumerate(d.arms):
            _check_name(arm.id, f"bandit.arms[{index}].id")
            if arm.id in seen:
                raise InvalidArgument(f"bandit.arms[{index}].id", f"duplicate arm id {arm.id!r}")
            seen.add(arm.id)
        for field in ("prior_alpha", "prior_beta", "exploration", "ridge_lambda"):
            value = getattr(d, field)
            if not (math.isfinite(value) and 0 <= value <= MAX_PRIOR):
                raise InvalidArgument(f"bandit.{field}", f"must be a number from 0 to {MAX_PRIOR:g}")
        if d.discount:
            raise InvalidArgument("bandit.discount", "is not supported yet; leave it 0")
        if d.context_dimension > MAX_CONTEXT_DIMENSION:
            raise InvalidArgument("bandit.context_dimension", f"at most {MAX_CONTEXT_DIMENSION}")
        return d.with_changes(
            prior_alpha=d.prior_alpha or 1.0,
            prior_beta=d.prior_beta or 1.0,
            exploration=d.exploration or 1.0,
            ridge_lambda=d.ridge_lambda or 1.0,
            decision_ttl_seconds=d.decision_ttl_seconds or 7 * 24 * 3600,
        )

    @staticmethod
    def _not_found(name: str) -> NotFound:
        return NotFound(f"bandit {name!r} not found; create it with CreateBandit first",
                        reason="BANDIT_NOT_FOUND", metadata={"bandit": name})


def _posterior(definition: BanditDefinition, counts: ArmCounts) -> policy.BetaPosterior:
    """Prior plus evidence: a reward r counts r successes and 1 - r failures."""
    return policy.BetaPosterior(definition.prior_alpha + counts.reward_sum, definition.prior_beta + counts.failure_sum)


def _choices(ranked: list[tuple[str, float]]) -> list[Choice]:
    return [Choice(arm, float(score), rank) for rank, (arm, score) in enumerate(ranked)]


def _current(decision: Decision, definition: BanditDefinition) -> bool:
    """Made by this incarnation of the bandit (not one deleted since), and not expired."""
    if decision.time is None or (definition.create_time and decision.time < definition.create_time):
        return False
    if decision.context and len(decision.context) != definition.context_dimension:
        return False
    return (_now() - decision.time).total_seconds() <= definition.decision_ttl_seconds


def _decision_not_found(decision_id: str, prefix: str, index: int) -> NotFound:
    return NotFound(f"decision {decision_id!r} not found (unknown or expired)", reason="DECISION_NOT_FOUND",
                    metadata={"field": prefix + "decision_id", "index": str(index)})


def _check_reward_fields(item: RewardInput, prefix: str, index: int) -> None:
    if not item.decision_id:
        _check_name(item.bandit, prefix + "bandit")
        _check_name(item.arm_id, prefix + "arm_id")
    if not (math.isfinite(item.reward) and 0.0 <= item.reward <= 1.0):
        raise InvalidArgument(prefix + "reward", f"must be within [0, 1], got {item.reward}",
                              reason="REWARD_OUT_OF_RANGE", index=str(index))
    if len(item.event_id) > 128:
        raise InvalidArgument(prefix + "event_id", "at most 128 characters")
    if len(item.decision_id) > MAX_ID_LENGTH:
        raise InvalidArgument(prefix + "decision_id", f"at most {MAX_ID_LENGTH} characters")


def _encode_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def _decode_token(token: str) -> str:
    if not token:
        return ""
    try:
        name = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("page_token", "is not a token this service issued", reason="INVALID_PAGE_TOKEN")
    if not NAME_PATTERN.match(name):
        raise InvalidArgument("page_token", "is not a token this service issued", reason="INVALID_PAGE_TOKEN")
    return name

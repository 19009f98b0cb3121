"""The decision log: every selection, the probability the policy had of making it, its rewards.

A selection leaves a `PendingDecision` holding references to what it already computed (the
snapshot's posteriors, the arms it offered, the contextual scores): no copy and no maths on
the request path. A background task turns what is pending into `LoggedDecision` rows,
computing the propensities there, grouped so that one Monte Carlo estimate serves every
Select made from the same snapshot over the same arms, and writes decisions and rewards to
the `DecisionLogStore` (PostgreSQL) in one batch.

What is pending is bounded (`max_pending`): while the store is down the log keeps the newest
entries and counts what it drops; selections and rewards never wait for it. A process killed
outright loses at most one flush interval of log entries; the bandit's learning is in Redis
and loses nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Mapping, Protocol, Sequence

import numpy as np

from ....errors import DeadlineExceeded, Unavailable
from . import propensity
from .model import ContextualAlgorithm
from .policy import BetaPosterior

log = logging.getLogger(__name__)

THOMPSON = "thompson"  # a Select: Beta-Bernoulli Thompson sampling
POLICY_NAMES = {None: THOMPSON, ContextualAlgorithm.LINEAR_THOMPSON: "linear_thompson",
                ContextualAlgorithm.LIN_UCB: "lin_ucb"}


def decision_key(decision_id: str) -> bytes:
    """What the log keys a decision by: decision ids run to kilobytes, their digest to 16 bytes."""
    return hashlib.sha256(decision_id.encode()).digest()[:16]


@dataclass(frozen=True, slots=True, eq=False)
class PendingDecision:
    """A selection as it was made, by reference; propensities are computed when it is written."""

    bandit: str
    incarnation: int
    decision_id: str
    time: datetime
    user_id: str
    offered: Sequence[str]  # the arm ids it chose from
    ranked: Sequence[tuple[str, float]]  # (arm id, score), best first
    positions: Mapping[str, int]  # each arm's position in the bandit's definition
    algorithm: ContextualAlgorithm | None = None  # None: a Select (Beta Thompson sampling)
    posteriors: Mapping[str, BetaPosterior] | None = None  # a Select's snapshot
    context: tuple[float, ...] = ()
    mean: np.ndarray | None = None  # contextual: per offered arm, theta.x (LinUCB: the bound it ranked by)
    scale: np.ndarray | None = None  # linear Thompson: per offered arm, exploration * sqrt(x^T A^-1 x)


@dataclass(frozen=True, slots=True)
class LoggedDecision:
    """One row of the log. Arms are positions in the bandit's definition (only ever appended to)."""

    bandit: str
    incarnation: int
    key: bytes
    decision_id: str
    time: datetime
    user_id: str
    offered: tuple[int, ...]
    chosen: tuple[int, ...]
    scores: tuple[float, ...]
    propensity: float  # that the first chosen arm was ranked first
    choice_probabilities: tuple[float, ...]  # per chosen arm: that it was among the chosen
    context: tuple[float, ...]
    policy: str  # thompson, linear_thompson or lin_ucb


@dataclass(frozen=True, slots=True)
class LoggedReward:
    bandit: str
    incarnation: int
    key: bytes  # decision_key() of the decision rewarded
    arm: int  # position of the rewarded arm
    reward: float
    time: datetime
    # Random: a batch written again after a lost acknowledgement counts each reward once.
    id: int = field(default_factory=lambda: secrets.randbits(63))


@dataclass(frozen=True)
class DecisionRecord:
    """A logged decision as read back, with the rewards it received so far."""

    row: LoggedDecision
    reward_sum: float = 0.0
    reward_count: int = 0


@dataclass(frozen=True)
class LogCursor:
    """Where a newest-first page of the log ended."""

    time: datetime
    key: bytes


@dataclass(frozen=True, eq=False)
class EvaluationRows:
    """The log of one bandit incarnation as columns, oldest first, for off-policy evaluation."""

    first_chosen: np.ndarray  # (n,) position of the first chosen arm
    propensity: np.ndarray  # (n,)
    reward: np.ndarray  # (n,) rewards of the first chosen arm, summed (0 when none came)
    rewarded: np.ndarray  # (n,) bool: any reward of the first chosen arm
    offered_flat: np.ndarray  # every decision's offered positions, one decision after another
    offered_lengths: np.ndarray  # (n,) how many positions each decision offered
    contexts: np.ndarray | None  # (n, d) when every decision has a context


class DecisionLogStore(Protocol):
    async def write(self, decisions: Sequence[LoggedDecision], rewards: Sequence[LoggedReward]) -> None:
        """Both in one transaction; a decision already written (same bandit, time and key) is skipped."""

    async def page(self, bandit: str, incarnation: int, start: datetime | None, end: datetime | None,
                   limit: int, after: LogCursor | None) -> list[DecisionRecord]:
        """Newest first, after `after`, within [start, end)."""

    async def evaluation_rows(self, bandit: str, incarnation: int, start: datetime | None, end: datetime | None,
                              limit: int) -> EvaluationRows | None:
        """Oldest first; None if the window holds more than `limit` decisions."""

    async def delete_before(self, time: datetime) -> int: ...


@dataclass
class LogCounters:
    """What the log did, for metrics and tests."""

    written_decisions: int = 0
    written_rewards: int = 0
    dropped: int = 0  # over max_pending while the store could not keep up
    failed_flushes: int = 0


@dataclass
class _Pending:
    decisions: deque = field(default_factory=deque)
    rewards: deque = field(default_factory=deque)


class DecisionLog:
    def __init__(self, store: DecisionLogStore, rng: np.random.Generator | None = None, *,
                 flush_interval_s: float = 1.0, batch_size: int = 5000, max_pending: int = 200_000,
                 samples: int = propensity.DEFAULT_SAMPLES):
        self.store = store  # read directly too: ListDecisions, EvaluatePolicy
        self._rng = rng or np.random.default_rng()
        self._interval, self._batch, self._max_pending, self._samples = (
            flush_interval_s, batch_size, max_pending, samples)
        self._pending = _Pending()
        self._task: asyncio.Task | None = None
        self._flushing = asyncio.Lock()
        self._shared = SharedProbabilities()
        self.counters = LogCounters()

    @property
    def pending(self) -> int:
        return len(self._pending.decisions) + len(self._pending.rewards)

    # ----- the request path: O(1), never waits -----

    def decided(self, decision: PendingDecision) -> None:
        self._keep(self._pending.decisions, decision)

    def rewarded(self, reward: LoggedReward) -> None:
        self._keep(self._pending.rewards, reward)

    def _keep(self, queue: deque, entry: object) -> None:
        if self.pending >= self._max_pending:
            # the oldest go first: the newest say most about now
            (queue or self._pending.decisions or self._pending.rewards).popleft()
            self.counters.dropped += 1
        queue.append(entry)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="decision-log")

    # ----- the background -----

    async def flush(self) -> None:
        """Write what is pending, batch after batch; on failure the batch goes back and the error is raised."""
        async with self._flushing:
            while self._pending.decisions or self._pending.rewards:
                decisions = _take(self._pending.decisions, self._batch)
                rewards = _take(self._pending.rewards, self._batch)
                rows = self._rows(decisions)
                try:
                    await self.store.write(rows, rewards)
                except (Unavailable, DeadlineExceeded, asyncio.CancelledError):  # passing: try again later
                    self._pending.decisions.extendleft(reversed(decisions))
                    self._pending.rewards.extendleft(reversed(rewards))
                    raise
                except Exception:  # noqa: BLE001 - a batch the store refuses: retrying would block the log
                    self.counters.dropped += len(rows) + len(rewards)
                    log.error("decision log: the store refused a batch of %d decisions and %d rewards; dropped",
                              len(rows), len(rewards), exc_info=True)
                    continue
                self.counters.written_decisions += len(rows)
                self.counters.written_rewards += len(rewards)

    def _rows(self, decisions: list[PendingDecision]) -> list[LoggedDecision]:
        """The rows of a batch; a decision whose probabilities cannot be worked out is dropped, not the batch."""
        try:
            return logged_rows(decisions, self._rng, self._samples, self._shared)
        except ValueError:
            rows = []
            for decision in decisions:
                try:
                    rows += logged_rows([decision], self._rng, self._samples, self._shared)
                except ValueError:
                    self.counters.dropped += 1
                    log.error("decision log: no propensity for a decision of bandit %s; dropped", decision.bandit,
                              exc_info=True)
            return rows

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except Unavailable as exc:  # expected while PostgreSQL is down: no traceback
                self.counters.failed_flushes += 1
                log.warning("could not write the decision log (%d entries pending); will retry: %s",
                            self.pending, exc)
            except Exception:  # noqa: BLE001 - keep what is pending, try again next interval
                self.counters.failed_flushes += 1
                log.warning("could not write the decision log; will retry", exc_info=True)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Stop the background task and write what is left, for at most `timeout_s`."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await asyncio.wait_for(self.flush(), timeout_s)
        except Exception:  # noqa: BLE001
            lost = len(self._pending.decisions) + len(self._pending.rewards)
            log.error("decision log: %d entries not written at shutdown", lost, exc_info=True)


def _take(queue: deque, n: int) -> list:
    return [queue.popleft() for _ in range(min(n, len(queue)))]


# ----- propensities -----

class SharedProbabilities:
    """Thompson sampling's choice probabilities, estimated once per distinct (posteriors, offered
    arms, k): every Select made from one snapshot over the same arms shares one estimate, and so
    does a later snapshot whose posteriors did not move (no reward came in between). Bounded; the
    newest are kept."""

    def __init__(self, size: int = 64):
        self._size = size
        # (id of a snapshot's posteriors, offered, k) -> (those posteriors, kept so the id is not
        # reused meanwhile; the estimate)
        self._by_snapshot: dict[tuple, tuple[object, propensity.ChoiceProbabilities]] = {}
        self._by_value: dict[tuple, propensity.ChoiceProbabilities] = {}  # (alpha, beta as bytes, k)

    def get(self, decision: PendingDecision, k: int, rng: np.random.Generator,
            samples: int) -> propensity.ChoiceProbabilities:
        snapshot_key = (id(decision.posteriors), tuple(decision.offered), k)
        found = self._by_snapshot.get(snapshot_key)
        if found is None:
            alpha = np.array([decision.posteriors[arm].alpha for arm in decision.offered])
            beta = np.array([decision.posteriors[arm].beta for arm in decision.offered])
            value_key = (alpha.tobytes(), beta.tobytes(), k)
            estimate = self._by_value.get(value_key)
            if estimate is None:
                estimate = propensity.thompson_choice_probabilities(alpha, beta, k, rng, samples)
                _bounded_put(self._by_value, value_key, estimate, self._size)
            found = (decision.posteriors, estimate)
            _bounded_put(self._by_snapshot, snapshot_key, found, self._size)
        return found[1]


def _bounded_put(entries: dict, key, value, size: int) -> None:
    if len(entries) >= size:
        del entries[next(iter(entries))]  # the oldest
    entries[key] = value


def logged_rows(pending: Sequence[PendingDecision], rng: np.random.Generator,
                samples: int = propensity.DEFAULT_SAMPLES,
                shared: SharedProbabilities | None = None) -> list[LoggedDecision]:
    """The rows for `pending`, with the probabilities each decision was made with."""
    shared = shared or SharedProbabilities()
    rows = []
    for decision in pending:
        index = {arm: i for i, arm in enumerate(decision.offered)}
        probabilities = _probabilities(decision, len(decision.ranked), rng, samples, shared)
        chosen = [index[arm] for arm, _ in decision.ranked]
        rows.append(LoggedDecision(
            bandit=decision.bandit, incarnation=decision.incarnation, key=decision_key(decision.decision_id),
            decision_id=decision.decision_id, time=decision.time, user_id=decision.user_id,
            offered=tuple(decision.positions[arm] for arm in decision.offered),
            chosen=tuple(decision.positions[arm] for arm, _ in decision.ranked),
            scores=tuple(float(score) for _, score in decision.ranked),
            propensity=probabilities.propensity(chosen[0]),
            choice_probabilities=tuple(float(probabilities.top_k[i]) for i in chosen),
            context=decision.context, policy=POLICY_NAMES[decision.algorithm]))
    return rows


def _probabilities(decision: PendingDecision, k: int, rng: np.random.Generator, samples: int,
                   shared: SharedProbabilities) -> propensity.ChoiceProbabilities:
    if decision.algorithm is None:
        return shared.get(decision, k, rng, samples)
    if decision.algorithm is ContextualAlgorithm.LIN_UCB:
        return propensity.deterministic_choice_probabilities(decision.mean, k)
    if k == 1:
        return propensity.gaussian_first_choice_by_quadrature(decision.mean, decision.scale)
    return propensity.gaussian_choice_probabilities(decision.mean, decision.scale, k, rng, samples)

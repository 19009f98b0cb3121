"""Off-policy evaluation: what a candidate policy would have earned on logged traffic.

With w_i = pi(a_i | x_i) / p_i, the candidate's over the logging policy's probability of the arm
logged first at decision i:

    IPS    mean(w r)
    SNIPS  sum(w r) / sum(w)
    DR     mean( sum_a pi(a | x_i) r_hat(x_i, a) + w_i (r_i - r_hat(x_i, a_i)) )

each with a normal-approximation confidence interval (SNIPS by the delta method). Only the arm
ranked first is evaluated: the log's propensity is that of the first place.

A learning candidate is replayed: it learns from every logged reward in time order, as if it had
shadowed the live policy, and its probabilities for decision i come from its state before i. For
speed the state is brought up to date every `update_every` decisions (the discount is still applied
per reward event, exactly), so within a block the candidate acts on the state at the block's start,
like a live policy whose evidence lags by up to one block. IPS and DR are linear in pi, so where pi
is itself a Monte Carlo estimate (Thompson candidates) they stay unbiased. Per-decision noise (linear
Thompson) shows up in, and is covered by, the intervals; the noise a context-free Thompson block
shares is not, but it averages out over the blocks (about sd(arm means) / sqrt(draws x blocks)).

Plain numpy, no I/O; the random generator is passed in.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from .forgetting import block_weights
from .propensity import deterministic_first_choice_batch, gaussian_first_choice_batch, thompson_first_choice

__all__ = [
    "CandidateKind",
    "CandidatePolicy",
    "Estimate",
    "Estimator",
    "Evaluation",
    "LoggedDecisions",
    "candidate_probabilities",
    "evaluate",
]

_PROPENSITY_SLACK = 1e-9  # a logged probability may exceed 1 by rounding, not more
_FIXED_BLOCK = 65_536  # a fixed candidate does not learn: blocks only bound the memory
_REWARD_MODEL_RIDGE = 1.0


class Estimator(enum.Enum):
    IPS = "ips"
    SNIPS = "snips"
    DR = "dr"


class CandidateKind(enum.Enum):
    FIXED = "fixed"
    THOMPSON = "thompson"
    LINEAR_THOMPSON = "linear_thompson"
    LIN_UCB = "lin_ucb"


# ----- plain data -----


@dataclass(frozen=True, eq=False)
class LoggedDecisions:
    """N logged decisions in time order, one array per column.

    chosen      (N,) int: index, into the bandit's arm list, of the arm ranked first.
    propensity  (N,) the logging policy's probability of ranking that arm first; in (0, 1].
    reward      (N,) float. A reward that never arrived counts as 0 in every estimate (the value is
                "reward per decision", absent ones included); mark such rows in `rewarded`.
    arm_count   number of arms in the bandit's arm list (the candidate may pick any of them).
    contexts    (N, d) float, or None for a context-free bandit.
    offered     (N, arm_count) bool: the arms the decision could choose from; None = all arms.
    rewarded    (N,) bool: which decisions got a reward event; None = all. A learning candidate
                learns only from those (no event, no update and no discount step), as the live one did.
    """

    chosen: np.ndarray
    propensity: np.ndarray
    reward: np.ndarray
    arm_count: int
    contexts: np.ndarray | None = None
    offered: np.ndarray | None = None
    rewarded: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.arm_count, (int, np.integer)) and self.arm_count >= 1):
            raise ValueError(f"arm_count must be a positive integer, got {self.arm_count!r}")
        chosen = _column(self.chosen, None, "chosen", dtype=None)
        chosen = chosen.astype(np.intp) if chosen.size == 0 else chosen  # np.asarray([]) is float
        rows = chosen.shape[0]
        _check_chosen(chosen, self.arm_count)
        columns = {"chosen": chosen, "propensity": _column(self.propensity, rows, "propensity")}
        _check_propensity(columns["propensity"])
        columns["reward"] = _column(self.reward, rows, "reward")
        _check_finite(columns["reward"], "reward")
        if self.contexts is not None:
            columns["contexts"] = _matrix(self.contexts, rows, None, "contexts")
            _check_finite(columns["contexts"], "contexts")
        if self.offered is not None:
            _check_bool(self.offered, "offered")
            columns["offered"] = _matrix(self.offered, rows, self.arm_count, "offered", dtype=bool)
            _check_offered(columns["offered"], chosen)
        if self.rewarded is not None:
            _check_bool(self.rewarded, "rewarded")
            columns["rewarded"] = _column(self.rewarded, rows, "rewarded", dtype=bool)
        for name, array in columns.items():  # frozen: store the checked arrays once, here
            object.__setattr__(self, name, array)

    def __len__(self) -> int:
        return self.chosen.shape[0]

    @property
    def context_dimension(self) -> int:
        return 0 if self.contexts is None else self.contexts.shape[1]


@dataclass(frozen=True)
class CandidatePolicy:
    """The policy to evaluate: a fixed distribution over arms, or a learning policy replayed on the log.

    distribution (FIXED): arm index -> probability; per decision it is renormalised over the offered arms.
    The other fields mean what they mean on a BanditDefinition and apply to the learning kinds."""

    kind: CandidateKind
    distribution: Mapping[int, float] = field(default_factory=dict)
    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    exploration: float = 1.0
    ridge_lambda: float = 1.0
    discount: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", CandidateKind(self.kind))
        if self.kind is CandidateKind.FIXED:
            _check_distribution(self.distribution)
        priors = np.array([self.prior_alpha, self.prior_beta], dtype=float)
        if not ((priors > 0).all() and np.isfinite(priors).all()):
            raise ValueError(f"priors must be finite and positive, got ({self.prior_alpha}, {self.prior_beta})")
        if not (0 <= self.exploration < np.inf):
            raise ValueError(f"exploration must be finite and >= 0, got {self.exploration}")
        if not (0 < self.ridge_lambda < np.inf):
            raise ValueError(f"ridge_lambda must be finite and > 0, got {self.ridge_lambda}")
        if not 0 <= self.discount < 1:
            raise ValueError(f"discount must be in [0, 1), got {self.discount}")

    @classmethod
    def fixed(cls, distribution: Mapping[int, float]) -> "CandidatePolicy":
        return cls(CandidateKind.FIXED, distribution=dict(distribution))

    @property
    def contextual(self) -> bool:
        """Whether it scores contexts (and so needs a log with contexts)."""
        return self.kind in (CandidateKind.LINEAR_THOMPSON, CandidateKind.LIN_UCB)


@dataclass(frozen=True)
class Estimate:
    """One estimator's value and confidence interval (NaN when undefined, e.g. SNIPS with sum(w) = 0;
    -inf..inf when one decision leaves the spread unknown)."""

    estimator: Estimator
    value: float
    lower: float
    upper: float


@dataclass(frozen=True)
class Evaluation:
    decision_count: int
    logged_value: float  # mean logged reward, absent rewards as 0: what the logging policy earned
    estimates: tuple[Estimate, ...]  # in the order asked for
    # Kish's (sum w)^2 / sum w^2: how many decisions the weighted estimates are worth. Far below
    # decision_count means a few large weights dominate, and the intervals deserve less trust.
    effective_sample_size: float


# ----- entry points -----


def evaluate(
    log: LoggedDecisions,
    candidate: CandidatePolicy,
    estimators: Sequence[Estimator | str],
    rng: np.random.Generator,
    *,
    level: float = 0.95,
    max_weight: float | None = None,
    update_every: int = 1000,
    replay_samples: int = 2000,
    samples_per_decision: int = 4,
) -> Evaluation:
    """Estimate the candidate's mean reward per decision on the logged traffic.

    max_weight caps each importance weight w (off by default): less variance, but a downward bias
    wherever the cap bites, which the interval does not cover. update_every: see the module doc.
    replay_samples: draws per block for a Thompson candidate's probabilities (all decisions of a
    block share them, and the error averages out over blocks; see propensity.thompson_first_choice
    for logs with many different offered sets); samples_per_decision: draws per decision for a
    linear Thompson candidate (conditional Monte Carlo, see propensity.gaussian_first_choice_batch)."""
    _require_decisions(log)
    wanted = _estimators(estimators)
    _check_level(level)
    if max_weight is not None and not max_weight > 0:
        raise ValueError(f"max_weight must be positive, got {max_weight}")
    model = _fit_reward_model(log, rng) if Estimator.DR in wanted else None
    replayed = _replay(log, candidate, rng, model, update_every, replay_samples, samples_per_decision)
    weights = replayed.target / log.propensity
    if max_weight is not None:
        weights = np.minimum(weights, max_weight)
    z = _normal_quantile(level)
    estimates = tuple(_estimate(kind, weights, log.reward, replayed, z) for kind in wanted)
    return Evaluation(len(log), float(log.reward.mean()), estimates, _effective_sample_size(weights))


def candidate_probabilities(
    log: LoggedDecisions,
    candidate: CandidatePolicy,
    rng: np.random.Generator,
    *,
    update_every: int = 1000,
    replay_samples: int = 2000,
    samples_per_decision: int = 4,
) -> np.ndarray:
    """(N,) pi(a_i | x_i): the candidate's probability (or unbiased estimate) of ranking the logged arm first."""
    _require_decisions(log)
    return _replay(log, candidate, rng, None, update_every, replay_samples, samples_per_decision).target


# ----- replay -----


@dataclass(frozen=True, eq=False)
class _Replayed:
    target: np.ndarray  # (N,) pi(a_i | x_i)
    direct: np.ndarray | None  # (N,) sum_a pi(a | x_i) r_hat(x_i, a), with a reward model
    logged_prediction: np.ndarray | None  # (N,) r_hat(x_i, a_i), with a reward model


def _replay(
    log: LoggedDecisions,
    candidate: CandidatePolicy,
    rng: np.random.Generator,
    model: "_RewardModel | None",
    update_every: int,
    replay_samples: int,
    samples_per_decision: int,
) -> _Replayed:
    """Walk the log in blocks: the candidate's probabilities for a block, then it learns the block."""
    if update_every < 1:
        raise ValueError(f"update_every must be at least 1, got {update_every}")
    policy = _replayed_policy(log, candidate, replay_samples, samples_per_decision)
    block = _FIXED_BLOCK if candidate.kind is CandidateKind.FIXED else update_every
    target = np.empty(len(log))
    direct = None if model is None else np.empty(len(log))
    logged_prediction = None if model is None else np.empty(len(log))
    for start in range(0, len(log), block):
        rows = slice(start, min(start + block, len(log)))
        logged = (np.arange(rows.stop - rows.start), log.chosen[rows])
        pi = policy.probabilities(rows, rng)
        target[rows] = pi[logged]
        if model is not None:
            predicted = model.predict(rows)
            direct[rows] = (pi * predicted).sum(axis=1)
            logged_prediction[rows] = predicted[logged]
        policy.learn(rows)
    return _Replayed(target, direct, logged_prediction)


def _replayed_policy(log: LoggedDecisions, candidate: CandidatePolicy, replay_samples: int, per_decision: int):
    if candidate.kind is CandidateKind.FIXED:
        return _FixedPolicy(log, candidate)
    if candidate.kind is CandidateKind.THOMPSON:
        return _BetaThompson(log, candidate, replay_samples)
    if log.contexts is None:
        raise ValueError(f"a {candidate.kind.value} candidate needs contexts, and the log has none")
    return _LinearPolicy(log, candidate, per_decision)


class _FixedPolicy:
    def __init__(self, log: LoggedDecisions, candidate: CandidatePolicy) -> None:
        self._log = log
        self._pi = np.zeros(log.arm_count)
        for arm, probability in candidate.distribution.items():
            if not 0 <= arm < log.arm_count:
                raise ValueError(f"the candidate's distribution names arm {arm}, outside the {log.arm_count} arms")
            self._pi[arm] = probability

    def probabilities(self, rows: slice, rng: np.random.Generator) -> np.ndarray:
        count = rows.stop - rows.start
        if self._log.offered is None:
            return np.broadcast_to(self._pi / self._pi.sum(), (count, self._pi.shape[0]))
        masked = self._pi * self._log.offered[rows]
        total = masked.sum(axis=1, keepdims=True)
        if not (total > 0).all():
            row = rows.start + int(np.argmin(total[:, 0] > 0))
            raise ValueError(f"row {row}: the candidate gives no probability to any arm offered there")
        return masked / total

    def learn(self, rows: slice) -> None:
        pass


@dataclass(frozen=True)
class _Events:
    """The reward events of one block, in time order, with the discount applied up to the block's end."""

    arms: np.ndarray
    rewards: np.ndarray
    contexts: np.ndarray | None
    weights: np.ndarray  # (1 - discount)^(later events of the same arm in the block): what survives of each
    decay: np.ndarray  # per arm, (1 - discount)^(its events in the block): what survives of its evidence before


def _events(log: LoggedDecisions, rows: slice, discount: float) -> _Events:
    keep = slice(None) if log.rewarded is None else log.rewarded[rows]
    arms, rewards = log.chosen[rows][keep], log.reward[rows][keep]
    contexts = None if log.contexts is None else log.contexts[rows][keep]
    weights, decay = block_weights(arms, log.arm_count, discount)
    return _Events(arms, rewards, contexts, weights, decay)


class _BetaThompson:
    def __init__(self, log: LoggedDecisions, candidate: CandidatePolicy, samples: int) -> None:
        outside = (log.reward < 0) | (log.reward > 1)
        if outside.any():
            raise ValueError(f"row {int(np.argmax(outside))}: a thompson candidate needs rewards in [0, 1]")
        self._log, self._candidate = log, candidate
        self._samples = samples
        self._successes = np.zeros(log.arm_count)
        self._failures = np.zeros(log.arm_count)

    def probabilities(self, rows: slice, rng: np.random.Generator) -> np.ndarray:
        alpha = self._candidate.prior_alpha + self._successes
        beta = self._candidate.prior_beta + self._failures
        offered = None if self._log.offered is None else self._log.offered[rows]
        pi = thompson_first_choice(alpha, beta, rng, self._samples, offered)
        return np.broadcast_to(pi, (rows.stop - rows.start, alpha.shape[0])) if offered is None else pi

    def learn(self, rows: slice) -> None:
        events = _events(self._log, rows, self._candidate.discount)
        n = self._log.arm_count
        successes = events.weights * events.rewards  # a reward r is r of a success and 1 - r of a failure
        failures = events.weights - successes
        self._successes = events.decay * self._successes + np.bincount(events.arms, successes, minlength=n)
        self._failures = events.decay * self._failures + np.bincount(events.arms, failures, minlength=n)


class _LinearPolicy:
    """Linear Thompson sampling or LinUCB: per arm, A = ridge_lambda*I + sum x x^T and b = sum r x."""

    def __init__(self, log: LoggedDecisions, candidate: CandidatePolicy, per_decision: int) -> None:
        self._log, self._candidate, self._per_decision = log, candidate, per_decision
        n, d = log.arm_count, log.context_dimension
        self._outer_sums = np.zeros((n, d, d))
        self._target_sums = np.zeros((n, d))

    def probabilities(self, rows: slice, rng: np.random.Generator) -> np.ndarray:
        mean, spread = self._scores(self._log.contexts[rows])
        offered = None if self._log.offered is None else self._log.offered[rows]
        exploration = self._candidate.exploration
        if self._candidate.kind is CandidateKind.LIN_UCB:
            return deterministic_first_choice_batch(mean + exploration * spread, offered)
        if exploration == 0:  # no exploration: Thompson sampling ranks by the posterior mean
            return deterministic_first_choice_batch(mean, offered)
        return gaussian_first_choice_batch(mean, exploration * spread, rng, self._per_decision, offered)

    def _scores(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(m, n) posterior means theta_hat.x and scales sqrt(x^T A^-1 x)."""
        d = contexts.shape[1]
        precision = self._candidate.ridge_lambda * np.eye(d) + self._outer_sums
        # Inverting n small matrices once per block beats a solve per decision by far; the
        # symmetrising keeps rounding from making x^T A^-1 x negative.
        inverse = np.linalg.inv(0.5 * (precision + np.swapaxes(precision, 1, 2)))
        theta = (inverse @ self._target_sums[:, :, None])[:, :, 0]
        mean = contexts @ theta.T
        # x^T A_n^-1 x for all (x, n) at once: (x outer x) flattened, times the flattened inverses.
        outer = (contexts[:, :, None] * contexts[:, None, :]).reshape(contexts.shape[0], d * d)
        variance = outer @ inverse.reshape(inverse.shape[0], d * d).T
        return mean, np.sqrt(np.maximum(variance, 0.0))

    def learn(self, rows: slice) -> None:
        events = _events(self._log, rows, self._candidate.discount)
        x = events.contexts
        d = x.shape[1]
        weighted = events.weights[:, None] * x
        outer = (weighted[:, :, None] * x[:, None, :]).reshape(-1, d * d)
        arms, sums = _sums_by_arm(events.arms, np.hstack([outer, events.rewards[:, None] * weighted]))
        self._outer_sums *= events.decay[:, None, None]
        self._target_sums *= events.decay[:, None]
        self._outer_sums[arms] += sums[:, : d * d].reshape(-1, d, d)
        self._target_sums[arms] += sums[:, d * d :]


def _sums_by_arm(arms: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct arms and, per arm, the sum of its rows of values (m, k): sort once, add each run.

    O(m k) whatever the number of arms, where a one-hot matrix product would be O(arms m k)."""
    if arms.shape[0] == 0:
        return arms, values[:0]
    order = np.argsort(arms, kind="stable")
    sorted_arms = arms[order]
    starts = np.flatnonzero(np.r_[True, sorted_arms[1:] != sorted_arms[:-1]])
    return sorted_arms[starts], np.add.reduceat(values[order], starts, axis=0)


# ----- reward model for DR -----


class _RewardModel:
    """r_hat(x, a) with 2-fold cross-fitting: a decision's prediction comes from the model fitted on
    the other fold, so its own reward never enters its own prediction (no overfitting bias).

    Context-free: per arm mean, shrunk to the fold's overall mean by one pseudo-observation (an arm
    never chosen in a fold gets that mean). Contextual: per arm ridge regression on [x, 1] of the
    reward minus the fold's mean, so a sparse arm is shrunk towards the mean, not towards 0."""

    def __init__(self, log: LoggedDecisions, fold: np.ndarray, coefficients: np.ndarray) -> None:
        self._log, self._fold = log, fold
        self._coefficients = coefficients  # [model fitted on fold f] (2, n) or (2, n, d + 1)

    def predict(self, rows: slice) -> np.ndarray:
        """(m, n) r_hat for the decisions in rows."""
        use = 1 - self._fold[rows]  # the model fitted on the other fold
        if self._log.contexts is None:
            return self._coefficients[use]
        features = _with_intercept(self._log.contexts[rows])
        return np.where(use[:, None] == 0, features @ self._coefficients[0].T, features @ self._coefficients[1].T)


def _fit_reward_model(log: LoggedDecisions, rng: np.random.Generator) -> _RewardModel:
    fold = (rng.permutation(len(log)) % 2).astype(np.intp)
    fit = _fit_arm_means if log.contexts is None else _fit_arm_ridge
    return _RewardModel(log, fold, np.stack([fit(log, fold == f) for f in (0, 1)]))


def _fit_arm_means(log: LoggedDecisions, rows: np.ndarray) -> np.ndarray:
    arms, rewards = log.chosen[rows], log.reward[rows]
    overall = rewards.mean() if rewards.size else 0.0
    sums = np.bincount(arms, rewards, minlength=log.arm_count)
    counts = np.bincount(arms, minlength=log.arm_count)
    return (sums + overall) / (counts + 1.0)


def _fit_arm_ridge(log: LoggedDecisions, rows: np.ndarray) -> np.ndarray:
    arms, rewards = log.chosen[rows], log.reward[rows]
    features = _with_intercept(log.contexts[rows])
    overall = rewards.mean() if rewards.size else 0.0
    width = features.shape[1]
    order = np.argsort(arms, kind="stable")
    bounds = np.searchsorted(arms[order], np.arange(log.arm_count + 1))
    coefficients = np.zeros((log.arm_count, width))
    for arm in range(log.arm_count):
        mine = order[bounds[arm]:bounds[arm + 1]]
        z, residual = features[mine], rewards[mine] - overall
        gram = z.T @ z + _REWARD_MODEL_RIDGE * np.eye(width)
        coefficients[arm] = np.linalg.solve(gram, z.T @ residual)
    coefficients[:, -1] += overall  # the intercept carries the mean back
    return coefficients


def _with_intercept(contexts: np.ndarray) -> np.ndarray:
    return np.hstack([contexts, np.ones((contexts.shape[0], 1))])


# ----- estimators -----


def _estimate(kind: Estimator, weights: np.ndarray, reward: np.ndarray, replayed: _Replayed, z: float) -> Estimate:
    if kind is Estimator.IPS:
        return Estimate(kind, *_mean_interval(weights * reward, z))
    if kind is Estimator.SNIPS:
        return Estimate(kind, *_self_normalised(weights, reward, z))
    terms = replayed.direct + weights * (reward - replayed.logged_prediction)
    return Estimate(kind, *_mean_interval(terms, z))


def _mean_interval(terms: np.ndarray, z: float) -> tuple[float, float, float]:
    value = float(terms.mean())
    half = _half_width(terms, z)
    return value, value - half, value + half


def _half_width(terms: np.ndarray, z: float) -> float:
    """z standard errors of the mean of terms; infinite when one term leaves the spread unknown."""
    if terms.shape[0] < 2:
        return np.inf
    return z * float(terms.std(ddof=1)) / float(np.sqrt(terms.shape[0]))


def _self_normalised(weights: np.ndarray, reward: np.ndarray, z: float) -> tuple[float, float, float]:
    mean_weight = float(weights.mean())
    if not mean_weight > 0:
        return np.nan, np.nan, np.nan
    value = float((weights * reward).mean()) / mean_weight
    # Delta method: the ratio's influence per decision is w (r - value) / mean(w).
    half = _half_width(weights * (reward - value) / mean_weight, z)
    return value, value - half, value + half


def _effective_sample_size(weights: np.ndarray) -> float:
    squares = float(np.square(weights).sum())
    return float(weights.sum()) ** 2 / squares if squares > 0 else 0.0


def _normal_quantile(level: float) -> float:
    if level == 0.95:
        return 1.959963984540054
    from scipy.special import ndtri  # lazy: only an unusual level needs it

    return float(ndtri(0.5 + level / 2))


# ----- validation -----


def _require_decisions(log: LoggedDecisions) -> None:
    if len(log) == 0:
        raise ValueError("the log holds no decisions: there is nothing to evaluate")


def _estimators(estimators: Sequence[Estimator | str]) -> list[Estimator]:
    if isinstance(estimators, (str, Estimator)):
        estimators = [estimators]
    wanted = [Estimator(e) for e in estimators]
    if not wanted:
        raise ValueError("name at least one estimator")
    return list(dict.fromkeys(wanted))


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _column(values, rows: int | None, name: str, dtype: type | None = float) -> np.ndarray:
    """values as a (rows,) array (any length when rows is None)."""
    array = np.asarray(values) if dtype is None else np.asarray(values, dtype=dtype)
    if array.ndim != 1 or (rows is not None and array.shape[0] != rows):
        raise ValueError(f"{name} must have shape ({'N' if rows is None else rows},), got {array.shape}")
    return array


def _matrix(values, rows: int, width: int | None, name: str, dtype: type = float) -> np.ndarray:
    """values as a (rows, width) array; width None = any width >= 1."""
    array = np.asarray(values, dtype=dtype)
    width_ok = array.ndim == 2 and (array.shape[1] >= 1 if width is None else array.shape[1] == width)
    if not width_ok or array.shape[0] != rows:
        raise ValueError(f"{name} must have shape ({rows}, {width or 'd'}), got {array.shape}")
    return array


def _check_bool(values, name: str) -> None:
    if np.asarray(values).dtype != bool:
        raise ValueError(f"{name} must be a bool array, got {np.asarray(values).dtype}")


def _first_row(bad: np.ndarray) -> int:
    return int(np.argmax(bad.reshape(bad.shape[0], -1).any(axis=1)))


def _check_chosen(chosen: np.ndarray, arm_count: int) -> None:
    if chosen.dtype.kind not in "iu" and chosen.size:
        raise ValueError(f"chosen must hold integer arm indices, got {chosen.dtype}")
    bad = (chosen < 0) | (chosen >= arm_count)
    if bad.any():
        row = _first_row(bad)
        raise ValueError(f"row {row}: chosen arm {int(chosen[row])} is outside the {arm_count} arms")


def _check_propensity(propensity: np.ndarray) -> None:
    bad = ~((propensity > 0) & (propensity <= 1 + _PROPENSITY_SLACK))  # NaN fails both
    if bad.any():
        row = _first_row(bad)
        raise ValueError(f"row {row}: propensity must be in (0, 1], got {propensity[row]}")


def _check_finite(values: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"row {_first_row(bad)}: {name} must be finite")


def _check_offered(offered: np.ndarray, chosen: np.ndarray) -> None:
    bad = ~offered[np.arange(chosen.shape[0]), chosen]
    if bad.any():
        row = _first_row(bad)
        raise ValueError(f"row {row}: chosen arm {int(chosen[row])} was not offered")


def _check_distribution(distribution: Mapping[int, float]) -> None:
    values = np.array(list(distribution.values()), dtype=float)
    if values.size == 0 or not np.isfinite(values).all() or (values < 0).any() or not values.sum() > 0:
        raise ValueError("a fixed distribution needs finite, non-negative probabilities with a positive sum")
    if not all(isinstance(arm, (int, np.integer)) for arm in distribution):
        raise ValueError("a fixed distribution maps arm indices (int) to probabilities")

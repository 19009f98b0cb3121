"""The policies the learning benchmark runs: the Bandit service's own maths and two libraries.

Every agent answers `choose(contexts, count)` with one arm index per round of a batch, its
model frozen for the batch (the service samples from a posterior snapshot), then
`learn(arms, rewards, contexts)` with the batch's outcomes in round order.

Our agents are vectorised over a batch but do the same maths as the service's
domain/policy.py, with the same random draws: tests/bandit/unit/test_learning.py checks that
they pick exactly what thompson_select, linear_thompson_select and linucb_select pick. (The
'nig' variant of LinearAgent is an experiment the benchmark measures, not a service policy.)
Evidence decays as the service's `discount` specifies (domain/forgetting.py): on every reward
of an arm, that arm's past evidence is multiplied by (1 - discount), then the new reward is
added; the priors (Beta(1, 1), ridge lambda * I) do not decay.

MABWiser and Vowpal Wabbit run with their own defaults. They are optional (dev extra):
`library_status()` says which can be imported.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ml_serving_server.services.bandit.domain.forgetting import block_weights

LIBRARIES = ("mabwiser", "vowpalwabbit")


class Agent(Protocol):
    def choose(self, contexts: np.ndarray | None, count: int) -> np.ndarray: ...

    def learn(self, arms: np.ndarray, rewards: np.ndarray, contexts: np.ndarray | None) -> None: ...

    def close(self) -> None: ...


def library_status() -> dict[str, bool]:
    return {name: importlib.util.find_spec(name) is not None for name in LIBRARIES}


# ----- ours -----


class BetaThompsonAgent:
    """thompson_select over Beta(1 + S, 1 + F), S and F the (discounted) success/failure sums."""

    def __init__(self, n_arms: int, seed: int, discount: float = 0.0):
        self.successes = np.zeros(n_arms)
        self.failures = np.zeros(n_arms)
        self.discount = discount
        self.rng = np.random.default_rng([seed, 1])

    def choose(self, contexts: np.ndarray | None, count: int) -> np.ndarray:
        # One draw per arm per round: the same stream as `count` calls of thompson_select.
        draws = self.rng.beta(1.0 + self.successes, 1.0 + self.failures, size=(count, self.successes.size))
        return np.argmax(draws, axis=1)  # first of equal draws, as policy.top_k's stable sort

    def learn(self, arms: np.ndarray, rewards: np.ndarray, contexts: np.ndarray | None) -> None:
        n = self.successes.size
        weights, keep = block_weights(arms, n, self.discount)
        self.successes = keep * self.successes + np.bincount(arms, weights * rewards, n)
        self.failures = keep * self.failures + np.bincount(arms, weights * (1.0 - rewards), n)

    def close(self) -> None:
        pass


class LinearAgent:
    """Per-arm ridge regression, A = lambda*I + sum x x^T and b = sum r x (both discounted).

    method: 'ts' (linear_thompson_select), 'ucb' (linucb_select) or 'nig', an adaptive
    linear TS that is not in the service: the noise scale is drawn per arm from the
    Inverse-Gamma posterior of a Normal-Inverse-Gamma model (see noise_variance_posteriors),
    then multiplied by `exploration`. It needs each arm's sum of r^2 and reward count too.
    """

    def __init__(
        self,
        n_arms: int,
        dim: int,
        seed: int,
        method: str = "ts",
        exploration: float = 1.0,
        ridge_lambda: float = 1.0,
        discount: float = 0.0,
    ):
        if method not in ("ts", "ucb", "nig"):
            raise ValueError(f"unknown method {method!r}")
        self.method, self.exploration, self.ridge_lambda, self.discount = method, exploration, ridge_lambda, discount
        self.xx = np.zeros((n_arms, dim, dim))
        self.rx = np.zeros((n_arms, dim))
        self.rr = np.zeros(n_arms)
        self.count = np.zeros(n_arms)
        self.rng = np.random.default_rng([seed, 2])

    def precision(self) -> np.ndarray:
        return self.ridge_lambda * np.eye(self.rx.shape[1]) + self.xx

    def choose(self, contexts: np.ndarray | None, count: int) -> np.ndarray:
        mean, scale = posterior_batch(self.precision(), self.rx, contexts)
        if self.method == "ucb":
            return np.argmax(mean + self.exploration * scale, axis=1)
        if self.method == "ts":
            return np.argmax(mean + self.exploration * scale * self.rng.standard_normal(mean.shape), axis=1)
        return self._choose_nig(mean, scale)

    def _choose_nig(self, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
        shape, rate = noise_variance_posteriors(self.precision(), self.rx, self.count, self.rr)
        arms = np.empty(mean.shape[0], dtype=int)
        for t in range(mean.shape[0]):
            sd = np.sqrt(rate / self.rng.gamma(shape))  # sigma^2 ~ Inverse-Gamma(shape, rate)
            arms[t] = np.argmax(mean[t] + self.exploration * sd * scale[t] * self.rng.standard_normal(sd.size))
        return arms

    def learn(self, arms: np.ndarray, rewards: np.ndarray, contexts: np.ndarray | None) -> None:
        n = self.rr.size
        weights, keep = block_weights(arms, n, self.discount)
        self.xx *= keep[:, None, None]
        np.add.at(self.xx, arms, weights[:, None, None] * contexts[:, :, None] * contexts[:, None, :])
        self.rx *= keep[:, None]
        np.add.at(self.rx, arms, (weights * rewards)[:, None] * contexts)
        self.rr = keep * self.rr + np.bincount(arms, weights * rewards * rewards, n)
        self.count = keep * self.count + np.bincount(arms, weights, n)

    def close(self) -> None:
        pass


def posterior_batch(precision: np.ndarray, target: np.ndarray, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rounds, arms) posterior means theta_hat.x and scales sqrt(x^T A^-1 x), one solve per arm."""
    rhs = np.broadcast_to(contexts.T, (precision.shape[0],) + contexts.T.shape)
    w = np.linalg.solve(precision, rhs)  # (arms, d, rounds) = A^-1 x for every x
    mean = np.einsum("nd,ndt->tn", target, w)
    variance = np.einsum("td,ndt->tn", contexts, w)
    return mean, np.sqrt(np.maximum(variance, 0.0))


# Noise prior of the 'nig' variant: worth 2 * shape rewards of variance 0.25, the largest a
# reward in [0, 1] can have, so a new arm explores as if its rewards were as noisy as possible.
NOISE_PRIOR_SHAPE = 1.0
NOISE_PRIOR_VARIANCE = 0.25


def noise_variance_posteriors(
    precision: np.ndarray, target: np.ndarray, count: np.ndarray, sum_squares: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per arm, the Inverse-Gamma (shape, rate) posterior of the reward-noise variance.

    Normal-Inverse-Gamma with theta | sigma^2 ~ N(A^-1 b, sigma^2 A^-1), the ridge posterior:
    rate = prior rate + (sum r^2 - b.A^-1 b) / 2 (residual sum of squares plus the ridge
    penalty) and shape = prior shape + count / 2.
    """
    theta = np.linalg.solve(precision, target[..., None])[..., 0]
    # Never negative in exact arithmetic; rounding can make it so on a perfect fit.
    residual = np.maximum(sum_squares - np.einsum("nd,nd->n", target, theta), 0.0)
    return NOISE_PRIOR_SHAPE + 0.5 * count, NOISE_PRIOR_SHAPE * NOISE_PRIOR_VARIANCE + 0.5 * residual


# ----- libraries, with their defaults -----


class MabwiserAgent:
    """mabwiser.MAB with a learning policy at its defaults; arms are 0..n-1.

    Measured, not fixed here: MABWiser 2.7.4 deep-copies an arm's model, random generator
    included, whenever it fits it, so arms fitted in the same batch then draw identical normals.
    Its LinTS scores are correlated across arms (about 0.9), which explores less than
    independent draws with the same alpha: that, not other maths, is why its LinTS beats our
    linear TS at the same exploration 1.0.
    """

    def __init__(self, n_arms: int, dim: int, seed: int, policy: str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from mabwiser.mab import MAB, LearningPolicy
        self.dim = dim
        self.mab = MAB(list(range(n_arms)), getattr(LearningPolicy, policy)(), seed=seed)
        # An empty fit: MABWiser predicts only once fitted; no policy gets a head start.
        self.mab.fit(np.array([], dtype=int), np.array([], dtype=float), self._contexts(None, 0))

    def _contexts(self, contexts: np.ndarray | None, count: int) -> np.ndarray | None:
        if self.dim:
            return np.empty((0, self.dim)) if contexts is None else contexts
        return None if count == 0 else np.zeros((count, 1))  # context-free: only the row count is used

    def choose(self, contexts: np.ndarray | None, count: int) -> np.ndarray:
        return np.atleast_1d(np.asarray(self.mab.predict(self._contexts(contexts, count)), dtype=int))

    def learn(self, arms: np.ndarray, rewards: np.ndarray, contexts: np.ndarray | None) -> None:
        self.mab.partial_fit(arms, rewards, contexts if self.dim else None)

    def close(self) -> None:
        pass


class VowpalWabbitAgent:
    """`--cb_explore N` (VW's contextual bandit, ADF reduction inside) plus `extra` options.

    VW gives a probability per action; we sample from it with our own generator and pass the
    probability back with the cost (cost = -reward). Context-free runs use one constant
    feature; contextual ones pass z (VW adds its own constant, so x's leading 1 is left out).
    """

    def __init__(self, n_arms: int, dim: int, seed: int, extra: str = ""):
        from vowpalwabbit import Workspace

        self.vw = Workspace(f"--cb_explore {n_arms} {extra} --random_seed {seed} --quiet")
        self.rng = np.random.default_rng([seed, 3])
        self._pending: tuple[list[str], np.ndarray] = ([], np.zeros(0))

    @staticmethod
    def _features(contexts: np.ndarray | None, count: int) -> list[str]:
        if contexts is None:
            return ["| bias"] * count
        return ["| " + " ".join(f"z{j}:{v:.6f}" for j, v in enumerate(x[1:])) for x in contexts]

    def choose(self, contexts: np.ndarray | None, count: int) -> np.ndarray:
        lines = self._features(contexts, count)
        pmfs: dict[str, np.ndarray] = {}  # the model is frozen: identical lines, identical pmf
        arms, probabilities = np.empty(count, dtype=int), np.empty(count)
        for t, (line, u) in enumerate(zip(lines, self.rng.random(count))):
            if line not in pmfs:
                pmf = np.asarray(self.vw.predict(line), dtype=float)
                pmfs[line] = pmf / pmf.sum()
            pmf = pmfs[line]
            arms[t] = min(int(np.searchsorted(np.cumsum(pmf), u, side="right")), pmf.size - 1)
            probabilities[t] = pmf[arms[t]]
        self._pending = (lines, probabilities)
        return arms

    def learn(self, arms: np.ndarray, rewards: np.ndarray, contexts: np.ndarray | None) -> None:
        lines, probabilities = self._pending
        for line, arm, reward, probability in zip(lines, arms, rewards, probabilities):
            self.vw.learn(f"{arm + 1}:{-reward:.6f}:{probability:.6f} {line}")

    def close(self) -> None:
        self.vw.finish()


# ----- what the benchmark passes to its worker processes -----


@dataclass(frozen=True)
class AgentSpec:
    label: str
    family: str  # 'ours', 'mabwiser' or 'vowpalwabbit'
    kind: str  # ours: 'thompson' or a LinearAgent method; libraries: policy name or VW options
    exploration: float = 1.0
    ridge_lambda: float = 1.0
    discount: float = 0.0
    target: bool = False  # ours, held to the 1.1x-of-the-best-library target

    @property
    def is_library(self) -> bool:
        return self.family != "ours"

    def build(self, n_arms: int, dim: int, seed: int) -> Agent:
        if self.family == "mabwiser":
            return MabwiserAgent(n_arms, dim, seed, self.kind)
        if self.family == "vowpalwabbit":
            return VowpalWabbitAgent(n_arms, dim, seed, self.kind)
        if self.kind == "thompson":
            return BetaThompsonAgent(n_arms, seed, self.discount)
        return LinearAgent(n_arms, dim, seed, self.kind, self.exploration, self.ridge_lambda, self.discount)

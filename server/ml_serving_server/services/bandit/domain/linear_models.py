"""Each contextual bandit's per-arm linear models, factorised once per read and reused.

SelectContextual scores arms from models at most `max_age_s` old, as Select samples from a
snapshot (snapshot.py): the hot path neither reads the store nor solves a system. A refresh
reads every arm's sums in one round trip and inverts only the arms whose sums changed.
For one arm with A = lambda*I + sum x x^T and b = sum r x, the model is the posterior mean
theta = A^-1 b and A^-1 itself; a context x then costs two small products per arm:
theta.x, and x^T A^-1 x, the variance of the score's estimate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from . import policy
from .model import BanditDefinition, ContextualAlgorithm
from .ports import BanditStore


@dataclass(frozen=True)
class LinearModels:
    arm_ids: tuple[str, ...]  # the definition's arms, in its order
    means: np.ndarray  # (arms, d): theta per arm
    inverses: np.ndarray  # (arms, d, d): A^-1 per arm
    sums: dict[str, tuple[np.ndarray, np.ndarray]]  # as read, to tell at the next read which arms changed
    ridge_lambda: float
    incarnation: int
    loaded_at: float

    def scores(self, positions: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For the arms at `positions`: the mean score theta.x and its scale sqrt(x^T A^-1 x)."""
        mean = self.means[positions] @ x
        variance = np.einsum("nij,i,j->n", self.inverses[positions], x, x)
        return mean, np.sqrt(np.maximum(variance, 0.0))


@dataclass(frozen=True)
class LinearChoice:
    ranked: list[tuple[str, float]]  # (arm, score), best first
    mean: np.ndarray  # per candidate arm: theta.x (LinUCB: the upper bound it ranked by)
    scale: np.ndarray | None  # linear Thompson: per candidate arm, the sampled score's standard deviation


def select(models: LinearModels, arm_ids: Sequence[str], positions: np.ndarray, x: np.ndarray, k: int,
           definition: BanditDefinition, rng: np.random.Generator) -> LinearChoice:
    """The bandit's contextual rule over the candidate arms."""
    mean, scale = models.scores(positions, x)
    if definition.contextual_algorithm is ContextualAlgorithm.LIN_UCB:
        bound = mean + definition.exploration * scale
        return LinearChoice(policy.top_k(list(arm_ids), bound, k), bound, None)
    # theta.x is exactly N(mean, (exploration * scale)^2) for a fixed x: one draw per arm
    spread = definition.exploration * scale
    scores = mean + spread * rng.standard_normal(mean.shape[0])
    return LinearChoice(policy.top_k(list(arm_ids), scores, k), mean, spread)


class LinearModelCache:
    def __init__(self, store: BanditStore, max_age_s: float, clock: Callable[[], float] = time.monotonic):
        self._store = store
        self._max_age = max_age_s
        self._clock = clock
        self._models: dict[str, LinearModels] = {}

    async def get(self, definition: BanditDefinition) -> LinearModels:
        """The bandit's models while young enough and made for this definition, else read anew."""
        cached = self._models.get(definition.name)
        now = self._clock()
        if (cached is not None and now - cached.loaded_at <= self._max_age
                and cached.incarnation == definition.incarnation and len(cached.arm_ids) == len(definition.arms)):
            return cached
        sums = await self._store.load_linear(definition.name, definition.context_dimension)
        models = _factorised(definition, sums, cached, now)
        self._models[definition.name] = models
        return models

    def forget(self, name: str) -> None:
        self._models.pop(name, None)


def _factorised(definition: BanditDefinition, sums: dict[str, tuple[np.ndarray, np.ndarray]],
                previous: LinearModels | None, now: float) -> LinearModels:
    d, ridge = definition.context_dimension, definition.ridge_lambda
    reusable = previous if previous is not None and previous.incarnation == definition.incarnation \
        and previous.ridge_lambda == ridge and previous.means.shape[1:] == (d,) else None
    old_position = {arm: i for i, arm in enumerate(reusable.arm_ids)} if reusable else {}
    arm_ids = tuple(definition.arm_ids())
    means, inverses = np.zeros((len(arm_ids), d)), np.empty((len(arm_ids), d, d))
    for i, arm in enumerate(arm_ids):
        current = sums.get(arm)
        j = old_position.get(arm)
        if j is not None and _same(reusable.sums.get(arm), current):
            means[i], inverses[i] = reusable.means[j], reusable.inverses[j]
        else:
            means[i], inverses[i] = _model(current, d, ridge)
    return LinearModels(arm_ids, means, inverses, sums, ridge, definition.incarnation, now)


def _same(a: tuple[np.ndarray, np.ndarray] | None, b: tuple[np.ndarray, np.ndarray] | None) -> bool:
    if a is None or b is None:
        return a is b
    return np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def _model(sums: tuple[np.ndarray, np.ndarray] | None, d: int, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """(theta, A^-1) of one arm; corrupt or degenerate sums are repaired rather than fail a selection."""
    if sums is None:
        return np.zeros(d), np.eye(d) / ridge
    state = policy.LinearArmState.from_sums(*sums, ridge)
    a = 0.5 * (state.precision + state.precision.T)  # stored sums pick up rounding asymmetry
    try:
        np.linalg.cholesky(a)  # positive definite: the plain inverse is sound
    except np.linalg.LinAlgError:
        a = policy.repaired(a)
    inverse = np.linalg.inv(a)
    inverse = 0.5 * (inverse + inverse.T)
    return inverse @ state.target, inverse

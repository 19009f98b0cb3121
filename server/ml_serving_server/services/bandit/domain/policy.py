"""Bandit selection maths: Beta-Bernoulli Thompson sampling and linear contextual policies.

Plain Python + numpy, no I/O. Every function is pure: state in, decision out; the random
generator is passed in so callers (and tests) control seeding. Bad shapes raise ValueError;
the service validates request fields first and names them in its own errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

__all__ = [
    "DEFAULT_LINEAR_THOMPSON_EXPLORATION",
    "DEFAULT_LINUCB_EXPLORATION",
    "BetaPosterior",
    "LinearArmState",
    "credible_interval",
    "linear_thompson_select",
    "linucb_select",
    "repaired",
    "thompson_select",
    "top_k",
]

# Chosen by bench/bandit_learning.py: its exploration sweep runs both policies on 18 seeded
# environments (d 5/10/20, 5/20 arms, Bernoulli or Gaussian rewards) next to MABWiser's and
# Vowpal Wabbit's defaults. LinUCB 1.0 is exactly MABWiser's LinUCB default, the best library
# on every one. No single linear TS value matches that everywhere: 0.15 has the smallest worst
# case (1.42x; 0.96x in geometric mean) and is at or below MABWiser's LinTS on all 18, while
# 1.0 averages 3.9x.
DEFAULT_LINEAR_THOMPSON_EXPLORATION = 0.15
DEFAULT_LINUCB_EXPLORATION = 1.0


@dataclass(frozen=True)
class BetaPosterior:
    alpha: float
    beta: float

    def __post_init__(self) -> None:
        # rng.beta rejects non-positive parameters deep inside a Select; fail where the state is built.
        if not (self.alpha > 0 and self.beta > 0 and np.isfinite(self.alpha) and np.isfinite(self.beta)):
            raise ValueError(f"Beta parameters must be finite and positive, got ({self.alpha}, {self.beta})")

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


def top_k(arm_ids: list[str], scores: np.ndarray, k: int) -> list[tuple[str, float]]:
    if not 1 <= k <= len(arm_ids):
        raise ValueError(f"k must be between 1 and {len(arm_ids)}, got {k}")
    # Stable sort on the negated scores: best first, exact ties keep the caller's arm order.
    order = np.argsort(-scores, kind="stable")[:k]
    return [(arm_ids[i], float(scores[i])) for i in order]


def thompson_select(
    posteriors: Mapping[str, BetaPosterior], k: int, rng: np.random.Generator
) -> list[tuple[str, float]]:
    """One Beta draw per arm; the k highest draws, best first, as (arm_id, draw)."""
    arm_ids = list(posteriors)
    params = np.array([(p.alpha, p.beta) for p in posteriors.values()], dtype=float).reshape(-1, 2)
    # One vectorised draw for all arms: per-arm rng calls would dominate the hot path.
    draws = rng.beta(params[:, 0], params[:, 1])
    return top_k(arm_ids, draws, k)


def credible_interval(alpha: float, beta: float, level: float = 0.95) -> tuple[float, float]:
    """Equal-tailed credible interval of Beta(alpha, beta)."""
    if not (alpha > 0 and beta > 0):
        raise ValueError(f"Beta parameters must be positive, got ({alpha}, {beta})")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    # Lazy: scipy.special adds ~25 MB RSS and only the stats endpoint needs it (never scipy.stats).
    from scipy.special import betaincinv

    tail = (1.0 - level) / 2.0
    low, high = betaincinv(alpha, beta, [tail, 1.0 - tail])
    return float(low), float(high)


def _as_vector(values: np.ndarray, dimension: int, name: str) -> np.ndarray:
    vector = np.asarray(values, dtype=float)
    if vector.shape != (dimension,):
        raise ValueError(f"{name} must have shape ({dimension},), got {vector.shape}")
    if not np.isfinite(vector).all():
        raise ValueError(f"{name} must be finite")
    return vector


@dataclass(frozen=True)
class LinearArmState:
    """Ridge-regression evidence of one arm: A = lambda*I + sum x x^T, b = sum r*x."""

    precision: np.ndarray
    target: np.ndarray

    def __post_init__(self) -> None:
        d = self.target.shape[0] if self.target.ndim == 1 else -1
        if d < 1 or self.precision.shape != (d, d):
            raise ValueError(f"precision must be (d, d) and target (d,), got {self.precision.shape}, {self.target.shape}")

    @property
    def dimension(self) -> int:
        return self.target.shape[0]

    @classmethod
    def initial(cls, dimension: int, ridge_lambda: float) -> "LinearArmState":
        if dimension < 1 or not ridge_lambda > 0:
            raise ValueError(f"need dimension >= 1 and ridge_lambda > 0, got {dimension}, {ridge_lambda}")
        return cls(ridge_lambda * np.eye(dimension), np.zeros(dimension))

    @classmethod
    def from_sums(cls, xx: np.ndarray, rx: np.ndarray, ridge_lambda: float) -> "LinearArmState":
        """From the raw sums a store keeps (sum x x^T, sum r x); the prior is added here."""
        rx = np.asarray(rx, dtype=float)
        base = cls.initial(rx.shape[0], ridge_lambda)
        return cls(base.precision + np.asarray(xx, dtype=float), rx.copy())

    def updated(self, context: np.ndarray, reward: float) -> "LinearArmState":
        x = _as_vector(context, self.dimension, "context")
        if not np.isfinite(reward):
            raise ValueError("reward must be finite")
        return LinearArmState(self.precision + np.outer(x, x), self.target + reward * x)


def _posterior_scores(states: Mapping[str, LinearArmState], context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per arm, the posterior mean theta_hat.x and the scale sqrt(x^T A^-1 x)."""
    first = next(iter(states.values()))
    x = _as_vector(context, first.dimension, "context")
    try:
        a = np.stack([s.precision for s in states.values()])
        b = np.stack([s.target for s in states.values()])
    except ValueError as exc:
        raise ValueError("all arms must have the same dimension") from exc
    # Stored sums pick up rounding asymmetry; the maths below assumes a symmetric A.
    a = 0.5 * (a + np.swapaxes(a, -1, -2))
    rhs = np.broadcast_to(x, b.shape)
    # w = A^-1 x by one batched solve (no explicit inverse); since A is symmetric,
    # theta_hat.x = b.(A^-1 x) = b.w and x^T A^-1 x = x.w. Measured faster than
    # Cholesky followed by a (non-triangular) numpy solve.
    try:
        w = np.linalg.solve(a, rhs[..., None])[..., 0]
        variance = w @ x
        if (variance > 0).all():  # also False for NaN, i.e. a singular or indefinite A
            return np.einsum("nd,nd->n", b, w), np.sqrt(variance)
    except np.linalg.LinAlgError:
        pass
    w = np.linalg.solve(repaired(a), rhs[..., None])[..., 0]
    return np.einsum("nd,nd->n", b, w), np.sqrt(np.maximum(w @ x, 0.0))


def repaired(a: np.ndarray) -> np.ndarray:
    """Nearest positive-definite matrices: corrupt or degenerate evidence must not fail a Select."""
    eigenvalues, vectors = np.linalg.eigh(a)
    floor = 1e-9 * np.maximum(np.abs(eigenvalues).max(axis=-1, keepdims=True), 1.0)
    eigenvalues = np.maximum(eigenvalues, floor)
    return (vectors * eigenvalues[..., None, :]) @ np.swapaxes(vectors, -1, -2)


def linear_thompson_select(
    states: Mapping[str, LinearArmState],
    context: np.ndarray,
    k: int,
    exploration: float,
    rng: np.random.Generator,
) -> list[tuple[str, float]]:
    """Linear Thompson sampling: score = theta.x with theta ~ N(A^-1 b, exploration^2 A^-1)."""
    mean, scale = _posterior_scores(states, context)
    # For a fixed x, theta.x is exactly N(mean, (exploration*scale)^2): drawing that scalar
    # per arm has the same distribution as drawing the full d-dimensional theta, at O(1) cost.
    scores = mean + exploration * scale * rng.standard_normal(mean.shape[0])
    return top_k(list(states), scores, k)


def linucb_select(
    states: Mapping[str, LinearArmState], context: np.ndarray, k: int, exploration: float
) -> list[tuple[str, float]]:
    """LinUCB: score = theta_hat.x + exploration * sqrt(x^T A^-1 x); ties keep arm order."""
    mean, scale = _posterior_scores(states, context)
    return top_k(list(states), mean + exploration * scale, k)

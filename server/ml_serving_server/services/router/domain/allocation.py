"""Adaptive allocation: an experiment hands its weights to a Thompson-sampling bandit over its
variants. Plain Python + numpy, no I/O.

Every `interval` the experiment's outcomes (its primary metric, per variant) are the bandit's
rewards: each variant's posterior over its rate (binary: Beta(1 + successes, 1 + failures), the
Bandit service's own posterior) or its mean (numeric: normal, from the per-user mean and
variance) is sampled, and each variant's weight becomes its probability of being the best,
clipped to the configured floor and ceiling. A floor above zero keeps every variant measured, so
the posterior of a variant that started badly can still recover (and the control stays a
baseline for the results).

Nothing moves until every variant has `min_exposures` users; a change smaller than
`MIN_MOVE_BPS` is not made (it would only churn users between variants). The figures behind each
change (users, rate or mean, probability of being best, weights before and after) go into the
experiment's history.

The results of an adaptive experiment compare variants over a period in which their weights
changed; time trends then bias the pooled comparison (Simpson's paradox), so the results say so.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ....errors import InvalidArgument
from ...bandit.domain.policy import BetaPosterior
from .assignment import BUCKETS as TOTAL_BPS
from .statistics import Counts, MetricKind

__all__ = [
    "Allocation",
    "AllocationMode",
    "Reallocation",
    "VariantFigures",
    "check_allocation",
    "probability_best",
    "reallocate",
    "weights_within",
]

MIN_INTERVAL_S = 10.0
MAX_INTERVAL_S = 7 * 86_400.0
DEFAULT_INTERVAL_S = 300.0
DEFAULT_MIN_EXPOSURES = 100
MAX_MIN_EXPOSURES = 10_000_000
MIN_MOVE_BPS = 50  # a smaller largest move is not worth moving users for
POSTERIOR_DRAWS = 20_000  # probability-of-best error about 0.4 percentage points at worst


class AllocationMode(enum.Enum):
    """Values are the proto's AllocationMode numbers."""

    FIXED = 1
    THOMPSON = 2


@dataclass(frozen=True)
class Allocation:
    """Who sets the weights: the caller (FIXED), or the bandit (THOMPSON) within [floor, ceiling]."""

    mode: AllocationMode = AllocationMode.FIXED
    floor_bps: int = 0
    ceiling_bps: int = TOTAL_BPS
    interval_s: float = DEFAULT_INTERVAL_S
    min_exposures: int = DEFAULT_MIN_EXPOSURES

    @property
    def adaptive(self) -> bool:
        return self.mode is AllocationMode.THOMPSON


def check_allocation(allocation: Allocation, variants: int, field: str) -> Allocation:
    """The allocation if it can hold for `variants` variants, else InvalidArgument naming the field."""
    if not allocation.adaptive:
        return Allocation()
    if not 0 <= allocation.floor_bps <= TOTAL_BPS // variants:
        raise InvalidArgument(f"{field}.floor_bps", f"must be between 0 and {TOTAL_BPS // variants} "
                              f"(10000 / the {variants} variants)")
    if not max(allocation.floor_bps, -(-TOTAL_BPS // variants)) <= allocation.ceiling_bps <= TOTAL_BPS:
        raise InvalidArgument(f"{field}.ceiling_bps", "must be between 10000 / the variants (rounded up), "
                              "at least floor_bps, and 10000")
    if not (math.isfinite(allocation.interval_s) and MIN_INTERVAL_S <= allocation.interval_s <= MAX_INTERVAL_S):
        raise InvalidArgument(f"{field}.interval", f"must be between {MIN_INTERVAL_S:.0f} s and 7 days")
    if not 0 <= allocation.min_exposures <= MAX_MIN_EXPOSURES:
        raise InvalidArgument(f"{field}.min_exposures", f"must be between 0 and {MAX_MIN_EXPOSURES}")
    return allocation


@dataclass(frozen=True)
class VariantFigures:
    """What one variant's weight change was based on."""

    variant: str
    exposures: int
    mean: float  # conversion rate (binary) or mean per user (numeric)
    probability_best: float
    weight_before_bps: int
    weight_after_bps: int


@dataclass(frozen=True)
class Reallocation:
    """New weights (every variant, summing to 10000) and the figures behind them."""

    metric: str
    weights: dict[str, int]
    figures: tuple[VariantFigures, ...]

    def reason(self) -> str:
        """One line for the history: who gained and lost."""
        moves = ", ".join(f"{f.variant} {f.weight_before_bps}->{f.weight_after_bps}" for f in self.figures)
        return f"adaptive allocation on {self.metric}: {moves} (bps)"


def probability_best(kind: MetricKind, counts: Mapping[str, Counts], rng: np.random.Generator,
                     draws: int = POSTERIOR_DRAWS) -> dict[str, float]:
    """Each variant's posterior probability of having the highest rate (binary) or mean (numeric),
    by Monte Carlo; ties in a draw go to the first variant listed."""
    names = list(counts)
    samples = np.empty((len(names), draws))
    for row, name in enumerate(names):
        samples[row] = _posterior_draws(kind, counts[name], rng, draws)
    wins = np.bincount(np.argmax(samples, axis=0), minlength=len(names))
    return {name: float(wins[row]) / draws for row, name in enumerate(names)}


def _posterior_draws(kind: MetricKind, counts: Counts, rng: np.random.Generator, draws: int) -> np.ndarray:
    if kind is MetricKind.BINARY:
        posterior = BetaPosterior(1.0 + counts.successes, 1.0 + counts.n - counts.successes)
        return rng.beta(posterior.alpha, posterior.beta, size=draws)
    if counts.n < 2:  # no spread to go on: an uninformative (very wide) posterior
        return rng.normal(0.0, 1e6, size=draws)
    mean = counts.sum / counts.n
    variance = max(0.0, (counts.sum_sq - counts.n * mean * mean) / (counts.n - 1))
    return rng.normal(mean, math.sqrt(variance / counts.n) or 1e-12, size=draws)


def weights_within(shares: Mapping[str, float], floor_bps: int, ceiling_bps: int) -> dict[str, int]:
    """Weights in basis points following `shares` (non-negative), each within [floor_bps,
    ceiling_bps], summing to exactly 10000: each weight is clip(scale * share, floor, ceiling)
    for the one scale that makes them sum to 10000 (found by bisection; the sum grows with the
    scale), then rounded by largest remainder. Needs floor * n <= 10000 <= ceiling * n."""
    names = list(shares)
    if not floor_bps * len(names) <= TOTAL_BPS <= ceiling_bps * len(names):
        raise ValueError("floor and ceiling leave no way to sum to 10000")
    # A share of 0 still grows with the scale: a variant at its floor can take what the others
    # cannot hold under the ceiling.
    values = np.array([max(float(shares[n]), 0.0) for n in names]) + 1e-9
    low, high = 0.0, ceiling_bps / values.min()
    for _ in range(100):  # the bracket shrinks to ~1e-17 of its width
        scale = (low + high) / 2
        if np.clip(scale * values, floor_bps, ceiling_bps).sum() < TOTAL_BPS:
            low = scale
        else:
            high = scale
    target = np.clip(high * values, floor_bps, ceiling_bps)
    return _rounded(dict(zip(names, target.tolist())), ceiling_bps)


def _rounded(target: Mapping[str, float], ceiling_bps: int) -> dict[str, int]:
    weights = {name: int(math.floor(value + 1e-6)) for name, value in target.items()}
    short = TOTAL_BPS - sum(weights.values())  # 0 to len(target): what flooring left out
    by_remainder = sorted(target, key=lambda name: weights[name] - target[name])
    for name in by_remainder:
        if short <= 0:
            break
        if weights[name] < ceiling_bps:
            weights[name] += 1
            short -= 1
    return weights


def reallocate(metric: str, kind: MetricKind, current: Sequence[tuple[str, int]], counts: Mapping[str, Counts],
               allocation: Allocation, rng: np.random.Generator) -> Reallocation | None:
    """The new weights for variants `current` ((name, weight_bps) in order), or None when a variant
    has fewer than min_exposures users or no weight would move by MIN_MOVE_BPS."""
    if any(counts[name].n < allocation.min_exposures for name, _ in current):
        return None
    best = probability_best(kind, {name: counts[name] for name, _ in current}, rng)
    weights = weights_within(best, allocation.floor_bps, allocation.ceiling_bps)
    if max(abs(weights[name] - before) for name, before in current) < MIN_MOVE_BPS:
        return None
    figures = tuple(VariantFigures(name, counts[name].n, _mean(kind, counts[name]), best[name], before, weights[name])
                    for name, before in current)
    return Reallocation(metric, {name: weights[name] for name, _ in current}, figures)


def _mean(kind: MetricKind, counts: Counts) -> float:
    if counts.n == 0:
        return 0.0
    return (counts.successes if kind is MetricKind.BINARY else counts.sum) / counts.n

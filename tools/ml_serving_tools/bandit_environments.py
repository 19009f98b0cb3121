"""Seeded bandit environments for the learning benchmark (bench/bandit_learning.py).

A Scenario describes an environment; `Scenario.build(seed)` draws one instance of it: the
arms' parameters, every round's context and every round's reward noise. All of it is drawn
up front, so every policy run on the same instance faces the same contexts and the same
noise, round by round (common random numbers: differences come from the policies only).

Rewards always lie in [0, 1], as the service accepts. Bernoulli rewards pay 1 with the
arm's mean; Gaussian rewards are mean + sd * noise clipped to [0, 1], and the regret of a
round uses the exact expected value of the clipped reward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

# Contextual means are c_a + theta_a . z with ||z|| = 1, c_a in this range and ||theta_a|| =
# CONTEXT_WEIGHT: means stay within [0, 0.9], so Bernoulli rewards need no clipping.
INTERCEPT_RANGE = (0.40, 0.55)
CONTEXT_WEIGHT = 0.35


@dataclass(frozen=True)
class Scenario:
    name: str
    n_arms: int
    dim: int  # 0: context-free; else x = (1, z) with z on the unit sphere of R^(dim-1)
    rounds: int
    noise_sd: float | None = None  # None: Bernoulli rewards; else clipped Gaussian
    # What happens at rounds // 2: "" nothing; "falls" the best arm becomes the worst; "rises"
    # the worst arm becomes the best (context-free); "mirrors" every arm's effects reverse (contextual).
    drift: str = ""
    batch: int = 25  # every policy learns after each batch of this many rounds

    @property
    def contextual(self) -> bool:
        return self.dim > 0

    @property
    def noise_label(self) -> str:
        return "bernoulli" if self.noise_sd is None else f"gauss sd={self.noise_sd:g}"

    def describe(self) -> str:
        shape = f"d={self.dim}, " if self.contextual else "context-free, "
        drift = {"": "", "falls": ", the best arm becomes the worst halfway",
                 "rises": ", the worst arm becomes the best halfway", "mirrors": ", every arm mirrored halfway"}[self.drift]
        return (
            f"{self.name}: {self.n_arms} arms, {shape}{self.noise_label} rewards, {self.rounds:,} rounds, "
            f"learning every {self.batch} rounds{drift}"
        )

    def scaled(self, rounds: int) -> "Scenario":
        return Scenario(self.name, self.n_arms, self.dim, rounds, self.noise_sd, self.drift, self.batch)

    def build(self, seed: int) -> "Instance":
        rng = np.random.default_rng([seed, self.n_arms, self.dim, 7919])
        arms = _contextual_arms(self, rng) if self.contextual else _context_free_arms(self, rng)
        contexts = _contexts(self, rng) if self.contextual else None
        noise = rng.random(self.rounds) if self.noise_sd is None else rng.standard_normal(self.rounds)
        return Instance(self, *arms, contexts, noise)


def _context_free_arms(scenario: Scenario, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if not scenario.drift:
        means = _click_rates(scenario.n_arms, rng)
        return means, means
    # Fewer, busier arms than the click-rate scenario: a discount can only forget what it
    # saw often enough to learn in the first place.
    means = rng.uniform(0.05, 0.25, scenario.n_arms)
    means[rng.integers(scenario.n_arms)] = 0.35
    return means, _best_falls(means) if scenario.drift == "falls" else _worst_rises(means)


def _click_rates(n: int, rng: np.random.Generator) -> np.ndarray:
    """Most arms in [0.5%, 3%], a few better ones at 3.5-4.5%."""
    means = rng.uniform(0.005, 0.03, n)
    better = rng.choice(n, size=max(1, n // 30), replace=False)
    means[better] = rng.uniform(0.035, 0.045, better.size)
    return means


def _best_falls(means: np.ndarray) -> np.ndarray:
    after = means.copy()
    after[np.argmax(means)] = means.min() * 0.5
    return after


def _worst_rises(means: np.ndarray) -> np.ndarray:
    """An arm nobody has played much since the start becomes the best: only exploration finds it."""
    after = means.copy()
    after[np.argmin(means)] = means.max() + 0.1
    return after


def _contextual_arms(scenario: Scenario, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per arm a row (c_a, theta_a): mean of arm a for x = (1, z) is row . x."""
    n, k = scenario.n_arms, scenario.dim - 1
    intercepts = rng.uniform(*INTERCEPT_RANGE, n)
    directions = _unit_rows(rng.standard_normal((n, k))) if k else np.zeros((n, 0))
    weights = np.column_stack([intercepts, CONTEXT_WEIGHT * directions])
    if not scenario.drift:
        return weights, weights
    # Mirror every arm: intercepts flip within their range and context effects reverse,
    # so the best arm of any context becomes one of its worst.
    mirrored = np.column_stack([sum(INTERCEPT_RANGE) - intercepts, -CONTEXT_WEIGHT * directions])
    return weights, mirrored


def _contexts(scenario: Scenario, rng: np.random.Generator) -> np.ndarray:
    z = _unit_rows(rng.standard_normal((scenario.rounds, scenario.dim - 1)))
    return np.column_stack([np.ones(scenario.rounds), z])


def _unit_rows(values: np.ndarray) -> np.ndarray:
    return values / np.maximum(np.linalg.norm(values, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class Instance:
    """One seeded draw of a Scenario: arm parameters before/after the drift, contexts, noise."""

    scenario: Scenario
    params_before: np.ndarray  # (arms,) means, or (arms, dim) linear weights
    params_after: np.ndarray
    contexts: np.ndarray | None  # (rounds, dim)
    noise: np.ndarray  # (rounds,): uniform coins (Bernoulli) or standard normals (Gaussian)

    def context_batch(self, start: int, stop: int) -> np.ndarray | None:
        return None if self.contexts is None else self.contexts[start:stop]

    def means(self, start: int, stop: int) -> np.ndarray:
        """(rounds, arms) mean rewards before noise, for rounds start..stop-1."""
        switch = self.scenario.rounds // 2 if self.scenario.drift else self.scenario.rounds
        after = (np.arange(start, stop) >= switch)[:, None]
        if self.contexts is None:
            return np.where(after, self.params_after, self.params_before)
        x = self.contexts[start:stop]
        return np.where(after, x @ self.params_after.T, x @ self.params_before.T)

    def expected_rewards(self, means: np.ndarray) -> np.ndarray:
        """The expected reward actually paid: the mean itself, or that of the clipped Gaussian."""
        if self.scenario.noise_sd is None:
            return means
        return clipped_gaussian_mean(means, self.scenario.noise_sd)

    def rewards(self, start: int, means: np.ndarray, arms: np.ndarray) -> np.ndarray:
        chosen = means[np.arange(arms.size), arms]
        noise = self.noise[start : start + arms.size]
        if self.scenario.noise_sd is None:
            return (noise < chosen).astype(float)
        return np.clip(chosen + self.scenario.noise_sd * noise, 0.0, 1.0)


def clipped_gaussian_mean(mean: np.ndarray, sd: float) -> np.ndarray:
    """E[clip(Y, 0, 1)] for Y ~ N(mean, sd^2), i.e. E[Y+] - E[(Y-1)+]."""
    return _positive_part_mean(mean, sd) - _positive_part_mean(mean - 1.0, sd)


def _positive_part_mean(mean: np.ndarray, sd: float) -> np.ndarray:
    u = mean / sd
    return mean * ndtr(u) + sd * np.exp(-0.5 * u * u) / np.sqrt(2.0 * np.pi)

"""Forgetting, the meaning of a bandit's `discount` d.

On every reward of an arm, that arm's past evidence is multiplied by 1 - d, and every arm's
(that one's included) by 1 - d / FADE_RATIO, before the new reward is added. The first part
finds out quickly an arm whose rewards drift while it is played (it weighs about its last 1 / d
rewards); the second lets the evidence of arms not played for a long time fade slowly back
towards the prior, so that an arm which got better while nobody played it is tried again.
Either alone does well on one kind of drift and poorly on the other; bench/bandit_learning.py
measures both kinds (the best arm gets worse, a poor arm gets better).
"""

from __future__ import annotations

import numpy as np

FADE_RATIO = 25.0


def fade(discount: float) -> float:
    """What every reward of the bandit takes from every arm's evidence."""
    return discount / FADE_RATIO


def block_weights(arms: np.ndarray, arm_count: int, discount: float) -> tuple[np.ndarray, np.ndarray]:
    """For rewards of `arms` (in time order) applied as one block: what survives of each.

    Returns (weights, decay): the reward at i keeps (1 - d)^(later rewards of its arm in the
    block) * (1 - d / FADE_RATIO)^(later rewards in the block); an arm's evidence from before
    the block keeps (1 - d)^(its rewards in the block) * (1 - d / FADE_RATIO)^(block size).
    Computed in logs, so that long blocks underflow cleanly to 0.
    """
    arms = np.asarray(arms, dtype=np.intp)
    count = arms.shape[0]
    per_arm = np.bincount(arms, minlength=arm_count)
    if discount == 0:
        return np.ones(count), np.ones(arm_count)
    order = np.argsort(arms, kind="stable")
    sorted_arms = arms[order]
    rank = np.arange(count) - np.searchsorted(sorted_arms, sorted_arms, side="left")  # earlier rewards of the arm
    later_own = np.empty(count, dtype=np.intp)
    later_own[order] = per_arm[sorted_arms] - 1 - rank
    later_all = np.arange(count - 1, -1, -1)
    own, every = np.log1p(-discount), np.log1p(-fade(discount))
    return np.exp(own * later_own + every * later_all), np.exp(own * per_arm + every * count)

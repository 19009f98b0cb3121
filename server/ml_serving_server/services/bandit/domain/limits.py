"""What a bandit request may hold: limits, and the checks that name the offending field.

Every check runs before anything is written, so a rejected request changes nothing. Every
input is bounded, so no error message or stored value grows with what a caller sends.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Sequence

import numpy as np

from ....errors import InvalidArgument
from .errors import ErrorReason
from .model import DEFAULT_DECISION_TTL_SECONDS, BanditDefinition, RewardInput

NAME_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
MAX_ARMS = 1000
MAX_CONTEXT_DIMENSION = 256
MAX_BATCH = 10_000
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
MAX_ID_LENGTH = 512  # decision ids: longer ones are not ours, and would bloat error messages
MAX_EVENT_ID_LENGTH = 128
MAX_CONTEXT_VALUE = 1e6  # larger features would overflow the sums x x^T kept per arm
MAX_PRIOR = 1e6


def check_name(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if not NAME_PATTERN.match(value):
        raise InvalidArgument(field, "must be 1 to 128 characters of letters, digits and . _ : -")
    return value


def check_page_size(page_size: int) -> int:
    """The page size to use: 0 means the default."""
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be 0 to {MAX_PAGE_SIZE}")
    return page_size or DEFAULT_PAGE_SIZE


def normalised(d: BanditDefinition) -> BanditDefinition:
    """A valid definition with defaults filled in (0 means 'the default')."""
    check_name(d.name, "bandit.name")
    if not d.arms:
        raise InvalidArgument("bandit.arms", "must hold at least one arm")
    if len(d.arms) > MAX_ARMS:
        raise InvalidArgument("bandit.arms", f"at most {MAX_ARMS} arms")
    seen: set[str] = set()
    for index, arm in enumerate(d.arms):
        check_name(arm.id, f"bandit.arms[{index}].id")
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
        decision_ttl_seconds=d.decision_ttl_seconds or DEFAULT_DECISION_TTL_SECONDS,
    )


def check_arm_ids(field: str, ids: Sequence[str], known: set[str]) -> None:
    for arm_id in ids:
        check_name(arm_id, field)
        if arm_id not in known:
            raise InvalidArgument(field, f"unknown arm {arm_id!r}", reason=ErrorReason.UNKNOWN_ARM)


def candidates(definition: BanditDefinition, requested: Sequence[str], k: int | None) -> list[str]:
    """The enabled arms to choose from: all of them, or the requested subset."""
    enabled = definition.enabled_arm_ids()
    if requested:
        for arm_id in requested:
            check_name(arm_id, "candidate_arm_ids")
        known = set(definition.arm_ids())
        unknown = [c for c in requested if c not in known]
        if unknown:
            raise InvalidArgument("candidate_arm_ids", f"unknown arms {unknown}", reason=ErrorReason.UNKNOWN_ARM)
        allowed = set(enabled)
        arms = [c for c in dict.fromkeys(requested) if c in allowed]
    else:
        arms = enabled
    if k is not None and k < 1:
        raise InvalidArgument("k", f"must be at least 1, got {k}")
    if (k or 1) > len(arms):
        raise InvalidArgument("k", f"asks for {k or 1} arms but only {len(arms)} enabled candidates exist",
                              reason=ErrorReason.NOT_ENOUGH_ARMS)
    return arms


def context_vector(definition: BanditDefinition, context: Sequence[float], field: str) -> np.ndarray:
    if definition.context_dimension == 0:
        raise InvalidArgument("bandit", f"bandit {definition.name!r} has no context_dimension",
                              reason=ErrorReason.NOT_CONTEXTUAL)
    if len(context) != definition.context_dimension:
        raise InvalidArgument(field, f"has {len(context)} values, bandit {definition.name!r} expects "
                              f"{definition.context_dimension}", reason=ErrorReason.CONTEXT_DIMENSION_MISMATCH)
    x = np.asarray(context, dtype=np.float64)
    if not (np.all(np.isfinite(x)) and np.all(np.abs(x) <= MAX_CONTEXT_VALUE)):
        raise InvalidArgument(field, f"values must be finite numbers within ±{MAX_CONTEXT_VALUE:g}")
    return x


def check_reward_fields(item: RewardInput, prefix: str, index: int) -> None:
    if not item.decision_id:
        check_name(item.bandit, prefix + "bandit")
        check_name(item.arm_id, prefix + "arm_id")
    if not (math.isfinite(item.reward) and 0.0 <= item.reward <= 1.0):
        raise InvalidArgument(prefix + "reward", f"must be within [0, 1], got {item.reward}",
                              reason=ErrorReason.REWARD_OUT_OF_RANGE, index=str(index))
    if len(item.event_id) > MAX_EVENT_ID_LENGTH:
        raise InvalidArgument(prefix + "event_id", f"at most {MAX_EVENT_ID_LENGTH} characters")
    if len(item.decision_id) > MAX_ID_LENGTH:
        raise InvalidArgument(prefix + "decision_id", f"at most {MAX_ID_LENGTH} characters")


def check_batch_size(items: Sequence[object]) -> None:
    if not items:
        raise InvalidArgument("rewards", "must hold at least one reward")
    if len(items) > MAX_BATCH:
        raise InvalidArgument("rewards", f"at most {MAX_BATCH} rewards per batch")


def encode_page_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def decode_page_token(token: str) -> str:
    """The name a page starts after ('' for the first page)."""
    if not token:
        return ""
    try:
        name = base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        name = ""
    if not NAME_PATTERN.match(name):
        raise InvalidArgument("page_token", "is not a token this service issued",
                              reason=ErrorReason.INVALID_PAGE_TOKEN)
    return name

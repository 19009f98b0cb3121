"""What a bandit request may hold: the one table of limits, and the checks that name the
offending field.

Every request is checked against these limits before anything is read or written, so a
rejected request changes nothing and costs little. Every input is bounded, so no stored
value, response or error message grows with what a caller sends; messages quote user input
only through `errors.quoted` and `errors.listed`.
"""

from __future__ import annotations

import base64
import math
import re
from typing import Sequence, Sized

import numpy as np

from ....errors import InvalidArgument, listed, quoted
from . import decision_ids
from .decision_log import LogCursor
from .errors import ErrorReason
from .model import (
    DEFAULT_DECISION_TTL_SECONDS,
    MAX_DISCOUNT,
    ArmDefinition,
    BanditDefinition,
    ContextualAlgorithm,
    RewardInput,
)
from .policy import DEFAULT_LINEAR_THOMPSON_EXPLORATION, DEFAULT_LINUCB_EXPLORATION

KIB = 1024

# ----- the limits (the README's table lists them) -----
MAX_NAME_LENGTH = 128  # bandit names and arm ids, of [A-Za-z0-9._:-]
MAX_DESCRIPTION_LENGTH = 1024  # bandit and arm descriptions
MAX_MODEL_VERSION_LENGTH = 256  # an arm's model_version
MAX_USER_ID_LENGTH = 256  # the user a selection is for
MAX_ACTOR_LENGTH = 256  # the token subject recorded as created_by / updated_by (longer ones are cut)
MAX_EVENT_ID_LENGTH = 128  # a reward's idempotency key
MAX_DECISION_ID_LENGTH = decision_ids.MAX_ID_LENGTH  # longer ones are not ours
MAX_PAGE_TOKEN_LENGTH = 256  # ours are at most 172 characters (a name, base64)
MAX_ARMS = 1000  # arms of a bandit, and ids in any list of arms a request carries
MAX_CONTEXT_DIMENSION = 256  # a bandit's context_dimension, and values in any context
MAX_BATCH = 10_000  # rewards in one BatchReward
MAX_PAGE_SIZE = 1000  # bandits in one ListBandits page
DEFAULT_PAGE_SIZE = 100
MAX_DEFINITION_BYTES = 64 * KIB  # a definition's estimated size, so a page's size is bounded too
MAX_PAGE_BYTES = 1024 * KIB  # a ListBandits page ends early rather than exceed this
MAX_CONTEXT_VALUE = 1e6  # larger features would overflow the sums x x^T kept per arm
MAX_PRIOR = 1e6

# What a definition costs beyond its strings (numbers, times, framing); see estimated_bytes.
DEFINITION_BASE_BYTES = 64
ARM_BASE_BYTES = 8

NAME_PATTERN = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_NAME_LENGTH}}}")


# ----- single fields -----

def check_name(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if not NAME_PATTERN.fullmatch(value):
        raise InvalidArgument(field, f"must be 1 to {MAX_NAME_LENGTH} characters of letters, digits and . _ : -")
    return value


def check_length(value: str, field: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidArgument(field, f"must be at most {limit} characters, got {len(value)}")
    return value


def check_count(values: Sized, field: str, limit: int, what: str) -> None:
    if len(values) > limit:
        raise InvalidArgument(field, f"must hold at most {limit} {what}, got {len(values)}")


def check_names(values: Sequence[str], field: str) -> None:
    """A list of arm ids: at most MAX_ARMS, each a valid name."""
    check_count(values, field, MAX_ARMS, "ids")
    for index, value in enumerate(values):
        check_name(value, f"{field}[{index}]")


def check_k(k: int | None) -> None:
    if k is not None and k < 1:
        raise InvalidArgument("k", f"must be at least 1, got {k}")


def check_page_size(page_size: int) -> int:
    """The page size to use: 0 means the default."""
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be 0 to {MAX_PAGE_SIZE}, got {page_size}")
    return page_size or DEFAULT_PAGE_SIZE


# ----- definitions -----

def estimated_bytes(d: BanditDefinition) -> int:
    """About how large a definition is, stored or sent: its strings plus a fixed cost per arm."""
    strings = [d.name, d.description, d.created_by, d.updated_by,
               *(s for arm in d.arms for s in (arm.id, arm.description, arm.model_version))]
    return DEFINITION_BASE_BYTES + ARM_BASE_BYTES * len(d.arms) + sum(len(s.encode()) for s in strings)


def check_definition_size(d: BanditDefinition, field: str) -> None:
    size = estimated_bytes(d)
    if size > MAX_DEFINITION_BYTES:
        raise InvalidArgument(field, f"the definition would take about {size} bytes (names, descriptions, model "
                              f"versions); at most {MAX_DEFINITION_BYTES}")


def check_arms(arms: Sequence[ArmDefinition], field: str, existing: Sequence[str] = ()) -> None:
    """Arms to add under `field`: at most MAX_ARMS, each valid, no id repeated or already in `existing`."""
    check_count(arms, field, MAX_ARMS, "arms")
    taken = set(existing)
    seen: set[str] = set()
    for index, arm in enumerate(arms):
        path = f"{field}[{index}]"
        check_name(arm.id, f"{path}.id")
        check_length(arm.description, f"{path}.description", MAX_DESCRIPTION_LENGTH)
        check_length(arm.model_version, f"{path}.model_version", MAX_MODEL_VERSION_LENGTH)
        if arm.id in seen:
            raise InvalidArgument(f"{path}.id", f"duplicate arm id {quoted(arm.id)}")
        if arm.id in taken:
            raise InvalidArgument(f"{path}.id", f"the bandit already has an arm {quoted(arm.id)}")
        seen.add(arm.id)


def normalised(d: BanditDefinition) -> BanditDefinition:
    """A valid new definition (CreateBandit's `bandit`) with defaults filled in (0 means 'the default')."""
    check_name(d.name, "bandit.name")
    check_length(d.description, "bandit.description", MAX_DESCRIPTION_LENGTH)
    if not d.arms:
        raise InvalidArgument("bandit.arms", "must hold at least one arm")
    check_arms(d.arms, "bandit.arms")
    for field in ("prior_alpha", "prior_beta", "exploration", "ridge_lambda"):
        value = getattr(d, field)
        if not (math.isfinite(value) and 0 <= value <= MAX_PRIOR):
            raise InvalidArgument(f"bandit.{field}", f"must be a number from 0 to {MAX_PRIOR:g}")
    if not (math.isfinite(d.discount) and 0 <= d.discount <= MAX_DISCOUNT):
        raise InvalidArgument("bandit.discount", f"must be a number from 0 (forget nothing) to {MAX_DISCOUNT:g}")
    if d.context_dimension > MAX_CONTEXT_DIMENSION:
        raise InvalidArgument("bandit.context_dimension", f"must be at most {MAX_CONTEXT_DIMENSION}")
    check_definition_size(d, "bandit")
    return d.with_changes(
        prior_alpha=d.prior_alpha or 1.0,
        prior_beta=d.prior_beta or 1.0,
        exploration=d.exploration or default_exploration(d.contextual_algorithm),
        ridge_lambda=d.ridge_lambda or 1.0,
        decision_ttl_seconds=d.decision_ttl_seconds or DEFAULT_DECISION_TTL_SECONDS,
    )


def check_update(description: str, add_arms: Sequence[ArmDefinition], disable_ids: Sequence[str],
                 enable_ids: Sequence[str]) -> None:
    """UpdateBandit's fields on their own, before the bandit is read."""
    check_length(description, "description", MAX_DESCRIPTION_LENGTH)
    check_arms(add_arms, "add_arms")
    check_names(disable_ids, "disable_arm_ids")
    check_names(enable_ids, "enable_arm_ids")


def check_updated(current: BanditDefinition, updated: BanditDefinition, add_arms: Sequence[ArmDefinition]) -> None:
    """UpdateBandit's fields against the bandit: new arm ids, and the limits of the result."""
    check_arms(add_arms, "add_arms", existing=current.arm_ids())
    if len(updated.arms) > MAX_ARMS:
        raise InvalidArgument("add_arms", f"would give the bandit {len(updated.arms)} arms; at most {MAX_ARMS}")
    check_definition_size(updated, "add_arms" if add_arms else "description")


def check_arm_ids(field: str, ids: Sequence[str], known: set[str]) -> None:
    for index, arm_id in enumerate(ids):
        if arm_id not in known:
            raise InvalidArgument(f"{field}[{index}]", f"unknown arm {quoted(arm_id)}", reason=ErrorReason.UNKNOWN_ARM)


def page_within_budget(definitions: Sequence[BanditDefinition], page_size: int) -> list[BanditDefinition]:
    """The first definitions that make a page: at most `page_size`, and no more than
    MAX_PAGE_BYTES together (the first one always, as it is at most MAX_DEFINITION_BYTES)."""
    page: list[BanditDefinition] = []
    total = 0
    for definition in definitions[:page_size]:
        total += estimated_bytes(definition)
        if page and total > MAX_PAGE_BYTES:
            break
        page.append(definition)
    return page


# ----- selection -----

def check_selection(bandit: str, k: int | None, candidates: Sequence[str], user_id: str) -> None:
    """Select's fields on their own, before the bandit is read."""
    check_name(bandit, "bandit")
    check_k(k)
    check_names(candidates, "candidate_arm_ids")
    check_length(user_id, "user_id", MAX_USER_ID_LENGTH)
    if "\x00" in user_id:  # PostgreSQL text cannot hold it, and the decision log keeps the user
        raise InvalidArgument("user_id", "must not contain NUL characters")


def check_context_size(context: Sequence[float], field: str) -> None:
    check_count(context, field, MAX_CONTEXT_DIMENSION, "values")


def candidates(definition: BanditDefinition, requested: Sequence[str], k: int | None) -> list[str]:
    """The enabled arms to choose from: all of them, or the requested subset."""
    enabled = definition.enabled_arm_ids()
    if requested:
        known = set(definition.arm_ids())
        unknown = [c for c in requested if c not in known]
        if unknown:
            raise InvalidArgument("candidate_arm_ids", f"unknown arms {listed(unknown)}",
                                  reason=ErrorReason.UNKNOWN_ARM, unknown_count=len(unknown))
        allowed = set(enabled)
        arms = [c for c in dict.fromkeys(requested) if c in allowed]
    else:
        arms = enabled
    if (k or 1) > len(arms):
        raise InvalidArgument("k", f"asks for {k or 1} arms but only {len(arms)} enabled candidates exist",
                              reason=ErrorReason.NOT_ENOUGH_ARMS)
    return arms


def context_vector(definition: BanditDefinition, context: Sequence[float], field: str) -> np.ndarray:
    if definition.context_dimension == 0:
        raise InvalidArgument("bandit", f"bandit {quoted(definition.name)} has no context_dimension",
                              reason=ErrorReason.NOT_CONTEXTUAL)
    if len(context) != definition.context_dimension:
        raise InvalidArgument(field, f"has {len(context)} values, bandit {quoted(definition.name)} expects "
                              f"{definition.context_dimension}", reason=ErrorReason.CONTEXT_DIMENSION_MISMATCH)
    x = np.asarray(context, dtype=np.float64)
    if not (np.all(np.isfinite(x)) and np.all(np.abs(x) <= MAX_CONTEXT_VALUE)):
        raise InvalidArgument(field, f"values must be finite numbers within ±{MAX_CONTEXT_VALUE:g}")
    return x


# ----- rewards -----

def check_reward_fields(item: RewardInput, prefix: str, index: int) -> None:
    check_length(item.decision_id, prefix + "decision_id", MAX_DECISION_ID_LENGTH)
    check_length(item.event_id, prefix + "event_id", MAX_EVENT_ID_LENGTH)
    # Without a decision, bandit and arm name what is rewarded; with one, they are optional checks.
    if not item.decision_id or item.bandit:
        check_name(item.bandit, prefix + "bandit")
    if not item.decision_id or item.arm_id:
        check_name(item.arm_id, prefix + "arm_id")
    check_context_size(item.context, prefix + "context")
    if not (math.isfinite(item.reward) and 0.0 <= item.reward <= 1.0):
        raise InvalidArgument(prefix + "reward", f"must be within [0, 1], got {item.reward}",
                              reason=ErrorReason.REWARD_OUT_OF_RANGE, index=str(index))


def check_batch_size(items: Sequence[object]) -> None:
    if not items:
        raise InvalidArgument("rewards", "must hold at least one reward")
    check_count(items, "rewards", MAX_BATCH, "rewards")


# ----- page tokens -----

def encode_page_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def decode_page_token(token: str) -> str:
    """The name a page starts after ('' for the first page)."""
    if not token:
        return ""
    name = ""
    if len(token) <= MAX_PAGE_TOKEN_LENGTH:
        try:
            name = base64.urlsafe_b64decode(token.encode()).decode()
        except (ValueError, UnicodeDecodeError):
            pass
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidArgument("page_token", "is not a token this service issued",
                              reason=ErrorReason.INVALID_PAGE_TOKEN)
    return name


def actor(subject: str) -> str:
    """Who acted, as recorded: the token's subject, cut to a bounded length."""
    return subject[:MAX_ACTOR_LENGTH]


# ----- the decision log -----

def encode_log_cursor(cursor: LogCursor) -> str:
    """A ListDecisions page token: where the page ended (decision time, key)."""
    time_us = int(cursor.time.timestamp() * 1_000_000)
    return base64.urlsafe_b64encode(time_us.to_bytes(8, "big", signed=True) + cursor.key).decode()


def decode_log_cursor(token: str) -> LogCursor | None:
    """Where a page starts after; None for the first page."""
    if not token:
        return None
    raw = b""
    if len(token) <= MAX_PAGE_TOKEN_LENGTH:
        try:
            raw = base64.urlsafe_b64decode(token.encode())
        except ValueError:
            pass
    if len(raw) != 24:
        raise InvalidArgument("page_token", "is not a token this service issued; start from an empty page_token",
                              reason=ErrorReason.INVALID_PAGE_TOKEN)
    return LogCursor(decision_ids.from_micros(int.from_bytes(raw[:8], "big", signed=True)), raw[8:])


def check_window(start, end) -> None:
    """A time window [start, end): either end may be open."""
    if start is not None and end is not None and not start < end:
        raise InvalidArgument("end_time", "must be after start_time")


def check_arm_probabilities(probabilities: dict[str, float], definition: BanditDefinition) -> dict[str, float]:
    """A fixed candidate: known arms, each probability in [0, 1], at least one above 0."""
    check_count(probabilities, "arm_probabilities", MAX_ARMS, "arms")
    known = set(definition.arm_ids())
    for arm, probability in probabilities.items():
        if arm not in known:
            raise InvalidArgument("arm_probabilities", f"unknown arm {quoted(arm[:MAX_NAME_LENGTH])}",
                                  reason=ErrorReason.UNKNOWN_ARM)
        if not (math.isfinite(probability) and 0 <= probability <= 1):
            raise InvalidArgument("arm_probabilities", f"arm {quoted(arm)}: a probability must be from 0 to 1")
    if not any(p > 0 for p in probabilities.values()):
        raise InvalidArgument("arm_probabilities", "at least one arm needs a probability above 0")
    return probabilities


def check_candidate_values(values: dict[str, float | None]) -> None:
    """A learning candidate's parameters (None: the bandit's own)."""
    positive = {"prior_alpha", "prior_beta", "ridge_lambda"}
    for name, value in values.items():
        if value is None:
            continue
        low_ok = value > 0 if name in positive else value >= 0
        high = MAX_DISCOUNT if name == "discount" else MAX_PRIOR
        if not (math.isfinite(value) and low_ok and value <= high):
            bound = "above 0" if name in positive else "from 0"
            raise InvalidArgument(f"policy.{name}", f"must be a number {bound} to {high:g}")


def default_exploration(algorithm: ContextualAlgorithm) -> float:
    """What exploration 0 stands for: chosen by evidence (bench/bandit_learning.py, policy.py)."""
    if algorithm is ContextualAlgorithm.LIN_UCB:
        return DEFAULT_LINUCB_EXPLORATION
    return DEFAULT_LINEAR_THOMPSON_EXPLORATION

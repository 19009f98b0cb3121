"""Why a pipeline request failed: mirrors `enum ErrorReason` in proto/.../pipeline/v1/error_reason.proto.

The member's name is the wire's google.rpc.ErrorInfo.reason; a contract test keeps this
enum and the proto's equal, so a reason cannot be raised here without being declared there.
"""

from __future__ import annotations

import enum

from ....errors import InvalidArgument


class ErrorReason(enum.Enum):
    INVALID_FIELD = enum.auto()
    INVALID_PAGE_TOKEN = enum.auto()
    NOT_IMPLEMENTED = enum.auto()
    INTERNAL = enum.auto()
    UNAUTHENTICATED = enum.auto()
    SCOPE_REQUIRED = enum.auto()
    FEATURE_VIEW_NOT_FOUND = enum.auto()
    UNKNOWN_FEATURE = enum.auto()
    TOO_MANY_ENTITIES = enum.auto()
    MATERIALIZATION_IN_PROGRESS = enum.auto()
    ONLINE_STORE_UNAVAILABLE = enum.auto()
    SOURCE_UNAVAILABLE = enum.auto()
    RUN_NOT_FOUND = enum.auto()
    MODEL_NOT_FOUND = enum.auto()
    NO_TRAINER_FOR_MODEL = enum.auto()
    SCHEDULE_NOT_FOUND = enum.auto()
    INVALID_CRON = enum.auto()
    INVALID_TIME_ZONE = enum.auto()
    INVALID_METRIC_VALUE = enum.auto()
    INVALID_CONDITION = enum.auto()
    INVALID_TIME_RANGE = enum.auto()
    INVALID_WEBHOOK_URL = enum.auto()
    ALERT_RULE_NOT_FOUND = enum.auto()
    ALERT_RULE_ALREADY_EXISTS = enum.auto()
    IMMUTABLE_FIELD = enum.auto()
    REGISTRY_UNAVAILABLE = enum.auto()
    STATE_STORE_UNAVAILABLE = enum.auto()
    VIEW_NOT_POINT_IN_TIME = enum.auto()
    QUERY_TIMEOUT = enum.auto()
    MATERIALIZATION_JOB_NOT_FOUND = enum.auto()
    SOURCE_QUERY_FAILED = enum.auto()
    RUN_ALREADY_ENDED = enum.auto()
    MLFLOW_UNAVAILABLE = enum.auto()
    WORKER_LOST = enum.auto()
    TRAINING_FAILED = enum.auto()
    TRAINING_SET_EMPTY = enum.auto()
    REGISTRY_REFUSED = enum.auto()


Path = tuple[str | int, ...]
"""Where a field sits in a declaration: ("features", 3, "type") is features[3].type."""


def render_path(path: Path) -> str:
    text = ""
    for step in path:
        text += f"[{step}]" if isinstance(step, int) else f".{step}" if text else step
    return text


class InvalidDefinition(InvalidArgument):
    """A feature view declaration breaks a rule. `path` locates the field within the view, so
    whoever read the declaration (a file) can point at the line."""

    def __init__(self, path: Path, message: str):
        super().__init__(render_path(path) or "view", message, reason=ErrorReason.INVALID_FIELD)
        self.path = path
        self.problem = message

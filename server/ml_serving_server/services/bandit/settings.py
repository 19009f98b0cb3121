"""The bandit service's own settings (BANDIT_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ...runtime.settings import SettingsBase


class BanditSettings(SettingsBase):
    model_config = SettingsConfigDict(env_prefix="BANDIT_")

    state_max_age_ms: float = Field(
        100.0, ge=0, description="how old a bandit's counts may be when Select samples from them (0: read them on "
                                 "every call); stats and rewards always go to Redis")
    pull_flush_interval_ms: float = Field(
        50.0, gt=0, description="how often pull counts tallied in memory are written to Redis")
    decision_log: bool = Field(
        True, description="log every decision, its propensities and rewards in PostgreSQL (DATABASE_URL; without "
                          "one the log is off) for ListDecisions and EvaluatePolicy")
    decision_log_flush_ms: float = Field(
        1000.0, gt=0, description="how often the decisions and rewards pending in memory are written to the log "
                                  "(ListDecisions and EvaluatePolicy write this replica's own first)")
    decision_log_max_pending_entries: int = Field(
        200_000, ge=1000, description="entries kept in memory while PostgreSQL is down or slow; beyond it the "
                                      "oldest are dropped (counted in bandit_decision_log_dropped_total)")
    decision_log_retention_days: float = Field(
        30.0, gt=0, description="how long the log keeps decisions and rewards")
    decision_log_timeout_seconds: float = Field(
        5.0, gt=0, description="bound on one write or page of the decision log")
    evaluation_max_decisions: int = Field(
        1_000_000, ge=1, le=10_000_000, description="most logged decisions one EvaluatePolicy replays (a larger "
                                                    "window is INVALID_ARGUMENT: narrow it)")
    evaluation_concurrent_requests: int = Field(
        1, ge=1, le=16, description="EvaluatePolicy calls one replica runs at once (each takes seconds of CPU and "
                                    "up to a GB of memory for a million decisions); more are RESOURCE_EXHAUSTED")
    evaluation_timeout_seconds: float = Field(
        120.0, gt=0, description="bound on reading the decisions EvaluatePolicy replays")

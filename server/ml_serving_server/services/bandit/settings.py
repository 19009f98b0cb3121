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

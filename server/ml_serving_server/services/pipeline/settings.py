"""The pipeline service's own settings (PIPELINE_*)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ...runtime.settings import SettingsBase


class PipelineSettings(SettingsBase):
    model_config = SettingsConfigDict(env_prefix="PIPELINE_")

    feature_views_dir: str = Field(
        "", description="folder whose `*.yaml` files declare the feature views, read at start (a bad declaration "
                        "stops the server, naming file, line and field); empty: `features/` of the checkout the "
                        "server runs from, else of the working folder")

    source_database_url: str = Field(
        "", description="PostgreSQL the views' source queries run on; empty: `DATABASE_URL` (where the pipeline's "
                        "own state is)")
    materialization_batch_entries: int = Field(
        1000, gt=0, le=100_000, description="entities a materialisation computes and writes to Redis per batch (one "
                                            "query and one pipelined round trip); a stopped job redoes at most one")
    materialization_query_timeout_seconds: float = Field(
        300.0, gt=0, description="longest one source query of a materialisation may take (the changed keys, a batch)")
    materialization_scheduler_enabled: bool = Field(
        True, description="materialise each view with a materialization_schedule (cron, UTC) at its times; one job "
                          "per due time however many replicas run")
    materialization_scheduler_tick_seconds: float = Field(
        15.0, ge=0.05, le=3600, description="how often a replica looks for a scheduled view that is due")
    read_through_timeout_seconds: float = Field(
        2.0, gt=0, description="longest a read-through (GetFeatures computing missing values) may wait for the source")
    training_set_batch_entries: int = Field(
        5000, gt=0, le=50_000, description="rows of a training set (GetTrainingSet) fetched from PostgreSQL and sent "
                                           "per streamed message")
    training_set_statement_timeout_seconds: float = Field(
        300.0, gt=0, description="PostgreSQL statement_timeout of a training set's query (planning it, and each fetch "
                                 "of a batch of rows)")
    training_set_timeout_seconds: float = Field(
        3600.0, gt=0, description="longest a whole training set may stream, from the first fetch to the last")
    database_timeout_seconds: float = Field(5.0, gt=0, description="longest wait for one PostgreSQL command of the "
                                                                   "pipeline's own state")

    def feature_views_path(self) -> Path:
        return Path(self.feature_views_dir) if self.feature_views_dir else _checkout() / "features"


def _checkout() -> Path:
    """The folder holding pyproject.toml above this file (the package is installed editable), else
    the working folder (an installed copy, e.g. an image that puts features/ beside it)."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    return Path.cwd()

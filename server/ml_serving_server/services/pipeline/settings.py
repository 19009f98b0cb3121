"""The pipeline service's own settings (PIPELINE_*)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from ml_serving import defaults
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

    trainers: str = Field(
        "recommendation-model=ml_serving_tools.demo_model.retrain:RecommendationTrainer",
        description="the models retraining runs can be triggered for: comma-separated `model=module:Class`, each "
                    "class a trainer (domain/retraining.py's Trainer) made with no arguments; empty: none")
    retraining_max_attempts: int = Field(
        3, ge=1, le=20, description="attempts a retraining run gets: a run whose worker died, or whose attempt failed "
                                    "on a dependency (MLflow, the Registry, PostgreSQL down), is queued again until "
                                    "then, and fails after")
    retraining_heartbeat_seconds: float = Field(
        2.0, gt=0, le=300, description="how often a retraining worker proves it alive and reports progress")
    retraining_worker_lost_seconds: float = Field(
        15.0, gt=0, le=3600, description="a running run whose worker sent no heartbeat for this long is taken back "
                                         "(queued again or failed); keep it several heartbeats long")
    retraining_poll_seconds: float = Field(
        1.0, gt=0, le=300, description="how often an idle retraining worker looks for a queued run (and sweeps "
                                       "runs of lost workers)")
    retraining_scheduler_enabled: bool = Field(
        True, description="queue the runs of retraining schedules at their times; one run per due time however "
                          "many replicas look")
    retraining_scheduler_tick_seconds: float = Field(
        15.0, ge=0.05, le=3600, description="how often a replica looks for a retraining schedule that is due")
    monitor_enabled: bool = Field(
        True, description="evaluate the alert rules of the model monitor (every replica that has it on)")
    monitor_evaluation_seconds: float = Field(
        10.0, ge=0.05, le=3600, description="how often the alert rules are evaluated")
    monitor_retention_days: float = Field(
        30.0, ge=0, le=3650, description="recorded metric values older than this are deleted (hourly); 0 keeps "
                                         "them all. Keep it longer than every rule's window plus baseline")
    retraining_registry_addr: str = Field(
        defaults.MESH_GRPC, description="gRPC address of the mesh serving the Registry, where workers register "
                                        "the versions they train")
    retraining_registry_token_file: str = Field(
        "", description="file holding the bearer token workers call the Registry with (scope registry.write); "
                        "empty: no token (a mesh with auth off)")
    retraining_mlflow_tracking_uri: str = Field(
        "http://127.0.0.1:5000",
        validation_alias=AliasChoices("PIPELINE_RETRAINING_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking server workers log runs to (also read from `MLFLOW_TRACKING_URI`)")
    retraining_workdir: str = Field("", description="where workers write a run's files while it trains (removed "
                                                   "after); empty: the system's temporary folder")

    @model_validator(mode="after")
    def _lost_after_several_heartbeats(self) -> "PipelineSettings":
        if self.retraining_worker_lost_seconds < 2 * self.retraining_heartbeat_seconds:
            raise ValueError("PIPELINE_RETRAINING_WORKER_LOST_SECONDS must be at least twice "
                             "PIPELINE_RETRAINING_HEARTBEAT_SECONDS (one late heartbeat must not lose a run)")
        return self

    def feature_views_path(self) -> Path:
        return Path(self.feature_views_dir) if self.feature_views_dir else _checkout() / "features"


def _checkout() -> Path:
    """The folder holding pyproject.toml above this file (the package is installed editable), else
    the working folder (an installed copy, e.g. an image that puts features/ beside it)."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "pyproject.toml").is_file():
            return folder
    return Path.cwd()

"""The registry service's own settings (REGISTRY_*); the usual MLflow and S3 variables are read too."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from ...runtime.settings import SettingsBase


class RegistrySettings(SettingsBase):
    model_config = SettingsConfigDict(env_prefix="REGISTRY_")

    mlflow_tracking_uri: str = Field(
        "http://127.0.0.1:5000", validation_alias=AliasChoices("REGISTRY_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking server holding the registered models (also read from `MLFLOW_TRACKING_URI`)")
    mlflow_timeout_seconds: float = Field(5.0, gt=0, description="longest wait for one MLflow call")
    artifact_root: str = Field("s3://mlserving-models/registry",
                               description="s3://bucket/prefix where the registry stores artifacts")
    s3_endpoint_url: str = Field(
        "", validation_alias=AliasChoices("REGISTRY_S3_ENDPOINT_URL", "S3_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"),
        description="S3-compatible endpoint (empty: AWS); also read from `S3_ENDPOINT_URL`")
    s3_access_key_id: str = Field(
        "", validation_alias=AliasChoices("REGISTRY_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        description="S3 access key (also read from `AWS_ACCESS_KEY_ID`)")
    s3_secret_access_key: str = Field(
        "", validation_alias=AliasChoices("REGISTRY_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        description="S3 secret key (also read from `AWS_SECRET_ACCESS_KEY`)", repr=False)
    s3_region: str = Field("us-east-1", validation_alias=AliasChoices("REGISTRY_S3_REGION", "AWS_DEFAULT_REGION"),
                           description="S3 region (also read from `AWS_DEFAULT_REGION`)")
    s3_timeout_seconds: float = Field(10.0, gt=0, description="S3 connect and read timeout")
    max_artifact_bytes: int = Field(2 * 1024**3, gt=0, description="largest artifact accepted, in bytes")
    database_timeout_seconds: float = Field(5.0, gt=0, description="PostgreSQL connect and statement timeout")
    resolve_cache_entries: int = Field(10_000, gt=0, description="models whose versions each replica keeps in memory "
                                                            "for ResolveModelVersion")
    heartbeat_seconds: float = Field(15.0, gt=0, description="WatchEvents sends an empty message this often "
                                                             "when nothing happens")
    event_retention_days: float = Field(30.0, gt=0, description="how long events stay replayable by WatchEvents")

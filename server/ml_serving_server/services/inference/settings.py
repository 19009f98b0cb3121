"""The Inference service's own settings (INFERENCE_*); the usual TorchServe and S3 variables are read too."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from ...runtime.settings import SettingsBase


class InferenceSettings(SettingsBase):
    model_config = SettingsConfigDict(env_prefix="INFERENCE_")

    torchserve_grpc_addr: str = Field(
        "127.0.0.1:7070", validation_alias=AliasChoices("INFERENCE_TORCHSERVE_GRPC_ADDR", "TORCHSERVE_GRPC_ADDR"),
        description="TorchServe's gRPC inference API (also read from `TORCHSERVE_GRPC_ADDR`)")
    torchserve_management_addr: str = Field(
        "127.0.0.1:7071",
        validation_alias=AliasChoices("INFERENCE_TORCHSERVE_MANAGEMENT_ADDR", "TORCHSERVE_MANAGEMENT_ADDR"),
        description="TorchServe's gRPC management API (also read from `TORCHSERVE_MANAGEMENT_ADDR`)")
    registry_addr: str = Field(
        "", description="gRPC address of the Registry service; empty: this mesh server's own address")
    registry_token_file: str = Field(
        "", description="file holding the bearer token (scope registry.read) this service shows the Registry; "
                        "empty: none (auth off)")
    registry_timeout_seconds: float = Field(2.0, gt=0, description="longest wait for one Registry call")
    s3_endpoint_url: str = Field(
        "", validation_alias=AliasChoices("INFERENCE_S3_ENDPOINT_URL", "S3_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"),
        description="S3-compatible endpoint of the artifact store (also read from `S3_ENDPOINT_URL`)")
    s3_access_key_id: str = Field(
        "", validation_alias=AliasChoices("INFERENCE_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        description="S3 access key, to presign artifact URLs (also read from `AWS_ACCESS_KEY_ID`)")
    s3_secret_access_key: str = Field(
        "", validation_alias=AliasChoices("INFERENCE_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
        description="S3 secret key (also read from `AWS_SECRET_ACCESS_KEY`)", repr=False)
    s3_region: str = Field("us-east-1", validation_alias=AliasChoices("INFERENCE_S3_REGION", "AWS_DEFAULT_REGION"),
                           description="S3 region (also read from `AWS_DEFAULT_REGION`)")
    presign_seconds: int = Field(600, gt=0, le=7 * 24 * 3600,
                                 description="how long the URL TorchServe fetches an artifact from stays valid")
    max_predict_seconds: float = Field(60.0, gt=0, description="longest a prediction may take when its caller set "
                                                               "no deadline (a shorter deadline always applies)")
    max_input_bytes: int = Field(4 * 1024**2, gt=0, description="largest prediction input, in bytes")
    resolve_cache_entries: int = Field(10_000, gt=0, description="selectors whose resolved version is kept in memory")
    deployer_enabled: bool = Field(True, description="load Staging and Production versions into TorchServe and "
                                                     "unload the others, following the Registry's events")
    deployer_grace_seconds: float = Field(30.0, ge=0, description="how long a version that left Staging and "
                                                                   "Production keeps serving before it is unloaded")
    deployer_reconcile_seconds: float = Field(10.0, gt=0, description="how often the deployer compares what serves "
                                                                      "with what should (repairs any drift)")
    deployer_refresh_seconds: float = Field(300.0, gt=0, description="how often the deployer reads every Staging "
                                                                     "and Production version from the Registry "
                                                                     "(its events keep it current between)")
    deployer_batch_requests: int = Field(1, gt=0, le=512, description="TorchServe batch size (requests per "
                                                                      "inference call) of the versions the deployer loads")
    deployer_max_batch_delay_ms: int = Field(5, ge=0, le=60_000, description="how long TorchServe waits to fill "
                                                                             "a batch of a deployed version")
    deployer_workers: int = Field(1, gt=0, le=16, description="TorchServe workers of each deployed version")

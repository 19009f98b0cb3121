"""The Router's own settings (ROUTER_*); the usual TorchServe variables are read too."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from ...runtime.settings import SettingsBase


class RouterSettings(SettingsBase):
    model_config = SettingsConfigDict(env_prefix="ROUTER_")

    torchserve_grpc_addr: str = Field(
        "127.0.0.1:7070", validation_alias=AliasChoices("ROUTER_TORCHSERVE_GRPC_ADDR", "TORCHSERVE_GRPC_ADDR"),
        description="TorchServe's gRPC inference API (also read from `TORCHSERVE_GRPC_ADDR`)")
    torchserve_management_addr: str = Field(
        "127.0.0.1:7071",
        validation_alias=AliasChoices("ROUTER_TORCHSERVE_MANAGEMENT_ADDR", "TORCHSERVE_MANAGEMENT_ADDR"),
        description="TorchServe's gRPC management API (also read from `TORCHSERVE_MANAGEMENT_ADDR`)")
    registry_addr: str = Field(
        "", description="gRPC address of the Registry service; empty: this mesh server's own address")
    registry_token_file: str = Field(
        "", description="file holding the bearer token (scopes registry.read, registry.write and "
                        "registry.promote: canaries promote and archive versions) this service shows the Registry; "
                        "empty: none (auth off)")
    registry_timeout_seconds: float = Field(2.0, gt=0, description="longest wait for one Registry call")
    monitor_feed_seconds: float = Field(
        10.0, ge=0, le=3600, description="how often per-variant Predict figures (requests, error rate, latency "
                                         "p50/p95) go to the Pipeline's model monitor; 0: never")
    pipeline_addr: str = Field(
        "", description="gRPC address of the Pipeline service (the model monitor); empty: this mesh server's own")
    pipeline_token_file: str = Field(
        "", description="file holding the bearer token (scope pipeline.write) the monitor feed shows the Pipeline; "
                        "empty: none (auth off)")
    resolve_cache_entries: int = Field(10_000, gt=0, description="selectors whose resolved version is kept in memory")
    max_predict_seconds: float = Field(60.0, gt=0, description="longest a prediction may take when its caller set "
                                                               "no deadline (a shorter deadline always applies)")
    max_input_bytes: int = Field(4 * 1024**2, gt=0, description="largest prediction input, in bytes")
    database_timeout_seconds: float = Field(5.0, gt=0, description="longest wait for one PostgreSQL command")
    catalog_poll_seconds: float = Field(5.0, gt=0, description="longest a replica goes without re-reading changed "
                                                               "experiments (change notifications are faster)")
    flush_interval_seconds: float = Field(0.05, gt=0, le=10, description="how often exposures and Predict "
                                                                          "samples are written to Redis")
    outcome_dedupe_days: int = Field(30, gt=0, le=365, description="how long an outcome's event id is remembered "
                                                                   "(a copy within it changes nothing)")
    canary_tick_seconds: float = Field(1.0, gt=0, le=60, description="how often the replica holding a canary's "
                                                                     "lease checks it (advance, promote, roll back)")
    allocation_tick_seconds: float = Field(1.0, gt=0, le=60, description="how often a replica looks for adaptive "
                                                                         "experiments whose interval is up")

"""Settings every service shares, declared (pydantic-settings), read from the environment.

Each class has its own prefix; each field is typed, carries its unit in its name and a
one-line description. The README's configuration table is generated from these classes
and from each service's own settings class (a test fails when they drift).
"""

from __future__ import annotations

from typing import Annotated, Literal

from mnbara.mlserving.catalog import BY_NAME
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ml_serving import defaults


class SettingsBase(BaseSettings):
    """Frozen, strict about unknown keyword arguments, read once at start."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)


class MeshSettings(SettingsBase):
    model_config = SettingsConfigDict(env_prefix="MESH_")

    grpc_addr: str = Field(defaults.MESH_GRPC, description="gRPC listen address of the mesh server")
    services: Annotated[tuple[str, ...], NoDecode] = Field(
        tuple(BY_NAME), description="comma-separated services this process hosts, or `all`")
    metrics_addr: str = Field(defaults.MESH_METRICS, description="Prometheus `/metrics` address; empty disables it")
    key_prefix: str = Field("mlserving", description="prefix of every Redis key (separates deployments and test runs)")
    access_log: bool = Field(True, description="one JSON log line per RPC (method, code, ms, request id)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", validation_alias="LOG_LEVEL", description="level of the JSON logs on stderr")
    shutdown_grace_seconds: float = Field(10.0, ge=0, description="how long SIGTERM waits for in-flight calls")
    shutdown_delay_seconds: float = Field(
        5.0, ge=0, description="on SIGTERM, how long to report NOT_SERVING while still serving, before refusing "
                               "new calls: long enough for Envoy's health check (every 1 s, 2 failures) to stop "
                               "sending, with room for a loaded machine; a second signal exits at once")
    health_probe_seconds: float = Field(
        2.0, gt=0, description="how often each service's dependencies are probed; a service whose dependency "
                               "fails reports NOT_SERVING on gRPC health")
    max_message_bytes: int = Field(16 * 1024 * 1024, gt=0, description="gRPC message size limit, both directions")
    tls_cert_file: str = Field("", description="PEM certificate chain: serve gRPC over TLS (empty: plaintext, "
                                               "for loopback or a mesh network that encrypts)")
    tls_key_file: str = Field("", description="PEM private key of `MESH_TLS_CERT_FILE`")
    tls_client_ca_file: str = Field("", description="PEM CA bundle: require and verify client certificates "
                                                    "(mutual TLS, e.g. only Envoy may connect)")
    max_metadata_bytes: int = Field(16 * 1024, ge=8 * 1024, description="limit of a call's metadata (headers); "
                                    "Envoy's is lower, so an oversized header is refused there first")

    @field_validator("services", mode="before")
    @classmethod
    def _parse_services(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if value.strip().lower() == "all":
            return tuple(BY_NAME)
        return tuple(dict.fromkeys(s.strip().lower() for s in value.split(",") if s.strip()))

    @field_validator("services")
    @classmethod
    def _some_services(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:  # unknown names are the composition root's to reject: it knows every package
            raise ValueError(f"name at least one service: {', '.join(BY_NAME)} or 'all'")
        return value

    @model_validator(mode="after")
    def _tls_is_whole(self) -> "MeshSettings":
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("set both MESH_TLS_CERT_FILE and MESH_TLS_KEY_FILE, or neither")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("MESH_TLS_CLIENT_CA_FILE needs MESH_TLS_CERT_FILE and MESH_TLS_KEY_FILE")
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class RedisSettings(SettingsBase):
    model_config = SettingsConfigDict(env_prefix="REDIS_")

    url: str = Field(defaults.REDIS_URL, description="Redis for bandit state")
    timeout_seconds: float = Field(
        2.0, gt=0, description="Redis connect and command timeout, and the longest wait for a pooled connection")
    max_connections: int = Field(64, gt=0, description="Redis connections per server process")
    cluster: bool = Field(False, description="`url` is a node of a Redis Cluster (every store's keys are "
                                             "hash-tagged per bandit, experiment or feature entity, so each "
                                             "script touches one slot)")


class DatabaseSettings(SettingsBase):
    model_config = SettingsConfigDict(env_prefix="DATABASE_")

    url: str = Field("", description="PostgreSQL DSN: the registry's stages, audit history and event feed "
                                     "(`make up` finds or starts one)")


class AuthSettings(SettingsBase):
    model_config = SettingsConfigDict(env_prefix="AUTH_")

    enabled: bool = Field(True, description="check bearer tokens and scopes on every mesh RPC; false logs a "
                                            "warning at start-up and lets every caller do everything")
    jwks_file: str = Field("", description="JSON Web Key Set file with the token issuer's public keys")
    jwks_url: str = Field("", description="the issuer's JWKS URL (instead of a file), fetched and cached")
    issuer: str = Field("", description="required `iss` of tokens (empty: not checked)")
    audience: str = Field("ml-serving-mesh", description="required `aud` of tokens")
    clock_skew_seconds: float = Field(30.0, ge=0, description="leeway when checking `exp` and `nbf`")
    token_cache_entries: int = Field(10_000, gt=0, description="verified tokens kept until they expire")


class TracingSettings(SettingsBase):
    model_config = SettingsConfigDict(env_prefix="OTEL_")

    exporter_otlp_endpoint: str = Field(
        "", description="OTLP/gRPC endpoint; empty: traces propagate but are not exported")
    service_name: str = Field("ml-serving-mesh", description="service name on exported spans")


RUNTIME_SETTINGS = (MeshSettings, AuthSettings, RedisSettings, DatabaseSettings, TracingSettings)
"""Every settings class of the runtime, in the order the README lists them."""

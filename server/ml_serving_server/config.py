"""Configuration, read once from the environment.

Every setting, its variable and its default is in the README's configuration table;
keep the two in step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ALL_SERVICES = ("registry", "inference", "router", "bandit", "pipeline")


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _services(raw: str) -> tuple[str, ...]:
    if raw.strip().lower() == "all":
        return ALL_SERVICES
    chosen = tuple(dict.fromkeys(s.strip().lower() for s in raw.split(",") if s.strip()))
    unknown = [s for s in chosen if s not in ALL_SERVICES]
    if unknown or not chosen:
        raise ValueError(f"MESH_SERVICES: unknown service(s) {unknown}; choose from {', '.join(ALL_SERVICES)} or 'all'")
    return chosen


@dataclass(frozen=True)
class Settings:
    grpc_addr: str = "127.0.0.1:50051"
    services: tuple[str, ...] = ALL_SERVICES
    metrics_addr: str = "127.0.0.1:9464"  # empty disables the Prometheus endpoint
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout_s: float = 2.0
    redis_max_connections: int = 64
    bandit_state_max_age_s: float = 0.1
    key_prefix: str = "mlserving"
    log_level: str = "INFO"
    access_log: bool = True
    shutdown_grace_s: float = 10.0
    health_probe_interval_s: float = 2.0
    shutdown_delay_s: float = 0.0
    otlp_endpoint: str = ""  # empty: traces are propagated but not exported
    service_name: str = "ml-serving-mesh"
    max_message_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            grpc_addr=_env("MESH_GRPC_ADDR", cls.grpc_addr),
            services=_services(_env("MESH_SERVICES", "all")),
            metrics_addr=os.environ.get("MESH_METRICS_ADDR", cls.metrics_addr).strip(),
            redis_url=_env("REDIS_URL", cls.redis_url),
            redis_timeout_s=float(_env("REDIS_TIMEOUT_SECONDS", str(cls.redis_timeout_s))),
            redis_max_connections=int(_env("REDIS_MAX_CONNECTIONS", str(cls.redis_max_connections))),
            bandit_state_max_age_s=float(_env("BANDIT_STATE_MAX_AGE_MS", "100")) / 1000.0,
            key_prefix=_env("MESH_KEY_PREFIX", cls.key_prefix),
            log_level=_env("LOG_LEVEL", cls.log_level).upper(),
            access_log=_env("MESH_ACCESS_LOG", "true").lower() in ("1", "true", "yes"),
            shutdown_grace_s=float(_env("MESH_SHUTDOWN_GRACE_SECONDS", str(cls.shutdown_grace_s))),
            health_probe_interval_s=float(_env("MESH_HEALTH_PROBE_SECONDS", str(cls.health_probe_interval_s))),
            shutdown_delay_s=float(_env("MESH_SHUTDOWN_DELAY_SECONDS", str(cls.shutdown_delay_s))),
            otlp_endpoint=_env("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            service_name=_env("OTEL_SERVICE_NAME", cls.service_name),
            max_message_bytes=int(_env("MESH_MAX_MESSAGE_BYTES", str(cls.max_message_bytes))),
        )

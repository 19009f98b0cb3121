"""The model registry: versions and their lifecycle over MLflow, artifacts in S3, history in PostgreSQL.

    domain/                 the rules (lifecycle, gates, limits, artifact checks), the resolve cache
                            and event feed, and how the state looks inside MLflow (layout.py)
    mlflow_catalog.py       the ModelCatalog port over an MLflow tracking server
    s3_artifacts.py         the ArtifactStore port over an S3-compatible bucket
    postgres_lifecycle.py   the LifecycleStore port over PostgreSQL (migrations/: alembic)
    servicer.py             gRPC <-> domain
    metrics.py              stage changes for Prometheus
    settings.py             REGISTRY_* settings

`build` connects them (PostgreSQL first: its migrations run at start-up); app.py lists `SERVICE`.
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime, timedelta, timezone

from mnbara.mlserving.catalog import BY_NAME

from ...runtime.health import DependencyProbe
from ...runtime.service import BuiltService, Runtime, ServicePackage
from .domain.errors import ErrorReason
from .domain.service import RegistryService
from .settings import RegistrySettings


async def build(settings: RegistrySettings, runtime: Runtime) -> BuiltService:
    # The adapters' libraries (mlflow, boto3, alembic) load here, when the registry is hosted.
    from .mlflow_catalog import MlflowCatalog
    from .postgres_lifecycle import PostgresLifecycle
    from .s3_artifacts import S3ArtifactStore
    from .servicer import RegistryServicer

    if not runtime.database.url:
        raise ValueError("the registry needs PostgreSQL: set DATABASE_URL (make up finds or starts one)")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # the mesh sends no usage data on MLflow's behalf
    lifecycle = await PostgresLifecycle.connect(runtime.database.url, timeout_seconds=settings.database_timeout_seconds)
    catalog = MlflowCatalog(settings.mlflow_tracking_uri, settings.mlflow_timeout_seconds)
    artifacts = S3ArtifactStore(settings.artifact_root, settings.s3_endpoint_url, settings.s3_access_key_id,
                                settings.s3_secret_access_key, settings.s3_region, settings.s3_timeout_seconds)
    service = RegistryService(catalog, artifacts, lifecycle, max_artifact_bytes=settings.max_artifact_bytes,
                              cache_max_models=settings.resolve_cache_entries, heartbeat_s=settings.heartbeat_seconds)
    try:
        await service.start()
    except BaseException:
        await _close(service, catalog, artifacts, lifecycle)
        raise
    housekeeping = asyncio.create_task(_housekeeping(service, settings), name="registry-housekeeping")

    # Only PostgreSQL, the registry's own state, gates its health: MLflow or S3 down affects every
    # replica alike, and taking them all out of rotation would also stop ResolveModelVersion, which
    # answers from the cache meanwhile; calls that need MLflow or S3 answer UNAVAILABLE with a reason
    # instead. Those two are watched (mlserving_dependency_up) without gating.
    probe = DependencyProbe({"postgresql": lifecycle.ping, "mlflow": catalog.ping, "s3": artifacts.ping},
                            gating={"postgresql"})

    async def close() -> None:
        housekeeping.cancel()
        await asyncio.gather(housekeeping, return_exceptions=True)
        await _close(service, catalog, artifacts, lifecycle)

    return BuiltService(RegistryServicer(service), probe=probe, closers=[close], stopping=[service.stop_watches])


async def _close(service, catalog, artifacts, lifecycle) -> None:
    await service.close()
    await asyncio.gather(catalog.close(), artifacts.close(), lifecycle.close(), return_exceptions=True)


async def _housekeeping(service: RegistryService, settings: RegistrySettings, interval_s: float = 3600.0) -> None:
    """Hourly: forget events past their retention, delete uploads never used."""
    while True:
        now = datetime.now(timezone.utc)
        try:
            await service.lifecycle.prune_events(now - timedelta(days=settings.event_retention_days))
            await service.artifacts.prune_uploads()
        except Exception:  # noqa: BLE001 - down now: next hour
            pass
        await asyncio.sleep(interval_s)


SERVICE = ServicePackage(BY_NAME["registry"], RegistrySettings, build, ErrorReason)

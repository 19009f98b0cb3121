"""The A/B Router: experiments over model versions, sticky assignment, predictions through the
assigned version, outcomes and always-valid results.

    domain/                 assignment (hashing, bucket layouts, ramps), targeting, statistics,
                            the use cases (service.py), the per-replica definition catalog, the
                            measurement tally, the ports
    postgres_store.py       the ExperimentStore port over PostgreSQL (migrations/: alembic)
    redis_measurements.py   the Measurements port over Redis (exposures, Predict samples, outcomes)
    registry_writer.py      the canaries' Registry changes (promote, archive) over its gRPC API
    monitor_sink.py         per-variant Predict figures to the Pipeline's model monitor (its gRPC API)
    convert.py              messages <-> domain values (also used by the client library)
    servicer.py             gRPC <-> domain
    settings.py             ROUTER_* settings
    metrics.py              predictions, exposures, outcomes and canaries for Prometheus

Predictions run through the Inference service's own use case (an InferenceService of this
process, over TorchServe's gRPC API, resolving versions through the Registry); canaries
promote and archive versions through the Registry (registry_writer.py). `build` connects
them; app.py lists `SERVICE`.
"""

from __future__ import annotations

from pathlib import Path

from mnbara.mlserving.catalog import BY_NAME

from ...runtime.service import BuiltService, Runtime, ServicePackage
from .domain.errors import ErrorReason
from .settings import RouterSettings


async def build(settings: RouterSettings, runtime: Runtime) -> BuiltService:
    from ...runtime.health import DependencyProbe
    from ...runtime.periodic import PeriodicTask
    from ...runtime.redis_client import connect
    from ..inference.domain.service import InferenceService
    from ..inference.registry_resolver import RegistryResolver
    from ..inference.torchserve_backend import TorchServeBackend
    from .domain.monitor_feed import MonitorFeed
    from .domain.service import RouterService, now
    from .metrics import RouterMetrics, export_canary_steps, unexport_canary_steps
    from .monitor_sink import GrpcMonitorSink
    from .postgres_store import PostgresExperimentStore
    from .redis_measurements import RedisMeasurements
    from .registry_writer import GrpcRegistryWriter
    from .servicer import RouterServicer

    if not runtime.database.url:
        raise ValueError("the router needs PostgreSQL: set DATABASE_URL (make up finds or starts one)")
    token = _token(settings.registry_token_file)
    registry_addr = (lambda: settings.registry_addr) if settings.registry_addr else runtime.listening.addr
    resolver = RegistryResolver(registry_addr, token, settings.registry_timeout_seconds,
                                settings.resolve_cache_entries, None)
    backend = TorchServeBackend(settings.torchserve_grpc_addr, settings.torchserve_management_addr)
    serving = InferenceService(backend, resolver, max_input_bytes=settings.max_input_bytes,
                               max_predict_s=settings.max_predict_seconds)
    store = await PostgresExperimentStore.connect(runtime.database.url,
                                                  timeout_seconds=settings.database_timeout_seconds)
    measurements = RedisMeasurements(connect(runtime.redis), runtime.mesh.key_prefix)  # one Redis or a cluster
    registry = GrpcRegistryWriter(registry_addr, token, settings.registry_timeout_seconds)
    sink = GrpcMonitorSink((lambda: settings.pipeline_addr) if settings.pipeline_addr else runtime.listening.addr,
                           _token(settings.pipeline_token_file), settings.registry_timeout_seconds)
    feed = MonitorFeed(sink, now) if settings.monitor_feed_seconds > 0 else None
    feeding = PeriodicTask("router monitor feed", feed.flush, settings.monitor_feed_seconds) if feed else None
    service = RouterService(store, measurements, serving, registry=registry,
                            catalog_poll_s=settings.catalog_poll_seconds,
                            tally_interval_s=settings.flush_interval_seconds,
                            canary_tick_s=settings.canary_tick_seconds,
                            allocation_tick_s=settings.allocation_tick_seconds,
                            outcome_dedupe_s=settings.outcome_dedupe_days * 86_400, feed=feed,
                            observer=RouterMetrics())
    export_canary_steps(service.catalog)
    closing = (service, resolver, backend, store, measurements, registry, sink)
    try:
        await service.start()
        resolver.start()
        if feeding is not None:
            feeding.start()
    except BaseException:
        await _close(*closing)
        raise

    # Its own state only gates: TorchServe or the Registry down affects Predict alone, which answers
    # UNAVAILABLE with a reason meanwhile, while assignment keeps answering from memory. TorchServe
    # is watched (mlserving_dependency_up) without gating.
    probe = DependencyProbe({"postgresql": store.ping, "redis": measurements.ping, "torchserve": backend.ping},
                            gating={"postgresql", "redis"})

    async def close() -> None:
        unexport_canary_steps(service.catalog)
        await _close(*closing)

    async def stop_background() -> None:
        """The canary driver and the Registry event stream call this very server: they end first."""
        await service.canaries.stop_driving()
        await resolver.stop_watching()
        if feeding is not None:  # its last interval goes out before this server stops answering
            await feeding.close()
            await feed.flush()

    return BuiltService(RouterServicer(service), probe=probe, closers=[close], stopping=[stop_background])


def _token(path: str) -> str:
    return Path(path).read_text().strip() if path else ""


async def _close(service, resolver, backend, store, measurements, registry, sink) -> None:
    import asyncio

    await service.close()
    await resolver.stop_watching()
    await asyncio.gather(resolver.close(), backend.close(), store.close(), measurements.close(), registry.close(),
                         sink.close(), return_exceptions=True)


SERVICE = ServicePackage(BY_NAME["router"], RouterSettings, build, ErrorReason)

"""Composition root: settings -> each service's build() -> one server.

The only module that knows every service package. One process hosts any subset of the
mesh's services (MESH_SERVICES); a service in the contracts with no package here yet is
served by its generated base servicer, so every RPC of it answers UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Iterable

from mnbara.mlserving.catalog import BY_NAME

from .runtime.auth import verifier_from
from .runtime.observability import setup_logging, setup_tracing
from .runtime.server import MeshServer, ServiceBinding, serve_until_signalled, start_metrics_endpoint, start_server
from .runtime.service import Runtime, ServicePackage
from .runtime.settings import AuthSettings, DatabaseSettings, MeshSettings, RedisSettings, TracingSettings
from .services.bandit import SERVICE as BANDIT
from .services.inference import SERVICE as INFERENCE
from .services.pipeline import SERVICE as PIPELINE
from .services.registry import SERVICE as REGISTRY
from .services.router import SERVICE as ROUTER

log = logging.getLogger("ml_serving_server")

SERVICE_PACKAGES: tuple[ServicePackage, ...] = (
    BANDIT,
    INFERENCE,
    PIPELINE,
    REGISTRY,
    ROUTER,
)
"""Every built service, one line each."""


def runtime_from_env() -> Runtime:
    return Runtime(MeshSettings(), RedisSettings(), DatabaseSettings(), AuthSettings())


async def build_server(runtime: Runtime, packages: Iterable[ServicePackage] = SERVICE_PACKAGES,
                       tracing: TracingSettings | None = None,
                       service_settings: dict[str, object] | None = None) -> MeshServer:
    """Build the services named in runtime.mesh.services and serve them on one server.

    `service_settings` gives a service's settings by name (default: read from the environment)."""
    built = {package.entry.name: package for package in packages}
    unknown = [name for name in runtime.mesh.services if name not in built and name not in BY_NAME]
    if unknown:
        raise ValueError(f"MESH_SERVICES: unknown service(s) {unknown}; choose from "
                         f"{', '.join(sorted({*BY_NAME, *built}))} or 'all'")
    verifier = verifier_from(runtime.auth)
    tracing = tracing or TracingSettings()
    tracer_provider = setup_tracing(tracing.service_name, tracing.exporter_otlp_endpoint)
    closers: list = []
    stopping: list = []
    bindings = []
    for name in runtime.mesh.services:
        package = built.get(name)
        if package is None:
            bindings.append(ServiceBinding.unimplemented(BY_NAME[name]))
            continue
        settings = (service_settings or {}).get(name) or package.settings()
        try:
            service = package.build(settings, runtime)
            if inspect.isawaitable(service):
                service = await service
        except BaseException:
            await _close_all(closers)  # what the services before it opened
            raise
        closers += service.closers
        stopping += service.stopping
        bindings.append(ServiceBinding(package.entry, service.servicer, built=True, probe=service.probe,
                                       probe_gates_server=service.probe_gates_server))
        bindings += [ServiceBinding(entry, servicer, built=True) for entry, servicer in service.companions]
    mesh = await start_server(runtime.mesh, bindings, tracer_provider, verifier=verifier)
    runtime.listening.port = mesh.port
    mesh.on_close.extend(closers)
    mesh.on_stopping.extend(stopping)
    if hasattr(tracer_provider, "shutdown"):
        mesh.on_close.append(tracer_provider.shutdown)
    return mesh


async def _close_all(closers: list) -> None:
    for close in closers:
        result = close()
        if asyncio.iscoroutine(result):
            await result


async def run(runtime: Runtime) -> None:
    mesh = await build_server(runtime)
    settings = runtime.mesh
    start_metrics_endpoint(settings.metrics_addr)
    log.info("serving", extra={"fields": {
        "grpc": f"{settings.grpc_addr.rpartition(':')[0]}:{mesh.port}", "metrics": settings.metrics_addr,
        "services": [b.full_name for b in mesh.bindings],
        "unimplemented": [b.full_name for b in mesh.bindings if not b.built],
    }})
    await serve_until_signalled(mesh, settings.shutdown_grace_seconds, settings.shutdown_delay_seconds)


def main() -> None:
    runtime = runtime_from_env()
    setup_logging(runtime.mesh.log_level)
    asyncio.run(run(runtime))

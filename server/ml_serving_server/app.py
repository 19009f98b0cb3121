"""Composition root: settings -> adapters -> domain services -> servicers -> server.

The only module that knows every concrete class. One process hosts any subset of
the five services (MESH_SERVICES); services not built yet are served by their
generated base servicer, so every RPC of theirs answers UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import importlib
import logging

from .config import Settings
from .observability import setup_logging, setup_tracing
from .server import MeshServer, ServiceBinding, serve_until_signalled, start_metrics_endpoint, start_server

log = logging.getLogger("ml_serving_server")

_SERVICE_NAMES = {
    "registry": "RegistryService",
    "inference": "InferenceService",
    "router": "RouterService",
    "bandit": "BanditService",
    "pipeline": "PipelineService",
}


def _grpc_module(service: str):
    return importlib.import_module(f"mnbara.mlserving.{service}.v1.{service}_pb2_grpc")


def _binding(service: str, servicer: object | None, probe=None) -> ServiceBinding:
    module = _grpc_module(service)
    name = _SERVICE_NAMES[service]
    if servicer is None:
        servicer = getattr(module, f"{name}Servicer")()  # generated base: UNIMPLEMENTED everywhere
    return ServiceBinding(
        full_name=f"mnbara.mlserving.{service}.v1.{name}",
        servicer=servicer,
        add_to_server=getattr(module, f"add_{name}Servicer_to_server"),
        built=servicer.__class__.__module__ != module.__name__,
        probe=probe,
    )


def _build_bandit(settings: Settings, closers: list):
    from .adapters.redis_bandit_store import RedisBanditStore
    from .bandit.service import BanditService
    from .transport.bandit_servicer import BanditServicer

    store = RedisBanditStore.from_url(settings.redis_url, settings.key_prefix, settings.redis_timeout_s,
                                     settings.redis_max_connections)
    service = BanditService(store, max_state_age_s=settings.bandit_state_max_age_s)
    closers += [service.close, store.close]  # pending pull counts first, then the connection
    return BanditServicer(service), store.ping


_BUILDERS = {"bandit": _build_bandit}


async def build_server(settings: Settings) -> MeshServer:
    tracer_provider = setup_tracing(settings.service_name, settings.otlp_endpoint)
    closers: list = []
    bindings = []
    for service in settings.services:
        builder = _BUILDERS.get(service)
        servicer, probe = builder(settings, closers) if builder else (None, None)
        bindings.append(_binding(service, servicer, probe))
    mesh = await start_server(settings, bindings, tracer_provider)
    mesh.on_close.extend(closers)
    if hasattr(tracer_provider, "shutdown"):
        mesh.on_close.append(tracer_provider.shutdown)
    return mesh


async def run(settings: Settings) -> None:
    mesh = await build_server(settings)
    start_metrics_endpoint(settings.metrics_addr)
    log.info("serving", extra={"fields": {
        "grpc": f"{settings.grpc_addr.rpartition(':')[0]}:{mesh.port}", "metrics": settings.metrics_addr,
        "services": [b.full_name for b in mesh.bindings],
        "unimplemented": [b.full_name for b in mesh.bindings if not b.built],
    }})
    await serve_until_signalled(mesh, settings.shutdown_grace_s, settings.shutdown_delay_s)


def main() -> None:
    settings = Settings.from_env()
    setup_logging(settings.log_level)
    asyncio.run(run(settings))

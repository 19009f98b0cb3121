"""The gRPC server runtime: one grpc.aio server hosting the chosen services.

Adds to every server: health checking, reflection, the interceptors, a Prometheus
endpoint, and graceful shutdown (SIGTERM/SIGINT: report NOT_SERVING, refuse new
calls, let in-flight calls finish within the grace period).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from mnbara.mlserving.catalog import ServiceEntry
from prometheus_client import start_http_server

from .auth import AuthInterceptor, TokenVerifier, required_scopes
from .health import LIVENESS, probe_dependencies
from .interceptors import server_interceptors
from .settings import MeshSettings

log = logging.getLogger("ml_serving_server")


@dataclass
class ServiceBinding:
    """A servicer and the contract it serves."""

    entry: ServiceEntry
    servicer: object
    built: bool  # False while the service answers UNIMPLEMENTED
    probe: Callable[[], Awaitable[bool]] | None = None  # can its dependencies serve? (health)
    probe_gates_server: bool = True  # its probe counts towards the whole server's health ("")

    @classmethod
    def unimplemented(cls, entry: ServiceEntry) -> "ServiceBinding":
        """The generated base servicer: every RPC answers UNIMPLEMENTED."""
        return cls(entry, getattr(entry.stubs, f"{_short_name(entry)}Servicer")(), built=False)

    @property
    def full_name(self) -> str:
        return self.entry.full_name

    def add_to(self, server: grpc.aio.Server) -> None:
        getattr(self.entry.stubs, f"add_{_short_name(self.entry)}Servicer_to_server")(self.servicer, server)


def _short_name(entry: ServiceEntry) -> str:
    return entry.full_name.rsplit(".", 1)[1]  # BanditService


@dataclass
class MeshServer:
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    bindings: list[ServiceBinding]
    port: int
    on_close: list[Callable] = field(default_factory=list)
    on_stopping: list[Callable] = field(default_factory=list)  # before draining: end endless streams
    probing: asyncio.Task | None = None

    async def stop(self, grace: float) -> None:
        if self.probing is not None:
            self.probing.cancel()
        await self.health.enter_graceful_shutdown()
        await _run_all(self.on_stopping, "stopping")
        await self.server.stop(grace)
        await _run_all(self.on_close, "closing")


async def _run_all(hooks: list[Callable], what: str) -> None:
    for hook in hooks:
        try:
            result = hook()
            if asyncio.iscoroutine(result):
                await result
        except Exception:  # noqa: BLE001 - still run the rest
            log.exception("error while %s %s", what, getattr(hook, "__qualname__", hook))


async def start_server(settings: MeshSettings, bindings: list[ServiceBinding], tracer_provider, *,
                       verifier: TokenVerifier | None) -> MeshServer:
    """Serve the bindings. `verifier` checks every mesh RPC's token and scope; None (only when
    auth is explicitly off) lets every caller through."""
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # One limit for all metadata, soft and hard alike: a caller gets a clear error, not a coin toss.
        ("grpc.max_metadata_size", settings.max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", settings.max_metadata_bytes),
        ("grpc.so_reuseport", 0),
    ]
    domains = {b.full_name: b.entry.error_domain for b in bindings}
    auth = AuthInterceptor(verifier, required_scopes(b.entry for b in bindings), domains) if verifier else None
    server = grpc.aio.server(interceptors=server_interceptors(tracer_provider, settings.access_log, domains, auth),
                             options=options)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for binding in bindings:
        binding.add_to(server)
    names = [b.full_name for b in bindings] + [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
    reflection.enable_server_reflection([*names, reflection.SERVICE_NAME], server)

    port = _add_port(server, settings)
    if port == 0:
        raise RuntimeError(f"cannot bind gRPC address {settings.grpc_addr}")
    await server.start()
    for binding in bindings:
        serving = health_pb2.HealthCheckResponse.SERVING if binding.built else health_pb2.HealthCheckResponse.NOT_SERVING
        await health_servicer.set(binding.full_name, serving)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    # For liveness probes: answered by the event loop that serves RPCs, and unaffected by
    # dependencies, so an outage of Redis or PostgreSQL never gets a replica restarted.
    await health_servicer.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
    mesh = MeshServer(server, health_servicer, bindings, port)
    probes = {b.full_name: b.probe for b in bindings if b.probe is not None}
    if probes:
        gating = {b.full_name for b in bindings if b.probe is not None and b.probe_gates_server}
        mesh.probing = asyncio.get_running_loop().create_task(
            probe_dependencies(health_servicer, probes, settings.health_probe_seconds, gating))
    return mesh


def _add_port(server: grpc.aio.Server, settings: MeshSettings) -> int:
    """Listen in plaintext, over TLS, or over mutual TLS, as the settings say."""
    if not settings.tls_cert_file:
        return server.add_insecure_port(settings.grpc_addr)
    key, chain = Path(settings.tls_key_file).read_bytes(), Path(settings.tls_cert_file).read_bytes()
    client_ca = Path(settings.tls_client_ca_file).read_bytes() if settings.tls_client_ca_file else None
    credentials = grpc.ssl_server_credentials([(key, chain)], root_certificates=client_ca,
                                              require_client_auth=client_ca is not None)
    return server.add_secure_port(settings.grpc_addr, credentials)


def start_metrics_endpoint(addr: str) -> None:
    if not addr:
        return
    host, _, port = addr.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1")


async def serve_until_signalled(mesh: MeshServer, grace: float, delay: float = 0.0) -> None:
    """On SIGTERM/SIGINT: report NOT_SERVING, wait `delay` (so load balancers notice),
    then drain for up to `grace`. A second signal exits at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second signal: exiting without draining")
            os._exit(1)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await stop.wait()
    log.info("shutting down", extra={"fields": {"grace_s": grace, "delay_s": delay}})
    if delay > 0:
        await mesh.health.enter_graceful_shutdown()
        await asyncio.sleep(delay)
    await mesh.stop(grace)
    log.info("stopped")

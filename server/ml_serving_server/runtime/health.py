"""gRPC health that follows dependencies: a service whose dependency (Redis, ...) cannot
serve reports NOT_SERVING, and so does the server as a whole (service ""), so a load
balancer, Envoy's upstream health check or a Kubernetes readiness probe can route around
this replica meanwhile; unless the service says its dependency is its own (Inference's
TorchServe), so that the other services keep serving. Services not built yet are
NOT_SERVING from the start and do not count towards the whole: they answer UNIMPLEMENTED
whatever their dependencies do."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from grpc_health.v1 import health, health_pb2

log = logging.getLogger("ml_serving_server")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def probe_dependencies(health_servicer: health.aio.HealthServicer,
                             probes: dict[str, Callable[[], Awaitable[bool]]], interval_s: float,
                             gating: set[str] | None = None) -> None:
    """Forever: ask each service's probe, and publish a change of its answer and of the whole.

    The whole follows the probes named in `gating` (default: all)."""
    gating = set(probes) if gating is None else gating
    serving = dict.fromkeys(probes, True)
    while True:
        changed = False
        for name, probe in probes.items():
            try:
                ok = await asyncio.wait_for(probe(), interval_s)
            except Exception:  # noqa: BLE001 - any failure to answer is "not serving"
                ok = False
            if ok != serving[name]:
                log.warning("health of %s: %s", name, "SERVING" if ok else "NOT_SERVING")
                serving[name], changed = ok, True
                await health_servicer.set(name, SERVING if ok else NOT_SERVING)
        if changed:
            whole = all(ok for name, ok in serving.items() if name in gating)
            await health_servicer.set("", SERVING if whole else NOT_SERVING)
        await asyncio.sleep(interval_s)

"""gRPC health that follows dependencies: a service whose dependency (Redis, ...) cannot
serve reports NOT_SERVING, so a load balancer or a Kubernetes readiness probe can route
around this replica meanwhile."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from grpc_health.v1 import health, health_pb2

log = logging.getLogger("ml_serving_server")


async def probe_dependencies(health_servicer: health.aio.HealthServicer,
                             probes: dict[str, Callable[[], Awaitable[bool]]], interval_s: float) -> None:
    """Forever: ask each service's probe, and publish a change of its answer."""
    serving = dict.fromkeys(probes, True)
    while True:
        for name, probe in probes.items():
            try:
                ok = await asyncio.wait_for(probe(), interval_s)
            except Exception:  # noqa: BLE001 - any failure to answer is "not serving"
                ok = False
            if ok != serving[name]:
                log.warning("health of %s: %s", name, "SERVING" if ok else "NOT_SERVING")
                serving[name] = ok
                await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING if ok
                                          else health_pb2.HealthCheckResponse.NOT_SERVING)
        await asyncio.sleep(interval_s)

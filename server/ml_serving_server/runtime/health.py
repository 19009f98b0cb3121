"""gRPC health that follows dependencies: a service whose dependency (Redis, ...) cannot
serve reports NOT_SERVING, and so does the server as a whole (service ""), so a load
balancer, Envoy's upstream health check or a Kubernetes readiness probe can route around
this replica meanwhile; unless the service says its dependency is its own (Inference's
TorchServe), so that the other services keep serving. Services not built yet are
NOT_SERVING from the start and do not count towards the whole: they answer UNIMPLEMENTED
whatever their dependencies do.

A service whose probe is a `DependencyProbe` (its dependencies by name: redis, postgresql,
mlflow, torchserve, s3) also exports `mlserving_dependency_up{service, dependency}`: 1 when the
last probe of that dependency answered, else 0, updated every round. Some dependencies are only
watched (`gating=` leaves them out): they have their gauge but do not change the service's health.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Collection, Mapping

from grpc_health.v1 import health, health_pb2
from mnbara.mlserving.catalog import SERVICES
from prometheus_client import Gauge

log = logging.getLogger("ml_serving_server")

LIVENESS = "liveness"
"""A health name that is SERVING while the server runs, whatever its dependencies do (for
liveness probes; readiness asks a service's own name, or "" for the whole)."""
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

DEPENDENCY_UP = Gauge("mlserving_dependency_up",
                      "1 when the last health probe of the service's dependency answered, else 0",
                      ["service", "dependency"])
_SHORT_NAMES = {entry.full_name: entry.name for entry in SERVICES}

Probe = Callable[[], Awaitable[bool]]


class DependencyProbe:
    """A service's probe made of one probe per named dependency. It answers whether every gating
    dependency (default: all) answered, awaiting only those, concurrently: a watched one (not
    gating) runs in the background, so a slow one never delays or changes the service's health.
    `last` keeps each one's latest answer: False for one that raised, or was still running when
    the round ended (gating) or when the next round began (watched)."""

    def __init__(self, probes: Mapping[str, Probe], gating: Collection[str] | None = None):
        self.probes = dict(probes)
        self.gating = set(self.probes) if gating is None else set(gating)
        self.last: dict[str, bool] = {}
        self._watching: dict[str, asyncio.Task] = {}

    async def __call__(self) -> bool:
        for name in self.probes.keys() - self.gating:
            self._watch(name)
        await asyncio.gather(*(self._one(name) for name in self.gating))
        return all(self.last[name] for name in self.gating)

    def _watch(self, name: str) -> None:
        running = self._watching.get(name)
        if running is not None and not running.done():
            self.last[name] = False  # no answer within a whole round
            return
        self._watching[name] = asyncio.get_running_loop().create_task(self._one(name), name=f"probe {name}")

    async def close(self) -> None:
        """Cancel the watched probes still running (before the dependencies' clients close), and
        wait for them a moment at most."""
        running = [task for task in self._watching.values() if not task.done()]
        self._watching.clear()
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=1.0)

    async def _one(self, name: str) -> None:
        ok = False
        try:
            ok = bool(await self.probes[name]())
        except Exception:  # noqa: BLE001 - any failure to answer is "down"
            ok = False
        finally:  # also when the round is cancelled (timed out): not answered is down
            self.last[name] = ok


def _export_dependencies(service: str, probe: Probe) -> None:
    """The gauge of each named dependency, from the round that just ended."""
    if not isinstance(probe, DependencyProbe):
        return
    short = _SHORT_NAMES.get(service, service)
    for name, ok in list(probe.last.items()):  # a watched one shows once it first answered
        DEPENDENCY_UP.labels(short, name).set(1 if ok else 0)


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
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the task's own
                # cancellation (when the probe ends at that moment), and this loop is cancelled to stop.
                async with asyncio.timeout(interval_s):
                    ok = await probe()
            except Exception:  # noqa: BLE001 - any failure to answer is "not serving"
                ok = False
            _export_dependencies(name, probe)
            if ok != serving[name]:
                log.warning("health of %s: %s", name, "SERVING" if ok else "NOT_SERVING")
                serving[name], changed = ok, True
                await health_servicer.set(name, SERVING if ok else NOT_SERVING)
        if changed:
            whole = all(ok for name, ok in serving.items() if name in gating)
            await health_servicer.set("", SERVING if whole else NOT_SERVING)
        await asyncio.sleep(interval_s)

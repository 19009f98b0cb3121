"""Bandits: Thompson sampling, contextual selection, rewards and statistics.

    domain/         the rules and the maths, plain Python (no gRPC, no Redis)
    redis_store.py  the BanditStore port over Redis (memory_store.py: in memory)
    servicer.py     gRPC <-> domain
    settings.py     BANDIT_* settings

`build` wires them; app.py lists `SERVICE`.
"""

from __future__ import annotations

from mnbara.mlserving.catalog import BY_NAME

from ...runtime.service import BuiltService, Runtime, ServicePackage
from .domain.errors import ErrorReason
from .domain.service import BanditService
from .redis_store import RedisBanditStore
from .servicer import BanditServicer
from .settings import BanditSettings


def build(settings: BanditSettings, runtime: Runtime) -> BuiltService:
    redis = runtime.redis
    store = RedisBanditStore.from_url(redis.url, runtime.mesh.key_prefix, redis.timeout_seconds,
                                      redis.max_connections)
    service = BanditService(store, max_state_age_s=settings.state_max_age_ms / 1000,
                            pull_flush_interval_s=settings.pull_flush_interval_ms / 1000)
    # Pending pull counts are written before the connection closes.
    return BuiltService(BanditServicer(service), probe=store.ping, closers=[service.close, store.close])


SERVICE = ServicePackage(BY_NAME["bandit"], BanditSettings, build, ErrorReason)

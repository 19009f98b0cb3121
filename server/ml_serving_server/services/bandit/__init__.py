"""Bandits: Thompson sampling, contextual selection, rewards, statistics and a decision log.

    domain/                   the rules and the maths, plain Python (no gRPC, no Redis)
    redis_store.py            the BanditStore port over Redis (memory_store.py: in memory)
    postgres_decision_log.py  the decision log over PostgreSQL (migrations/: alembic)
    log_metrics.py            the decision log's counters for Prometheus
    metrics.py                selections and rewards for Prometheus
    servicer.py               gRPC <-> domain
    settings.py               BANDIT_* settings

`build` wires them; app.py lists `SERVICE`.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from mnbara.mlserving.catalog import BY_NAME

from ...errors import Unavailable
from ...runtime.health import DependencyProbe
from ...runtime.periodic import PeriodicTask
from ...runtime.redis_client import connect
from ...runtime.service import BuiltService, Runtime, ServicePackage
from .domain.decision_log import DecisionLog
from .domain.errors import ErrorReason
from .domain.service import BanditService
from .log_metrics import export_log_counters
from .metrics import MeteredStore
from .postgres_decision_log import PostgresDecisionLog
from .redis_store import RedisBanditStore
from .servicer import BanditServicer
from .settings import BanditSettings

log = logging.getLogger(__name__)

_RETENTION_ROUND_SECONDS = 3600.0


def build(settings: BanditSettings, runtime: Runtime) -> BuiltService:
    redis = runtime.redis
    store = RedisBanditStore(connect(redis), runtime.mesh.key_prefix)
    decision_log, closers = _decision_log(settings, runtime)
    service = BanditService(MeteredStore(store), max_state_age_s=settings.state_max_age_ms / 1000,
                            pull_flush_interval_s=settings.pull_flush_interval_ms / 1000,
                            decision_log=decision_log, evaluation_max_decisions=settings.evaluation_max_decisions,
                            evaluation_concurrency=settings.evaluation_concurrent_requests)
    # Pending pull counts and log entries are written before the connections close.
    return BuiltService(BanditServicer(service), probe=DependencyProbe({"redis": store.ping}),
                        closers=[service.close, *closers, store.close])


def _decision_log(settings: BanditSettings, runtime: Runtime) -> tuple[DecisionLog | None, list]:
    """The log and what closes it, or (None, []) when it is off. PostgreSQL is not needed to start:
    the log connects (and migrates) on its first write, and catches up once PostgreSQL is back."""
    if not (settings.decision_log and runtime.database.url):
        return None, []
    store = PostgresDecisionLog(runtime.database.url, settings.decision_log_timeout_seconds,
                                settings.evaluation_timeout_seconds)
    decision_log = DecisionLog(store, flush_interval_s=settings.decision_log_flush_ms / 1000,
                               max_pending=settings.decision_log_max_pending_entries)
    export_log_counters(decision_log)
    retention = timedelta(days=settings.decision_log_retention_days)

    async def forget_old() -> None:
        try:
            await store.delete_before(datetime.now(timezone.utc) - retention)
        except Unavailable as exc:  # PostgreSQL down: the next round deletes what this one could not
            log.warning("decision log retention skipped this round: %s", exc)

    expiry = PeriodicTask("bandit decision log retention", forget_old, _RETENTION_ROUND_SECONDS)
    expiry.start()
    return decision_log, [expiry.close, store.close]


SERVICE = ServicePackage(BY_NAME["bandit"], BanditSettings, build, ErrorReason)

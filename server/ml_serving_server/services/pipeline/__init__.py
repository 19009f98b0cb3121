"""The ML pipeline: the feature store (declared views, materialisation, online reads, training
sets), retraining runs and schedules (queued here, trained by workers: worker_main.py), and the
model monitor (metric values, alert rules evaluated here, webhooks).

    domain/                feature views (rules, definition hash), the schema, typed values,
                           materialisation (on demand and on each view's schedule), online
                           reads, the ports: plain Python
    declarations.py        the views declared in `*.yaml` files (features/ by default), read with pyyaml
    postgres_store.py      the views' source queries and the materialisation state (jobs, watermarks,
                           view locks) over PostgreSQL (migrations/: alembic)
    postgres_training_set.py  point-in-time training sets: one LATERAL join, streamed by a cursor
    redis_online_store.py  the online store over Redis or a Redis Cluster (one record per view and entity)
    servicer.py            gRPC <-> domain; RPCs not built yet answer UNIMPLEMENTED
    metrics.py             feature reads, materialisation lag, retraining runs, alert transitions for
                           Prometheus (alert_metrics.py: the firing alerts)
    settings.py            PIPELINE_* settings

`build` reads the declarations (a bad one stops the server, naming file, line and field), then
migrates and connects; app.py lists `SERVICE`.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from mnbara.mlserving.catalog import BY_NAME

from ...runtime.service import BuiltService, Runtime, ServicePackage
from .declarations import load_directory
from .domain.errors import ErrorReason
from .settings import PipelineSettings


async def build(settings: PipelineSettings, runtime: Runtime) -> BuiltService:
    from ...runtime.health import DependencyProbe
    from ...runtime.periodic import PeriodicTask
    from ...runtime.redis_client import connect
    from .alert_metrics import evaluate_and_export
    from .domain.materialization import Materializer
    from .domain.monitor import Monitor
    from .domain.online import FeatureReader
    from .domain.runs import RetrainingRuns
    from .domain.schedules import RetrainingSchedules
    from .domain.scheduling import MaterializationScheduler
    from .domain.service import FeatureStore
    from .domain.training import TrainingSets
    from .metrics import MeteredNotifier, PipelineGauges, export_gauges, unexport_gauges
    from .postgres_distributions import PostgresTrainingDistributions
    from .postgres_monitoring import PostgresAlertStore, PostgresMetricStore
    from .postgres_runs import PostgresRunStore, PostgresScheduleStore
    from .postgres_store import PostgresFeatureSource, PostgresMaterializationState
    from .postgres_training_set import PostgresTrainingSetSource
    from .redis_online_store import RedisOnlineStore
    from .servicer import PipelineServicer
    from .trainers import load_trainers
    from .webhooks import WebhookNotifier

    schema = load_directory(settings.feature_views_path())
    trainers = load_trainers(settings.trainers)
    if not runtime.database.url:
        raise ValueError("the pipeline needs PostgreSQL: set DATABASE_URL (make up finds or starts one)")
    state = await PostgresMaterializationState.connect(runtime.database.url,
                                                       timeout_seconds=settings.database_timeout_seconds)
    try:
        source = await PostgresFeatureSource.connect(
            settings.source_database_url or runtime.database.url, timeout_seconds=settings.database_timeout_seconds,
            scan_timeout_seconds=settings.materialization_query_timeout_seconds)
    except BaseException:
        await state.close()
        raise
    online = RedisOnlineStore(connect(runtime.redis), runtime.mesh.key_prefix)  # one Redis or a cluster
    layout = _layout_adoption(online)
    layout.start()
    reader = FeatureReader(schema, source, online, source_timeout_s=settings.read_through_timeout_seconds)
    materializer = Materializer(schema, source, online, state, batch_size=settings.materialization_batch_entries)
    training = TrainingSets(schema, PostgresTrainingSetSource(
        source.pool, statement_timeout_s=settings.training_set_statement_timeout_seconds,
        timeout_s=settings.training_set_timeout_seconds), batch_rows=settings.training_set_batch_entries)
    store = FeatureStore(schema, reader, materializer, state, training)
    run_store = PostgresRunStore(state.pool, settings.database_timeout_seconds)  # the state's pool, migrated
    runs = RetrainingRuns(run_store, trainers, max_attempts=settings.retraining_max_attempts,
                          worker_lost_after=timedelta(seconds=settings.retraining_worker_lost_seconds))
    schedules = RetrainingSchedules(PostgresScheduleStore(state.pool), runs)
    # Every background round against PostgreSQL is bounded as a whole (each command is bounded by
    # the pool's command_timeout, but not the wait for a connection): a stuck round is cancelled
    # and the loop goes on, and close never waits on one (runtime/periodic.py).
    db_round_s = 4 * settings.database_timeout_seconds + 1.0
    # Runs of workers that died are taken back even when no worker is left to notice.
    sweeper = PeriodicTask("retraining sweeper", runs.sweep, settings.retraining_heartbeat_seconds,
                           round_timeout_s=db_round_s)
    sweeper.start()
    retraining_scheduler = PeriodicTask("retraining scheduler", schedules.tick,
                                        settings.retraining_scheduler_tick_seconds,
                                        round_timeout_s=max(60.0, 10 * db_round_s))
    if settings.retraining_scheduler_enabled:
        retraining_scheduler.start()
    notifier = MeteredNotifier(WebhookNotifier())
    # Drift against training: the views' source rows against the samples the workers kept.
    monitor = Monitor(PostgresMetricStore(state.pool), PostgresAlertStore(state.pool), runs, notifier,
                      schema=schema, source=source, distributions=PostgresTrainingDistributions(state.pool))
    evaluator = PeriodicTask("alert evaluator", lambda: evaluate_and_export(monitor),
                             settings.monitor_evaluation_seconds,  # drift rules scan the sources
                             round_timeout_s=max(60.0, 10 * db_round_s,
                                                 2 * settings.materialization_query_timeout_seconds))
    if settings.monitor_enabled:
        evaluator.start()
    retention = PeriodicTask("monitor retention",
                             lambda: monitor.forget_before(timedelta(days=settings.monitor_retention_days)), 3600.0,
                             round_timeout_s=1800.0)  # deletes in batches: the next round goes on
    if settings.monitor_retention_days > 0:
        retention.start()
    # The run and view gauges are read from PostgreSQL at the monitor's pace, never by a scrape.
    gauges = PipelineGauges(run_store, state, [view.name for view in schema.views])
    export_gauges(gauges)
    gauge_reader = PeriodicTask("pipeline gauges", gauges.refresh, settings.monitor_evaluation_seconds,
                                round_timeout_s=2 * db_round_s)  # two reads
    gauge_reader.start()

    async def stop_gauges() -> None:
        unexport_gauges(gauges)
        await gauge_reader.close()

    scheduler = MaterializationScheduler(schema, materializer, state,
                                         tick_s=settings.materialization_scheduler_tick_seconds)
    if settings.materialization_scheduler_enabled:
        scheduler.start()

    # Reads are served with either store down (from the other), so only the state store gates; the
    # online store (Redis) is watched (mlserving_dependency_up) without gating.
    probe = DependencyProbe({"postgresql": state.ping, "redis": online.ping}, gating={"postgresql"})

    async def close() -> None:
        await store.close()
        await asyncio.gather(online.close(), source.close(), state.close(), return_exceptions=True)

    return BuiltService(PipelineServicer(store, runs, schedules, monitor), probe=probe, probe_gates_server=False,
                        closers=[close], stopping=[layout.close, scheduler.close, materializer.close,
                                                   sweeper.close, retraining_scheduler.close, evaluator.close,
                                                   retention.close, notifier.close, stop_gauges, probe.close])


def _layout_adoption(online):
    """The earlier online-store layout's records moved in the background, once (retried while
    Redis is down; then a no-op): see redis_online_store.py."""
    from ...runtime.periodic import PeriodicTask

    done = False

    async def adopt() -> None:
        nonlocal done
        if not done:
            await online.adopt_earlier_layout()
            done = True

    return PeriodicTask("online store layout", adopt, 30.0)


SERVICE = ServicePackage(BY_NAME["pipeline"], PipelineSettings, build, ErrorReason)

"""A retraining worker process: `ml-serving-retraining-worker`. Run as many as the queue needs.

It claims queued runs from PostgreSQL (DATABASE_URL), builds each training set through the
feature store's point-in-time retrieval (the views of PIPELINE_FEATURE_VIEWS_DIR over
PIPELINE_SOURCE_DATABASE_URL), trains with the model's trainer (PIPELINE_TRAINERS), logs the
result to MLflow and registers it in the Registry (PIPELINE_RETRAINING_*), and keeps a succeeded
run's training samples in PostgreSQL (the monitor's drift against training). SIGTERM or SIGINT: the
run in progress stops at its trainer's next step and is queued again for another worker; the
process exits once it is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from datetime import timedelta
from pathlib import Path

from ...runtime.observability import setup_logging
from ...runtime.settings import DatabaseSettings, MeshSettings
from .declarations import load_directory
from .domain.runs import RetrainingRuns
from .domain.training import TrainingSets
from .domain.worker import RetrainingWorker
from .postgres_distributions import PostgresTrainingDistributions
from .postgres_runs import PostgresRunStore
from .postgres_store import PostgresFeatureSource
from .postgres_training_set import PostgresTrainingSetSource
from .retraining_publisher import MlflowRegistryPublisher
from .settings import PipelineSettings
from .trainers import load_trainers

log = logging.getLogger("ml_serving_server.retraining_worker")


def worker_id() -> str:
    """Unique per process, readable in a run's status: host, pid and a random suffix."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _token(settings: PipelineSettings) -> str:
    if not settings.retraining_registry_token_file:
        return ""
    return Path(settings.retraining_registry_token_file).read_text().strip()


async def serve(settings: PipelineSettings, database: DatabaseSettings, stopping: asyncio.Event) -> None:
    if not database.url:
        raise ValueError("a retraining worker needs PostgreSQL: set DATABASE_URL")
    schema = load_directory(settings.feature_views_path())
    trainers = load_trainers(settings.trainers)
    async with contextlib.AsyncExitStack() as opened:  # closed in reverse, whatever fails on the way
        store = await PostgresRunStore.connect(database.url, timeout_seconds=settings.database_timeout_seconds)
        opened.push_async_callback(store.close)
        source = await PostgresFeatureSource.connect(
            settings.source_database_url or database.url, timeout_seconds=settings.database_timeout_seconds,
            scan_timeout_seconds=settings.materialization_query_timeout_seconds)
        opened.push_async_callback(source.close)
        publisher = await MlflowRegistryPublisher.connect(
            settings.retraining_mlflow_tracking_uri, settings.retraining_registry_addr,
            token=lambda: _token(settings))  # read per call: a rotated token file is picked up
        opened.push_async_callback(publisher.close)
        training = TrainingSets(schema, PostgresTrainingSetSource(
            source.pool, statement_timeout_s=settings.training_set_statement_timeout_seconds,
            timeout_s=settings.training_set_timeout_seconds), batch_rows=settings.training_set_batch_entries)
        runs = RetrainingRuns(store, trainers, max_attempts=settings.retraining_max_attempts,
                              worker_lost_after=timedelta(seconds=settings.retraining_worker_lost_seconds))
        worker = RetrainingWorker(
            runs, store, trainers, publisher, training.columns, worker_id=worker_id(),
            heartbeat_interval=timedelta(seconds=settings.retraining_heartbeat_seconds),
            poll_interval=timedelta(seconds=settings.retraining_poll_seconds),
            workdir=Path(settings.retraining_workdir) if settings.retraining_workdir else None,
            distributions=PostgresTrainingDistributions(store.pool))  # what the monitor's drift reads
        log.info("retraining worker %s: models %s", worker.worker_id, ", ".join(sorted(trainers)) or "none")
        releasing = asyncio.create_task(_release_on(stopping, worker))
        try:
            await worker.run_forever(stopping)
        finally:
            releasing.cancel()
    log.info("retraining worker %s stopped", worker.worker_id)


async def _release_on(stopping: asyncio.Event, worker: RetrainingWorker) -> None:
    await stopping.wait()
    worker.release()


def main() -> None:
    mesh = MeshSettings()
    setup_logging(mesh.log_level)

    async def run() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await serve(PipelineSettings(), DatabaseSettings(), stopping)

    asyncio.run(run())


if __name__ == "__main__":
    main()

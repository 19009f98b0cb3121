"""The Router's PostgreSQL store on the session's PostgreSQL: two stores on one database (two
replicas), and small builders shared by the experiment and canary tests."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import pytest

from ml_serving_server.services.router.domain.assignment import Variant, define_experiment
from ml_serving_server.services.router.domain.model import (
    ChangeAction,
    Experiment,
    ExperimentChange,
    ExperimentState,
    OutcomeMetric,
)
from ml_serving_server.services.router.domain.statistics import MetricKind
from ml_serving_server.services.router.postgres_store import PostgresExperimentStore

from ...support import private_database

TIMEOUT = 5.0


@pytest.fixture(scope="module")
def database_url(postgres_server):
    """A database of the module's own: the session mesh's Router replicas drive the canaries and
    reweigh the experiments they find in theirs, and would take the leases these tests hold."""
    with private_database(postgres_server) as url:
        yield url


@pytest.fixture(scope="module")
async def store(database_url):
    opened = await PostgresExperimentStore.connect(database_url, timeout_seconds=TIMEOUT)
    yield opened
    await opened.close()


@pytest.fixture(scope="module")
async def replica(database_url):
    """A second store on the same database: another replica (its connect runs the migrations again)."""
    opened = await PostgresExperimentStore.connect(database_url, timeout_seconds=TIMEOUT)
    yield opened
    await opened.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def now() -> datetime:
    return datetime.now(timezone.utc)


def experiment(model: str, *, name: str = "", state: ExperimentState = ExperimentState.RUNNING) -> Experiment:
    """A small experiment: two variants, nothing else."""
    definition = define_experiment(name or unique("exp"), [Variant("control", model, "1", 5000, control=True),
                                                           Variant("treatment", model, "2", 5000)])
    return Experiment(definition, (OutcomeMetric("ctr", MetricKind.BINARY),), state=state)


def change(e: Experiment, action: ChangeAction = ChangeAction.CREATED, *, reason: str = "",
           fields: tuple[str, ...] = (), at: datetime | None = None) -> ExperimentChange:
    return ExperimentChange(e.name, e.revision, action, "alice", at or now(), reason, fields, e)

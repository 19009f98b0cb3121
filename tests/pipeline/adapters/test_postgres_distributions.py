"""The training samples store over a real PostgreSQL: a run's samples read back as saved, the
newest run of a model is the one read (not another model's, not an older run's, even saved
again), and an unreachable database is the state store's error. A database of its own."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from ml_serving_server.services.pipeline.domain.ports import StateStoreUnavailable
from ml_serving_server.services.pipeline.postgres_distributions import PostgresTrainingDistributions
from ml_serving_server.services.pipeline.postgres_runs import PostgresRunStore

from ...support import private_database

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def samples_database(postgres_server):
    with private_database(postgres_server) as url:
        yield url


@pytest.fixture
async def store(samples_database):
    runs = await PostgresRunStore.connect(samples_database)  # migrates the pipeline's schema
    await runs.pool.execute("TRUNCATE pipeline_training_samples")
    yield PostgresTrainingDistributions(runs.pool)
    await runs.close()


async def test_the_newest_run_s_sample_of_a_feature_is_read(store):
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    activity = [0.1 * i for i in range(10_000)]
    await store.save("rec", "1", first, {"user_profile:activity": activity, "item_catalog:popularity": [0.5, 0.25]},
                     T0)
    assert await store.latest("rec", "user_profile:activity") == activity  # doubles, exactly
    assert await store.latest("rec", "item_catalog:popularity") == [0.5, 0.25]
    await store.save("other", "7", str(uuid.uuid4()), {"user_profile:activity": [9.0]}, T0 + timedelta(hours=2))
    assert await store.latest("rec", "user_profile:activity") == activity  # per model

    await store.save("rec", "2", second, {"user_profile:activity": [1.0, 2.0]}, T0 + timedelta(hours=1))
    assert await store.latest("rec", "user_profile:activity") == [1.0, 2.0]
    # The newest run did not train on it: no reference, rather than an older run's.
    assert await store.latest("rec", "item_catalog:popularity") == []
    # A retried save of the older run replaces its sample, and it stays the older run.
    await store.save("rec", "1", first, {"user_profile:activity": [3.0]}, T0 + timedelta(hours=3))
    assert await store.latest("rec", "user_profile:activity") == [1.0, 2.0]
    assert await store.latest("unknown", "user_profile:activity") == []
    await store.save("rec", "3", str(uuid.uuid4()), {}, T0)  # nothing to keep: nothing stored
    assert await store.latest("rec", "user_profile:activity") == [1.0, 2.0]


async def test_an_unreachable_database_is_state_store_unavailable():
    import asyncpg

    pool = await asyncpg.create_pool("postgresql://nobody@127.0.0.1:1/none", min_size=0, max_size=1, timeout=1)
    try:
        store = PostgresTrainingDistributions(pool)
        with pytest.raises(StateStoreUnavailable):
            await store.latest("rec", "user_profile:activity")
        with pytest.raises(StateStoreUnavailable):
            await store.save("rec", "1", str(uuid.uuid4()), {"v:f": [1.0]}, T0)
    finally:
        await pool.close()

"""Shared by the pipeline's adapter tests: the feature source over the session's PostgreSQL."""

from __future__ import annotations

import pytest

from ml_serving_server.services.pipeline.postgres_store import PostgresFeatureSource


@pytest.fixture(scope="module")
async def source(database_url):
    source = await PostgresFeatureSource.connect(database_url)
    yield source
    await source.close()

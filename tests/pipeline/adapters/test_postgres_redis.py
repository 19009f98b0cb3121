"""The feature store's adapters against the real PostgreSQL (the session's database) and Redis:
source queries (the monitor's recent values of a feature too), the online store's records (on one
Redis and on a three-node Redis Cluster), the state (jobs, watermarks, view locks), and a
materialisation stopped by cancelling after a batch, then resumed, equal to a run from scratch."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from ml_serving_server.services.pipeline.domain.feature_views import Entity, Feature, FeatureView, Source, ValueType
from ml_serving_server.services.pipeline.domain.materialization import FULL, Materializer
from ml_serving_server.services.pipeline.domain.ports import EntityRow, Job, SourceQueryFailed
from ml_serving_server.services.pipeline.domain.schema import FeatureSchema
from ml_serving_server.services.pipeline.postgres_store import PostgresMaterializationState
from ml_serving_server.services.pipeline.redis_online_store import RedisOnlineStore

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def profile_view(table: str, name: str = "profile") -> FeatureView:
    return FeatureView(
        name=name, entity=Entity("user", "user_id", ValueType.INT),
        features=(Feature("score", ValueType.FLOAT), Feature("level", ValueType.INT),
                  Feature("premium", ValueType.BOOL), Feature("country", ValueType.STRING),
                  Feature("taste", ValueType.FLOAT_LIST, dimension=2), Feature("tags", ValueType.STRING_LIST)),
        source=Source(f"SELECT user_id, score, level, premium, country, taste, tags, updated_at FROM {table}",
                      "updated_at"))


def activity_view(table: str) -> FeatureView:
    return FeatureView(
        name="activity", entity=Entity("user", "user_id", ValueType.INT),
        features=(Feature("events", ValueType.INT), Feature("mean_value", ValueType.FLOAT),
                  Feature("recent", ValueType.INT_LIST)),
        source=Source(f"SELECT user_id, count(*) AS events, avg(value) AS mean_value, "
                      f"(array_agg(item_id ORDER BY t DESC))[1:3] AS recent, max(t) AS t FROM {table} "
                      f"GROUP BY user_id", "t"))


@pytest.fixture(scope="module")
async def tables(database_url):
    suffix = uuid.uuid4().hex[:8]
    users, events = f"pl_users_{suffix}", f"pl_events_{suffix}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"""
            CREATE TABLE {users} (user_id bigint PRIMARY KEY, score numeric, level int, premium bool,
                                  country text, taste real[], tags text[], updated_at timestamp NOT NULL);
            CREATE TABLE {events} (user_id bigint, item_id bigint, value double precision, t timestamptz);
            INSERT INTO {users} SELECT i, i / 4.0, i % 5, i % 2 = 0, 'c' || i, ARRAY[i, -i]::real[],
                                       ARRAY['t' || i], TIMESTAMP '2026-01-01' + i * interval '1 minute'
                                FROM generate_series(1, 250) AS i;
            INSERT INTO {events} SELECT i % 10, i, i, TIMESTAMPTZ '2026-01-01 00:00+00' + i * interval '1 second'
                                 FROM generate_series(1, 100) AS i;""")
        yield users, events
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {users}; DROP TABLE IF EXISTS {events}")
        await conn.close()


@pytest.fixture(scope="module")
async def state(database_url):
    state = await PostgresMaterializationState.connect(database_url)
    yield state
    await state.close()


@pytest.fixture(params=["redis", "redis-cluster"])
async def online(request, redis_url, key_prefix):
    prefix = f"{key_prefix}:{uuid.uuid4().hex[:6]}"
    if request.param == "redis-cluster":
        store = RedisOnlineStore.from_url(request.getfixturevalue("redis_cluster_url"), prefix, 2.0, cluster=True)
    else:
        store = RedisOnlineStore.from_url(redis_url, prefix, 2.0)
    yield store
    await store.close()


async def test_source_queries_are_typed_and_windowed(source, tables):
    users, events = tables
    view = profile_view(users)
    assert await source.max_event_time(view) == T0 + timedelta(minutes=250)
    keys = await source.changed_keys(view, after=T0 + timedelta(minutes=240), since=None,
                                     until=T0 + timedelta(minutes=245))
    assert keys == [241, 242, 243, 244, 245]
    assert await source.changed_keys(view, after=None, since=T0 + timedelta(minutes=249), until=None) == [249, 250]
    (row,) = await source.rows(view, [6])
    assert row.key == 6 and row.event_time == T0 + timedelta(minutes=6)
    assert row.values == {"score": 1.5, "level": 1, "premium": True, "country": "c6", "taste": [6.0, -6.0],
                          "tags": ["t6"]}
    activity = activity_view(events)
    assert await source.changed_keys(activity, after=T0 + timedelta(seconds=95), since=None, until=None) == [
        0, 6, 7, 8, 9]
    (agg,) = await source.rows(activity, [3])
    assert agg.values == {"events": 10, "mean_value": 48.0, "recent": [93, 83, 73]}
    assert await source.rows(view, [10_000]) == []


async def test_rows_encoded_by_postgres_read_back_as_the_typed_rows(source, tables, database_url):
    """The materialisation's bulk path: PostgreSQL's JSON of the values equals the typed path's
    values once parsed, for every entity, over numeric, int, bool, text, real[] and text[] columns
    and an aggregate view (count, avg of doubles, bigint[])."""
    for view in (profile_view(tables[0]), activity_view(tables[1])):
        keys = await source.changed_keys(view, after=None, since=None, until=None)
        encoded, typed = await source.encoded_rows(view, keys), await source.rows(view, keys)
        assert encoded is not None and len(encoded) == len(typed) == len(keys)
        names = [feature.name for feature in view.features]
        for one, other in zip(encoded, typed):
            assert (one.key, one.event_time) == (other.key, other.event_time)
            assert dict(zip(names, json.loads(one.values_json))) == other.values


async def test_values_the_json_path_would_write_otherwise_are_read_typed(source, database_url):
    """A list with a null element is null (as the typed path says), and NaN, which PostgreSQL's
    JSON writes as a string, sends the batch down the typed path; a column of another type than
    the declared one (here a float feature over text) sends the view there."""
    table = f"pl_odd_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"""
            CREATE TABLE {table} (user_id bigint, score double precision, level int, premium bool, country text,
                                  taste real[], tags text[], updated_at timestamptz);
            INSERT INTO {table} VALUES (1, 1.5, 1, true, 'x', ARRAY[1, NULL]::real[], ARRAY['a'], now()),
                                       (2, 'NaN', 2, false, 'y', ARRAY[2, 3]::real[], ARRAY[]::text[], now())""")
        view = profile_view(table)
        (first,) = await source.encoded_rows(view, [1])
        assert json.loads(first.values_json) == [1.5, 1, True, "x", None, ["a"]]
        assert await source.encoded_rows(view, [1, 2]) is None
        (typed,) = [row for row in await source.rows(view, [2])]
        assert math.isnan(typed.values["score"]) and typed.values["tags"] == []
        odd = dataclasses.replace(view, name="odd", source=Source(
            f"SELECT user_id, score::text AS score, level, premium, country, taste, tags, updated_at FROM {table}",
            "updated_at"))
        assert await source.encoded_rows(odd, [1]) is None
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


async def test_records_not_of_the_stores_shape_read_as_missing(online, tables):
    """Whatever else sits under a view's keys (text that is no JSON, JSON of another shape,
    a hash), the read answers the good records and treats the rest as missing."""
    view = profile_view(tables[0])
    values = {"score": 0.5, "level": 1, "premium": True, "country": "x", "taste": [1.0, 2.0], "tags": []}
    await online.write(view, [EntityRow(1, T0, values)], T0)
    await online._redis.set(online.key(view, 2), "not json {")
    await online._redis.set(online.key(view, 3), '{"a": 1}')
    await online._redis.set(online.key(view, 4), '["x", "not a time", null, []]')
    await online._redis.hset(online.key(view, 5), mapping={"v": "[]"})
    found = await online.read(view, [1, 2, 3, 4, 5, 6], ["score"])
    assert set(found) == {1} and found[1].values == {"score": 0.5}
    await online._redis.set(online.key(view, "not-an-int"), "x")  # under the view, not one of its keys
    assert sorted(await online.keys(view)) == [1, 2, 3, 4, 5]
    await online._redis.delete(online.key(view, "not-an-int"))
    await online._redis.delete(*[online.key(view, key) for key in (2, 3, 4, 5)])
    await online.clear(view)


async def test_recent_values_of_a_feature_are_its_window_s_rows_newest_first_without_nulls(source, database_url):
    """The monitor's drift against training: every row of the window (bounds included), newest
    first, up to the limit, as floats (an int column too), nulls and NaN left out."""
    table = f"pl_drift_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"""
            CREATE TABLE {table} (user_id bigint, value double precision, level int, t timestamptz NOT NULL);
            INSERT INTO {table} SELECT i % 7, CASE WHEN i % 5 = 0 THEN NULL WHEN i = 13 THEN 'NaN' ELSE i * 1.5 END,
                                       i % 4, TIMESTAMPTZ '2026-01-01 00:00+00' + i * interval '1 minute'
                                FROM generate_series(1, 30) AS i;""")
        view = FeatureView(name="drifting", entity=Entity("user", "user_id", ValueType.INT),
                           features=(Feature("value", ValueType.FLOAT), Feature("level", ValueType.INT)),
                           source=Source(f"SELECT user_id, value, level, t FROM {table}", "t"))
        start, end = T0 + timedelta(minutes=10), T0 + timedelta(minutes=20)
        values = await source.recent_values(view, "value", start=start, end=end, limit=100)
        assert values == [i * 1.5 for i in (19, 18, 17, 16, 14, 12, 11)]  # 10, 15, 20 null; 13 NaN
        assert await source.recent_values(view, "value", start=start, end=end, limit=3) == [28.5, 27.0, 25.5]
        levels = await source.recent_values(view, "level", start=start, end=end, limit=100)
        assert levels == [float(i % 4) for i in range(20, 9, -1)] and all(type(v) is float for v in levels)
        assert await source.recent_values(view, "value", start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=2),
                                          limit=100) == []
    finally:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        await conn.close()


async def test_a_source_query_the_database_refuses_is_a_failed_precondition_naming_why(source):
    view = profile_view(f"no_such_table_{uuid.uuid4().hex[:8]}")
    for call in (source.max_event_time(view), source.rows(view, [1]),
                 source.changed_keys(view, after=None, since=None, until=None),
                 source.recent_values(view, "score", start=T0, end=T0, limit=1)):
        with pytest.raises(SourceQueryFailed) as failed:
            await call
        assert failed.value.reason.name == "SOURCE_QUERY_FAILED" and "does not exist" in failed.value.message


async def test_the_online_store_round_trips_typed_values_in_one_pipeline(online, tables):
    view = profile_view(tables[0])
    values = {"score": 0.1, "level": 3, "premium": False, "country": "fr", "taste": [0.5, 1e-300], "tags": []}
    await online.write(view, [EntityRow(1, T0, values), EntityRow(2, None, {**values, "score": None})], T0)
    found = await online.read(view, [1, 2, 3], ["score", "taste", "tags"])
    assert set(found) == {1, 2}
    assert found[1].values == {"score": 0.1, "taste": [0.5, 1e-300], "tags": []}
    assert found[1].event_time == T0 and found[1].computed_at == T0
    assert found[1].definition_hash == view.definition_hash
    assert found[2].values["score"] is None and found[2].event_time is None
    assert set(await online.dump(view)) == {"1", "2"}
    other = profile_view(tables[0], name="profile_other")  # another view's keys are not this one's
    await online.write(other, [EntityRow(7, T0, values)], T0)
    assert sorted(await online.keys(view)) == [1, 2] and await online.keys(other) == [7]
    await online.delete(view, [2, 99])
    assert await online.keys(view) == [1] and await online.keys(other) == [7]
    await online.clear(other)
    assert await online.clear(view) == 1 and await online.read(view, [1], ["score"]) == {}


async def test_many_entities_of_several_views_are_written_and_read_in_the_order_asked(online, tables):
    """On a cluster these keys fall on every node: one MSET or MGET per slot, the answers in order."""
    profile, other = profile_view(tables[0]), profile_view(tables[0], name="profile_other")
    values = {"score": 0.5, "level": 1, "premium": True, "country": "x", "taste": [1.0, 2.0], "tags": ["a"]}
    await online.write(profile, [EntityRow(i, T0, {**values, "level": i}) for i in range(1, 301)], T0)
    await online.write(other, [EntityRow(i, None, {**values, "level": -i}) for i in range(1, 301, 2)], T0)
    wanted = list(range(300, 0, -3))
    found_profile, found_other = await online.read_views([(profile, wanted, ["level"]), (other, wanted, ["level"])])
    assert {key: stored.values["level"] for key, stored in found_profile.items()} == {i: i for i in wanted}
    assert {key: stored.values["level"] for key, stored in found_other.items()} == {i: -i for i in wanted if i % 2}
    assert len(await online.keys(profile)) == 300 and len(await online.keys(other)) == 150
    assert await online.clear(profile) == 300 and await online.clear(other) == 150


def test_every_view_of_an_entity_shares_its_slot(tables):
    """So a read of one entity over several views is one MGET on a cluster too."""
    from redis.cluster import key_slot

    store = RedisOnlineStore.from_url("redis://127.0.0.1:1/0", "p", 0.5)
    views = [profile_view(tables[0]), profile_view(tables[0], name="profile_other"), activity_view(tables[1])]
    for entity in (1, 42, "a}b"):
        assert len({key_slot(store.key(view, entity).encode()) for view in views}) == 1
    assert len({key_slot(store.key(views[0], entity).encode()) for entity in range(100)}) > 90  # spread


async def test_records_of_the_earlier_layout_are_adopted_once(redis_url, key_prefix, tables):
    """The earlier release's keys, P:fv:{VIEW}:ID, are moved to this layout's; a newer record
    already at the new key wins; the second call does nothing (the deployment is marked)."""
    prefix = f"{key_prefix}:{uuid.uuid4().hex[:6]}"
    store = RedisOnlineStore.from_url(redis_url, prefix, 2.0)
    try:
        view = profile_view(tables[0])
        values = {"score": 0.5, "level": 1, "premium": True, "country": "x", "taste": [1.0, 2.0], "tags": []}
        await store.write(view, [EntityRow(i, T0, {**values, "level": i}) for i in (1, 2, 3)], T0)
        for i in (1, 2, 3):  # as the earlier release wrote them
            await store._redis.rename(store.key(view, i), f"{prefix}:pipeline:fv:{{{view.name}}}:{i}")
        await store.write(view, [EntityRow(3, T0, {**values, "level": 33})], T0)  # newer than the earlier one
        assert set(await store.read(view, [1, 2, 3], ["level"])) == {3}
        assert await store.adopt_earlier_layout() == 2
        found = await store.read(view, [1, 2, 3], ["level"])
        assert {key: stored.values["level"] for key, stored in found.items()} == {1: 1, 2: 2, 3: 33}
        assert [key async for key in store._redis.scan_iter(match=f"{prefix}:pipeline:fv:{{*")] == []
        await store._redis.set(f"{prefix}:pipeline:fv:{{{view.name}}}:4", "x")
        assert await store.adopt_earlier_layout() == 0  # done once per deployment
        await store.clear(view)
    finally:
        await store._redis.delete(f"{prefix}:pipeline:layout", f"{prefix}:pipeline:fv:{{{view.name}}}:4")
        await store.close()


async def test_the_view_lock_is_exclusive_across_connections(state):
    name = f"lock_{uuid.uuid4().hex[:6]}"
    lock = await state.try_lock(name)
    assert lock is not None and await state.try_lock(name) is None
    await lock.release()
    again = await state.try_lock(name)
    assert again is not None
    await again.release()


async def test_jobs_and_watermarks_are_stored(state):
    name = f"jobs_{uuid.uuid4().hex[:6]}"
    first = Job(str(uuid.uuid4()), name, "FULL", "QUEUED", "h1", T0)
    second = Job(str(uuid.uuid4()), name, "INCREMENTAL", "QUEUED", "h1", T0)
    await state.create_job(first)
    await state.create_job(second)
    first.state, first.resume_after, first.entities_written = "RUNNING", "42", 7
    await state.update_job(first)
    previous = await state.last_job(name, before=second)
    assert (previous.job_id, previous.state, previous.resume_after, previous.entities_written) == (
        first.job_id, "RUNNING", "42", 7)
    assert await state.last_job(name, before=first) is None
    from ml_serving_server.services.pipeline.domain.ports import ViewState
    second.state = "SUCCEEDED"
    await state.finish(second, ViewState(name, "h1", T0, T0 + timedelta(1)))
    assert (await state.view_states())[name] == ViewState(name, "h1", T0, T0 + timedelta(1))
    assert (await state.get_job(second.job_id)).state == "SUCCEEDED"


class Pausing:
    """An online store that lets `batches` writes through, then blocks (so a cancel lands there)."""

    def __init__(self, inner, batches):
        self.inner, self.batches, self.paused = inner, batches, asyncio.Event()

    async def _pass(self):
        if self.batches == 0:
            self.paused.set()
            await asyncio.Event().wait()
        self.batches -= 1

    async def write(self, view, rows, computed_at):
        await self._pass()
        await self.inner.write(view, rows, computed_at)

    async def write_encoded(self, view, rows, computed_at):
        await self._pass()
        await self.inner.write_encoded(view, rows, computed_at)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def without_write_time(dump):
    return {key: {k: v for k, v in fields.items() if k != "c"} for key, fields in dump.items()}


async def test_a_cancelled_run_resumes_and_equals_a_run_from_scratch(source, state, tables, redis_url, key_prefix):
    view = profile_view(tables[0], name=f"resume_{uuid.uuid4().hex[:6]}")
    schema = FeatureSchema((view,))
    resumed_store = RedisOnlineStore.from_url(redis_url, f"{key_prefix}:r{uuid.uuid4().hex[:6]}", 2.0)
    scratch_store = RedisOnlineStore.from_url(redis_url, f"{key_prefix}:s{uuid.uuid4().hex[:6]}", 2.0)
    try:
        pausing = Pausing(resumed_store, batches=2)
        stopped = Materializer(schema, source, pausing, state, batch_size=100)
        (queued,) = await stopped.materialize([view.name])
        await asyncio.wait_for(pausing.paused.wait(), 10)
        await stopped.close()  # cancel mid-run: the job stays RUNNING with its progress
        job = await state.get_job(queued.job_id)
        assert (job.state, job.entities_written, job.resume_after) == ("RUNNING", 200, "200")
        assert len(await resumed_store.dump(view)) == 200 and await state.view_state(view.name) is None

        (resumed,) = await Materializer(schema, source, resumed_store, state, batch_size=100).materialize(
            [view.name], wait=True)
        assert (resumed.state, resumed.resumed_job_id, resumed.entities_written) == ("SUCCEEDED", queued.job_id, 50)
        assert (await state.get_job(queued.job_id)).state == "FAILED"

        (full,) = await Materializer(schema, source, scratch_store, state, batch_size=100).materialize(
            [view.name], FULL, wait=True)
        assert full.entities_written == 250
        assert without_write_time(await resumed_store.dump(view)) == without_write_time(await scratch_store.dump(view))
    finally:
        for store in (resumed_store, scratch_store):
            await store.clear(view)
            await store.close()

"""The Feature Store walked end to end through the real Envoy, on both documented paths (REST with
gRPC-JSON transcoding, and gRPC through the same front door), against real PostgreSQL and Redis
and the checkout's real views (features/*.yaml): load a small demo data set, materialise, read one
and 100 entities, change a few source rows, materialise again and see only the changed entities
rewritten, read the new values.

The module loads the demo data (ml_serving_tools.demo_data, at a small scale) into a database of
its own and runs a mesh process hosting only the pipeline, with Envoy in front, under a Redis key
prefix of its own: nothing of the session's other tests meets these views or tables."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import asyncpg
import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb
from mnbara.mlserving.pipeline.v1 import pipeline_pb2_grpc

from ml_serving_server.services.pipeline.declarations import load_directory
from ml_serving_server.services.pipeline.redis_online_store import RedisOnlineStore
from ml_serving_server.services.pipeline.settings import PipelineSettings
from ml_serving_tools import demo_data

from ...support import call, private_database, start_stack_on_free_ports

pytestmark = pytest.mark.timeout(120)

SIZES = {"users": 300, "items": 60, "events": 3_000}
VIEWS = ["item_catalog", "item_engagement", "user_engagement", "user_profile"]
GET, SCHEMA, MATERIALIZE = "/api/v1/ml/features/get", "/api/v1/ml/features/schema", "/api/v1/ml/features/materialize"
ONLINE = "FEATURE_VALUE_SOURCE_ONLINE_STORE"
ONE_USER = "123"
HUNDRED_USERS = [str(user) for user in range(100)]
CHANGED_USERS = ["7", ONE_USER, "250"]  # one in the 100 read, the one read alone, one outside both
CHANGED_ITEMS = ["5", "42"]
CLICKING_USER, CLICKED_ITEM = "17", "33"  # a new interaction: one entity of each engagement view


@pytest.fixture(scope="module")
def demo_dsn(postgres_server):
    with private_database(postgres_server) as url:
        yield url


@pytest.fixture(scope="module")
def loaded(demo_dsn) -> demo_data.LoadReport:
    report = asyncio.run(demo_data.load(demo_dsn, **SIZES))
    assert report.loaded, report.line()
    return report


@pytest.fixture(scope="module")
def mesh_prefix(key_prefix):
    """Under the session's prefix: its keys go with the session's."""
    return f"{key_prefix}-walk-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def feature_stack(tmp_path_factory, redis_url, demo_dsn, loaded, mesh_prefix, dev_keys):
    """A mesh process hosting only the pipeline (on the demo database) and Envoy in front of it."""
    env = {"REDIS_URL": redis_url, "DATABASE_URL": demo_dsn, "MESH_KEY_PREFIX": mesh_prefix,
           "MESH_SERVICES": "pipeline", "MESH_SHUTDOWN_DELAY_SECONDS": "0", "LOG_LEVEL": "INFO",
           "AUTH_JWKS_FILE": str(dev_keys.jwks), "AUTH_ISSUER": dev_keys.issuer, "AUTH_AUDIENCE": dev_keys.audience}
    running = start_stack_on_free_ports(tmp_path_factory.mktemp("feature-walk"), env, dev_keys)
    yield running
    running.stop()


# ----- the two paths, answering in one normal form --------------------------------------------

def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    stamp = Timestamp()
    stamp.FromJsonString(text)
    return stamp.ToDatetime(tzinfo=timezone.utc)


def _normal(entities: list[dict]) -> dict[str, dict]:
    """{entity id: {found, features: {name: (value as JSON, source, event time, computed at, stale)}}}
    of a GetFeatures answer in its JSON form."""
    return {entity["entityId"]: {
        "found": entity.get("found", False),
        "features": {name: (feature.get("value"), feature["source"], _time(feature.get("eventTime")),
                            _time(feature.get("computedAt")), feature.get("stale", False))
                     for name, feature in entity["features"].items()}}
        for entity in entities}


class Paths:
    """GetFeatures, GetFeatureSchema and MaterializeFeatures through Envoy, by REST or by gRPC."""

    def __init__(self, stack, reader: str, writer: str):
        self.stack, self.reader, self.writer = stack, reader, writer

    def rest_get(self, view: str, ids: list[str]) -> dict:
        body = {"featureView": view, "entityIds": ids} if len(ids) > 1 else {"featureView": view, "entityId": ids[0]}
        reply = call(self.stack.front_door, "POST", GET, token=self.reader, body=body)
        assert reply.status == 200, reply.body
        answer = reply.json()
        assert answer["featureView"] == view and answer["readThroughCount"] == 0, answer
        assert answer["onlineStoreUnavailable"] is False
        return _normal(answer["entities"])

    async def grpc_get(self, view: str, ids: list[str]) -> dict:
        request = pb.GetFeaturesRequest(feature_view=view, entity_ids=ids) if len(ids) > 1 \
            else pb.GetFeaturesRequest(feature_view=view, entity_id=ids[0])
        async with grpc.aio.insecure_channel(self.stack.front_door) as channel:
            answer = await pipeline_pb2_grpc.PipelineServiceStub(channel).GetFeatures(
                request, metadata=[("authorization", f"Bearer {self.reader}")], timeout=10)
        assert answer.feature_view == view and answer.read_through_count == 0 and not answer.online_store_unavailable
        return _normal([json_format.MessageToDict(entity) for entity in answer.entities])

    async def get(self, view: str, ids: list[str]) -> dict:
        """Both paths' answers, which must be the same, in request order."""
        rest, over_grpc = self.rest_get(view, ids), await self.grpc_get(view, ids)
        assert list(rest) == ids and rest == over_grpc
        return rest

    def rest_materialize(self, **body) -> dict[str, dict]:
        reply = call(self.stack.front_door, "POST", MATERIALIZE, token=self.writer, body={**body, "wait": True})
        assert reply.status == 200, reply.body
        return {job["featureView"]: job for job in reply.json()["jobs"]}

    async def grpc_materialize(self, mode: int) -> dict[str, pb.MaterializationJob]:
        async with grpc.aio.insecure_channel(self.stack.front_door) as channel:
            answer = await pipeline_pb2_grpc.PipelineServiceStub(channel).MaterializeFeatures(
                pb.MaterializeFeaturesRequest(mode=mode, wait=True),
                metadata=[("authorization", f"Bearer {self.writer}")], timeout=60)
        return {job.feature_view: job for job in answer.jobs}

    def watermark(self, view: str) -> datetime | None:
        reply = call(self.stack.front_door, "GET", f"{SCHEMA}?featureView={view}", token=self.reader)
        assert reply.status == 200, reply.body
        (described,) = reply.json()["featureViews"]
        return _time(described.get("materializedUntil"))


async def online_records(redis_url: str, prefix: str) -> dict[str, dict[str, dict[str, str]]]:
    """Every online record of the checkout's views under the mesh's key prefix, by view and entity
    id, as RedisOnlineStore.dump gives them: fields h (definition), c (when written), t (event
    time), v (the values)."""
    schema = load_directory(PipelineSettings().feature_views_path())
    store = RedisOnlineStore.from_url(redis_url, prefix, 5.0)
    try:
        return {view: await store.dump(schema.view(view, field="feature_view")) for view in VIEWS}
    finally:
        await store.close()


def expect_profile(features: dict, row) -> None:
    """A user_profile entity's features are its demo_users row's, served from the online store."""
    values = {name: feature[0] for name, feature in features.items()}
    assert {feature[1] for feature in features.values()} == {ONLINE}
    assert values["country"] == {"stringValue": row["country"]}
    assert values["device"] == {"stringValue": row["device"]}
    assert values["age_bucket"] == {"int64Value": str(row["age_bucket"])}
    assert values["is_premium"] == {"boolValue": row["is_premium"]}
    assert values["activity"]["doubleValue"] == pytest.approx(row["activity"])
    assert values["taste"]["doubleListValue"]["values"] == pytest.approx(list(row["taste"]))
    assert {feature[2] for feature in features.values()} == {row["updated_at"]}


async def test_load_materialise_read_change_rematerialise_read(feature_stack, demo_dsn, loaded, redis_url,
                                                              mesh_prefix):
    paths = Paths(feature_stack, feature_stack.mint(["pipeline.read"], "walk-reader"),
                  feature_stack.mint(["pipeline.write"], "walk-writer"))
    conn = await asyncpg.connect(demo_dsn)
    try:
        # The schema: the checkout's four views, none materialised yet.
        reply = call(feature_stack.front_door, "GET", SCHEMA, token=paths.reader)
        assert reply.status == 200, reply.body
        assert [view["name"] for view in reply.json()["featureViews"]] == VIEWS
        assert all(paths.watermark(view) is None for view in VIEWS)

        # Materialise every view by REST: a first run is FULL, and writes every entity.
        expected_total = {
            "user_profile": SIZES["users"], "item_catalog": SIZES["items"],
            "user_engagement": await conn.fetchval("SELECT count(DISTINCT user_id) FROM demo_interactions"),
            "item_engagement": await conn.fetchval("SELECT count(DISTINCT item_id) FROM demo_interactions")}
        jobs = paths.rest_materialize()
        assert {view: (job["mode"], job["state"], int(job["entitiesWritten"])) for view, job in jobs.items()} == {
            view: ("MATERIALIZATION_MODE_FULL", "JOB_STATE_SUCCEEDED", total) for view, total in expected_total.items()}
        assert paths.watermark("user_profile") == await conn.fetchval("SELECT max(updated_at) FROM demo_users")
        before = await online_records(redis_url, mesh_prefix)
        assert {view: len(records) for view, records in before.items()} == expected_total

        # Read one user, then 100, on both paths: the rows' values, from the online store.
        users = {str(row["user_id"]): row for row in await conn.fetch("SELECT * FROM demo_users")}
        one = await paths.get("user_profile", [ONE_USER])
        assert one[ONE_USER]["found"]
        expect_profile(one[ONE_USER]["features"], users[ONE_USER])
        hundred = await paths.get("user_profile", HUNDRED_USERS)
        for user in HUNDRED_USERS:
            assert hundred[user]["found"], user
            expect_profile(hundred[user]["features"], users[user])
        engagement = await paths.get("user_engagement", HUNDRED_USERS)
        last_events = {str(row["user_id"]): row["t"] for row in await conn.fetch(
            "SELECT user_id, max(event_time) AS t FROM demo_interactions WHERE user_id < 100 GROUP BY user_id")}
        assert {user for user, entity in engagement.items() if entity["found"]} == set(last_events)
        for user, t in last_events.items():
            assert {f[1] for f in engagement[user]["features"].values()} == {ONLINE}
            assert {f[2] for f in engagement[user]["features"].values()} == {t}
        items_before = await paths.get("item_catalog", CHANGED_ITEMS)

        # Change a few source rows (a new event time each) and add one interaction.
        changed_rows = {str(row["user_id"]): row for row in await conn.fetch(
            "UPDATE demo_users SET country = 'ZZ', device = 'tablet', activity = activity / 2, "
            "updated_at = clock_timestamp() WHERE user_id = ANY($1::bigint[]) RETURNING *",
            [int(user) for user in CHANGED_USERS])}
        assert sorted(changed_rows) == sorted(CHANGED_USERS)
        new_prices = {str(row["item_id"]): row["price"] for row in await conn.fetch(
            "UPDATE demo_items SET price = price + 1000, updated_at = clock_timestamp() "
            "WHERE item_id = ANY($1::bigint[]) RETURNING item_id, price", [int(item) for item in CHANGED_ITEMS])}
        clicked_at = await conn.fetchval(
            "INSERT INTO demo_interactions (id, user_id, item_id, device, clicked, event_time) "
            "SELECT max(id) + 1, $1, $2, 'mobile', true, clock_timestamp() FROM demo_interactions "
            "RETURNING event_time", int(CLICKING_USER), int(CLICKED_ITEM))

        # Materialise again, incrementally, by gRPC: only the changed entities are rewritten.
        jobs = await paths.grpc_materialize(pb.MATERIALIZATION_MODE_INCREMENTAL)
        changed = {"user_profile": set(CHANGED_USERS), "item_catalog": set(CHANGED_ITEMS),
                   "user_engagement": {CLICKING_USER}, "item_engagement": {CLICKED_ITEM}}
        assert {view: (job.mode, job.state, job.entities_written) for view, job in jobs.items()} == {
            view: (pb.MATERIALIZATION_MODE_INCREMENTAL, pb.JOB_STATE_SUCCEEDED, len(ids))
            for view, ids in changed.items()}
        after = await online_records(redis_url, mesh_prefix)
        assert {view: set(records) for view, records in after.items()} == {
            view: set(records) for view, records in before.items()}
        rewritten = {view: {entity for entity, fields in records.items() if fields["c"] != before[view][entity]["c"]}
                     for view, records in after.items()}
        assert rewritten == changed
        for view, records in after.items():
            for entity, fields in records.items():
                if entity not in changed[view]:
                    assert fields == before[view][entity], (view, entity)
        assert paths.watermark("user_profile") == max(row["updated_at"] for row in changed_rows.values())
        assert paths.watermark("user_engagement") == clicked_at

        # Read again on both paths: the new values from the online store, computed later; the
        # users that did not change are answered exactly as before.
        one_again = await paths.get("user_profile", [ONE_USER])
        expect_profile(one_again[ONE_USER]["features"], changed_rows[ONE_USER])
        assert one_again[ONE_USER]["features"]["country"][0] == {"stringValue": "ZZ"}
        assert min(f[3] for f in one_again[ONE_USER]["features"].values()) > \
            max(f[3] for f in one[ONE_USER]["features"].values())
        hundred_again = await paths.get("user_profile", HUNDRED_USERS)
        for user in HUNDRED_USERS:
            if user in changed_rows:
                expect_profile(hundred_again[user]["features"], changed_rows[user])
                assert hundred_again[user]["features"]["device"][0] == {"stringValue": "tablet"}
            else:
                assert hundred_again[user] == hundred[user], user
        items_again = await paths.get("item_catalog", CHANGED_ITEMS)
        for item in CHANGED_ITEMS:
            price = items_again[item]["features"]["price"]
            assert (price[0]["doubleValue"], price[1]) == (pytest.approx(new_prices[item]), ONLINE)
            assert price[3] > items_before[item]["features"]["price"][3]
        clicker = (await paths.get("user_engagement", [CLICKING_USER]))[CLICKING_USER]["features"]
        assert clicker["recent_item_ids"][0]["int64ListValue"]["values"][0] == CLICKED_ITEM
        assert (clicker["recent_item_ids"][1], clicker["recent_item_ids"][2]) == (ONLINE, clicked_at)
    finally:
        await conn.close()

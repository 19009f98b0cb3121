"""The Feature Store's demo data (ml_serving_tools.demo_data) at a small size, in a real PostgreSQL:
what the feature views of features/*.yaml select is there with the types they declare, the rows
are the demo model's world (same seed, same generator), the same arguments give the same rows,
and loading is idempotent (the same data is left alone, other sizes replace it).

The module loads into a database of its own beside the session's (`database_url`), so other
tests' tables and this module's replacements never meet."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import asyncpg
import numpy as np
import pytest
import yaml

from ml_serving_tools import demo_data, demo_setup, devservices
from ml_serving_tools.demo_model import data
from ml_serving_tools.paths import ROOT

USERS, ITEMS, EVENTS = 2_500, 300, 60_000  # beyond the model's 1,000 users, 200 items and 50,000 interactions
ANCHOR = datetime.now(timezone.utc).replace(microsecond=0)
SIZES = {"users": USERS, "items": ITEMS, "events": EVENTS}


@pytest.fixture(scope="module")
def dsn(database_url):
    """A database of this module's own on the session's server, dropped afterwards."""
    name = f"{database_url.rsplit('/', 1)[1].split('?')[0]}_demo"[:63]
    url = devservices.create_database_if_missing(database_url, name)
    yield url
    devservices.drop_database(database_url, name)


@pytest.fixture(scope="module")
def generated() -> demo_data.DemoData:
    return demo_data.generate(**SIZES, now=ANCHOR)


async def _load(dsn: str, **overrides) -> demo_data.LoadReport:
    return await demo_data.load(dsn, **{**SIZES, "now": ANCHOR, **overrides})


@pytest.fixture
async def conn(dsn):
    """A connection to a database holding the module's demo data (loaded unless already there)."""
    await _load(dsn)
    connection = await asyncpg.connect(dsn)
    yield connection
    await connection.close()


def _columns(table: dict[str, demo_data.Column]) -> dict[str, np.ndarray]:
    return {name: column.values() if isinstance(column, demo_data.Text) else column for name, column in table.items()}


# ----------------------------------------------------------------------------- generation


def test_the_same_arguments_give_the_same_rows(generated):
    again = demo_data.generate(**SIZES, now=ANCHOR)
    for table, columns in generated.tables.items():
        for name, values in _columns(columns).items():
            np.testing.assert_array_equal(values, _columns(again.tables[table])[name], err_msg=f"{table}.{name}")
    other = demo_data.generate(**SIZES, seed=data.SEED + 1, now=ANCHOR)
    assert not np.array_equal(other.users["taste"], generated.users["taste"])
    assert not np.array_equal(other.events["clicked"], generated.events["clicked"])


def test_another_anchor_shifts_the_times_only(generated):
    later = demo_data.generate(**SIZES, now=ANCHOR + timedelta(hours=5))
    shift = np.timedelta64(5 * 3600 * 10**6, "us")
    np.testing.assert_array_equal(later.events["event_time"], generated.events["event_time"] + shift)
    np.testing.assert_array_equal(later.users["updated_at"], generated.users["updated_at"] + shift)
    np.testing.assert_array_equal(later.users["taste"], generated.users["taste"])
    np.testing.assert_array_equal(later.events["clicked"], generated.events["clicked"])


def test_the_models_own_users_items_and_interactions_come_first(generated):
    world, own = data.world(), data.interactions()
    u, i, e = generated.users, generated.items, generated.events
    n = data.N_USERS
    np.testing.assert_array_equal(u["age_bucket"][:n], world.users["age_bucket"])
    np.testing.assert_array_equal(u["activity"][:n], world.users["activity"])
    np.testing.assert_array_equal(u["is_premium"][:n], world.users["is_premium"] == 1)
    np.testing.assert_array_equal(u["taste"][:n], world.users["pref"])
    m = data.N_ITEMS
    np.testing.assert_array_equal(i["category"][:m], world.items["category"])
    np.testing.assert_array_equal(i["price_tier"][:m], world.items["price_tier"])
    np.testing.assert_array_equal(i["popularity"][:m], world.items["popularity"])
    np.testing.assert_array_equal(i["embedding"][:m], world.items["emb"])
    k = data.N_INTERACTIONS
    np.testing.assert_array_equal(e["user_id"][:k], own.user_id)
    np.testing.assert_array_equal(e["item_id"][:k], own.item_id)
    np.testing.assert_array_equal(e["device"].codes[:k], own.device)
    np.testing.assert_array_equal(e["clicked"][:k], own.label == 1)
    assert e["user_id"][k:].max() >= 0.9 * USERS and e["item_id"][k:].max() >= 0.9 * ITEMS  # then everyone's
    small = demo_data.generate(users=USERS, items=ITEMS, events=20_000, now=ANCHOR)  # a prefix of the model's
    np.testing.assert_array_equal(small.events["user_id"], own.user_id[:20_000])


def test_beyond_the_model_the_same_distributions_and_ground_truth():
    """Users and items past the model's are drawn by its own generator (other seeds); events past
    its 50,000 click as its ground truth says."""
    demo = demo_data.generate(users=20_000, items=2_000, events=120_000, now=ANCHOR)
    u, i, e = demo.users, demo.items, demo.events
    more = slice(data.N_USERS, None)
    assert abs(u["is_premium"][more].mean() - 0.3) < 0.02
    assert abs(u["activity"][more].mean() - 2 / 7) < 0.01  # beta(2, 5)
    assert abs(u["taste"][more].mean()) < 0.03 and abs(u["taste"][more].std() - 1) < 0.03
    assert set(np.unique(u["age_bucket"])) == set(range(data.N_AGE_BUCKETS))
    assert set(np.unique(i["category"])) == set(range(data.N_CATEGORIES))
    assert not np.array_equal(u["taste"][1000:2000], u["taste"][:1000])  # blocks differ from the model's
    own, new = slice(0, data.N_INTERACTIONS), slice(data.N_INTERACTIONS, None)
    assert abs(e["clicked"][own].mean() - e["clicked"][new].mean()) < 0.02
    assert abs((e["device"].codes[new] == 1).mean() - demo_data.MOBILE_SHARE) < 0.01
    world = demo_data.scaled_world(20_000, 2_000)
    p = 1 / (1 + np.exp(-data.true_logit(world, e["user_id"][new], e["item_id"][new], e["device"].codes[new])))
    assert abs(p.mean() - e["clicked"][new].mean()) < 0.01
    assert e["user_id"].max() >= 19_000 and e["item_id"].max() >= 1_900


def test_times_events_in_the_window_rows_before_it(generated):
    anchor = np.datetime64(ANCHOR.replace(tzinfo=None), "us")
    window = np.timedelta64(demo_data.EVENT_WINDOW // timedelta(microseconds=1), "us")
    times = generated.events["event_time"]
    assert times.max() <= anchor and times.min() > anchor - window
    for table in (generated.users, generated.items):
        assert table["updated_at"].max() < times.min()  # every event sees its user's and item's row


def test_a_users_device_is_the_one_most_of_their_events_came_from(generated):
    e = generated.events
    mobile = np.bincount(e["user_id"], weights=e["device"].codes, minlength=USERS)
    seen = np.bincount(e["user_id"], minlength=USERS)
    clear = 2 * mobile != seen
    np.testing.assert_array_equal(generated.users["device"].codes[clear], (2 * mobile > seen)[clear])


@pytest.mark.parametrize("bad", [{"users": 0}, {"events": -1}, {"items": 1.5}, {"seed": -1}, {"users": True}])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(ValueError):
        demo_data.generate(**{**SIZES, **bad})


# ----------------------------------------------------------------------------- in PostgreSQL


async def test_rows_and_info(conn):
    for table, count in (("demo_users", USERS), ("demo_items", ITEMS), ("demo_interactions", EVENTS)):
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == count
    info = await conn.fetchrow("SELECT * FROM demo_data_info")
    assert (info["seed"], info["users"], info["items"], info["events"]) == (data.SEED, USERS, ITEMS, EVENTS)
    assert info["anchor"] == ANCHOR and info["generator"] == demo_data.GENERATOR_VERSION


EXPECTED_TYPES = {
    "demo_users": {"user_id": "int8", "age_bucket": "int4", "activity": "float8", "is_premium": "bool",
                   "country": "text", "device": "text", "taste": "_float8", "updated_at": "timestamptz"},
    "demo_items": {"item_id": "int8", "category": "int4", "price_tier": "int4", "price": "float8",
                   "popularity": "float8", "embedding": "_float8", "updated_at": "timestamptz"},
    "demo_interactions": {"id": "int8", "user_id": "int8", "item_id": "int8", "device": "text", "clicked": "bool",
                          "event_time": "timestamptz"},
}


async def test_columns_keys_and_indexes(conn):
    for table, expected in EXPECTED_TYPES.items():
        rows = await conn.fetch("SELECT column_name, udt_name FROM information_schema.columns WHERE table_name = $1 "
                                "ORDER BY ordinal_position", table)
        assert {r["column_name"]: r["udt_name"] for r in rows} == expected
    indexes = {r["indexname"]: r["indexdef"] for r in await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename LIKE 'demo_%'")}
    for table, key in (("demo_users", "user_id"), ("demo_items", "item_id"), ("demo_interactions", "id")):
        assert f"UNIQUE INDEX {table}_pkey ON public.{table} USING btree ({key})" in indexes[f"{table}_pkey"]
    for table, columns in (("demo_users", "updated_at"), ("demo_items", "updated_at"),
                           ("demo_interactions", "user_id, event_time"), ("demo_interactions", "item_id, event_time")):
        assert any(d.endswith(f"ON public.{table} USING btree ({columns})") for d in indexes.values()), (table, columns)


def _views() -> list[dict]:
    views = []
    for path in sorted((ROOT / "features").glob("*.yaml")):
        views += yaml.safe_load(path.read_text())["views"]
    return views


def _conforms(value: object, feature: dict) -> bool:
    kind = feature["type"]
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":  # avg() of the engagement views gives numeric: Decimal
        return isinstance(value, (float, int, Decimal)) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "embedding":
        return isinstance(value, list) and len(value) == feature["dimension"] and all(
            isinstance(x, float) for x in value)
    if kind == "int_list":  # NULL: a user who clicked nothing (array_agg over no rows)
        return value is None or (isinstance(value, list) and all(isinstance(x, int) for x in value))
    raise AssertionError(f"no check for type {kind}")


@pytest.mark.parametrize("view", _views(), ids=lambda view: view["name"])
async def test_each_feature_views_source_query_runs_on_the_tables(conn, view):
    rows = await conn.fetch(view["source"]["query"])
    key, time_column = view["entity"]["join_key"], view["source"]["event_time_column"]
    table = "demo_interactions" if "demo_interactions" in view["source"]["query"] else \
        {"user_id": "demo_users", "item_id": "demo_items"}[key]
    assert len(rows) == await conn.fetchval(f"SELECT count(DISTINCT {key}) FROM {table}")  # one row per entity
    assert list(rows[0].keys()) == [key, *[f["name"] for f in view["features"]], time_column]
    for row in rows:
        assert isinstance(row[key], int) and isinstance(row[time_column], datetime)
        for feature in view["features"]:
            assert _conforms(row[feature["name"]], feature), (view["name"], feature["name"], row[feature["name"]])


async def test_engagement_windows_see_the_last_30_days(conn):
    """Events are spread over the 30 days before the anchor (now): about 7/30 are in the 7-day window."""
    row = await conn.fetchrow("SELECT count(*) FILTER (WHERE event_time > now() - interval '7 days') AS week, "
                              "count(*) FILTER (WHERE event_time > now() - interval '30 days') AS month, "
                              "count(*) AS total FROM demo_interactions")
    assert abs(row["week"] / row["total"] - 7 / 30) < 0.03
    assert row["month"] >= 0.99 * row["total"]  # the test's minutes since the anchor age a few events out


async def test_the_tables_hold_exactly_the_generated_rows(conn, generated):
    """The binary COPY round trip: every value of every row as generated (and so as the demo
    model's generator has it for the model's own users, items and interactions)."""
    for table, columns in generated.tables.items():
        key = demo_data.TABLES[table]["primary_key"]
        rows = await conn.fetch(f"SELECT * FROM {table} ORDER BY {key}")
        expected = _columns(columns)
        for name, values in expected.items():
            got = [r[name] for r in rows]
            if np.issubdtype(values.dtype, np.datetime64):
                got = [np.datetime64(t.astimezone(timezone.utc).replace(tzinfo=None), "us") for t in got]
            np.testing.assert_array_equal(np.array(got, dtype=values.dtype), values, err_msg=f"{table}.{name}")


async def test_user_0_and_item_7_are_the_models(conn):
    user = await conn.fetchrow("SELECT * FROM demo_users WHERE user_id = 0")
    model = data.user_features(0)
    assert user["age_bucket"] == model["age_bucket"] and user["is_premium"] == bool(model["is_premium"])
    assert user["activity"] == model["activity"]
    assert user["taste"] == [model[f"pref_{d}"] for d in range(data.TASTE_DIMS)]
    item = await conn.fetchrow("SELECT * FROM demo_items WHERE item_id = 7")
    model = data.item_features(7)
    assert (item["category"], item["price_tier"], item["popularity"]) == \
        (model["category"], model["price_tier"], model["popularity"])
    assert item["embedding"] == [model[f"emb_{d}"] for d in range(data.TASTE_DIMS)]
    low, high = demo_data.PRICE_RANGES[item["price_tier"]]
    assert low <= item["price"] <= high


async def _table_files(conn) -> dict[str, int]:
    return {r["relname"]: r["relfilenode"] for r in await conn.fetch(
        "SELECT relname, relfilenode FROM pg_class WHERE relname LIKE 'demo_%'")}


async def test_loading_the_same_data_again_does_nothing(conn, dsn):
    before, info = await _table_files(conn), await conn.fetchrow("SELECT * FROM demo_data_info")
    report = await _load(dsn)
    assert not report.loaded and "already loaded" in report.line()
    assert await _table_files(conn) == before
    assert await conn.fetchrow("SELECT * FROM demo_data_info") == info


async def test_other_sizes_or_seed_replace_it_and_stale_data_is_refreshed(conn, dsn):
    report = await _load(dsn, events=5_000)
    assert report.loaded and "replacing" in report.reason
    assert await conn.fetchval("SELECT count(*) FROM demo_interactions") == 5_000
    report = await _load(dsn, events=5_000, seed=7)
    assert report.loaded and await conn.fetchval("SELECT seed FROM demo_data_info") == 7
    report = await _load(dsn, events=5_000, seed=7, max_age=timedelta(0))  # anchored "too long ago"
    assert report.loaded and report.reason.startswith("refreshing")
    assert (await _load(dsn)).loaded  # back to the module's data
    assert await conn.fetchval("SELECT count(*) FROM demo_interactions") == EVENTS


async def test_concurrent_loaders_load_once(conn, dsn):
    reports = await asyncio.gather(*(_load(dsn, users=1_200) for _ in range(3)))
    assert sorted(r.loaded for r in reports) == [False, False, True]
    assert await conn.fetchval("SELECT count(*) FROM demo_users") == 1_200
    await _load(dsn)


async def test_create_schema_makes_the_same_tables_and_indexes_empty(conn):
    """`create_schema` (for whoever wants the tables without data) and `load` write the same DDL."""
    await conn.execute("DROP SCHEMA IF EXISTS schema_only CASCADE; CREATE SCHEMA schema_only")
    try:
        await conn.execute("SET search_path = schema_only")
        await demo_data.create_schema(conn)
        await demo_data.create_schema(conn)  # again: nothing changes
        assert await conn.fetchval("SELECT count(*) FROM demo_users") == 0

        def layout(rows):
            return sorted((r["tablename"], r["indexname"], r["indexdef"].replace(f"{r['schemaname']}.", ""))
                          for r in rows)
        query = "SELECT * FROM pg_indexes WHERE schemaname = $1 AND tablename LIKE 'demo_%'"
        assert layout(await conn.fetch(query, "schema_only")) == layout(await conn.fetch(query, "public"))
        columns = ("SELECT table_name, column_name, udt_name, is_nullable FROM information_schema.columns "
                   "WHERE table_schema = $1 AND table_name LIKE 'demo_%' ORDER BY table_name, ordinal_position")
        assert [tuple(r) for r in await conn.fetch(columns, "schema_only")] == \
            [tuple(r) for r in await conn.fetch(columns, "public")]
    finally:
        await conn.execute("RESET search_path; DROP SCHEMA schema_only CASCADE")


def test_command_line_says_what_it_did_and_how_long_it_took(dsn):
    command = [sys.executable, "-m", "ml_serving_tools.demo_data", "--dsn", dsn, "--users", "1,000", "--items", "200",
               "--events", "3000"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "1,000 users, 200 items, 3,000 events (seed 20240601) loaded in" in first.stdout
    second = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert "already loaded" in second.stdout and "nothing to do" in second.stdout
    bad = subprocess.run([*command[:-1], "many"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2


def test_make_ups_loader_prints_one_line_or_a_warning(dsn, capsys):
    env = {"DEMO_DATA_USERS": "1_000", "DEMO_DATA_ITEMS": "200", "DEMO_DATA_EVENTS": "2000"}
    report = demo_setup.DemoDataLoad(dsn, env).wait(60)
    assert report is not None and (report.users, report.items, report.events) == (1_000, 200, 2_000)
    assert capsys.readouterr().out.startswith("demo data: 1,000 users, 200 items, 2,000 events")
    assert demo_setup.load_demo_data(dsn, {**env, "DEMO_DATA": "off"}) is None
    assert demo_setup.load_demo_data("postgresql://postgres@127.0.0.1:1/none", env) is None
    assert "warning: the demo data could not be loaded" in capsys.readouterr().err
    assert demo_setup.load_demo_data(dsn, {"DEMO_DATA_EVENTS": "lots"}) is None
    assert "DEMO_DATA_EVENTS='lots' is not a whole number" in capsys.readouterr().err

"""`make up`'s Feature Store demo (ml_serving_tools.demo_setup.DemoFeatures and features_banner):
once the demo data is loaded, the feature views are materialised (FULL after a load, incremental
when the data was there already) and the banner's feature examples (curl and grpcurl through a
real Envoy, the Python client) work as printed and answer the data's values.

The module loads a small demo data set into a database of its own and runs a stack (mesh
process and Envoy) on it, under a Redis key prefix of its own, so the session's other views
and tables never meet these."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid

import asyncpg
import pytest

from ml_serving_tools import demo_data, demo_setup, devservices, run_mesh
from ml_serving_tools.paths import ROOT

from ..support import start_stack_on_free_ports

pytestmark = pytest.mark.timeout(300)
SIZES = {"users": 2_000, "items": 300, "events": 20_000}


@pytest.fixture(scope="module")
def demo_dsn(database_url):
    name = f"{database_url.rsplit('/', 1)[1].split('?')[0]}_feat"[:63]
    url = devservices.create_database_if_missing(database_url, name)
    yield url
    devservices.drop_database(database_url, name)


@pytest.fixture(scope="module")
def loaded(demo_dsn) -> demo_data.LoadReport:
    return asyncio.run(demo_data.load(demo_dsn, **SIZES))


@pytest.fixture(scope="module")
def demo_stack(tmp_path_factory, stack_env, dev_keys, demo_dsn, loaded, key_prefix):
    env = {**stack_env, "DATABASE_URL": demo_dsn, "MESH_KEY_PREFIX": f"{key_prefix}-feat-{uuid.uuid4().hex[:6]}"}
    running = start_stack_on_free_ports(tmp_path_factory.mktemp("feature-stack"), env, dev_keys)
    yield running
    running.stop()


class Loaded:
    """Stands in for DemoDataLoad: its report, at once."""

    def __init__(self, report):
        self.report = report

    def wait(self, timeout=None):
        return self.report


def materialise(stack, report) -> tuple[demo_setup.DemoFeatures, list[str]]:
    lines: list[str] = []
    features = demo_setup.DemoFeatures(stack.grpc_addr, stack.token, Loaded(report), wait_seconds=120,
                                       out=lines.append)
    assert features.wait(150)
    return features, lines


@pytest.fixture(scope="module")
def full(demo_stack, loaded):
    assert loaded.loaded  # a new database: loaded now, so FULL
    return materialise(demo_stack, loaded)


async def test_a_fresh_load_is_materialised_in_full(full, demo_dsn):
    features, lines = full
    assert features.mode == "FULL" and len(lines) == 1 and lines[0] == features.outcome
    conn = await asyncpg.connect(demo_dsn)
    try:
        users, items = await conn.fetchrow("SELECT count(DISTINCT user_id), count(DISTINCT item_id) "
                                           "FROM demo_interactions")
    finally:
        await conn.close()
    written = {job.feature_view: job.entities_written for job in features.jobs}
    assert written == {"item_catalog": 300, "item_engagement": items, "user_engagement": users,
                       "user_profile": 2_000}, lines
    assert lines[0].startswith("demo features: materialised item_catalog 300, ") and "(FULL, " in lines[0]


def test_data_found_already_is_materialised_incrementally(demo_stack, loaded, full):
    again = demo_data.LoadReport(False, "already loaded", loaded.seed, loaded.users, loaded.items, loaded.events,
                                 loaded.anchor)
    features, lines = materialise(demo_stack, again)
    assert features.mode == "INCREMENTAL" and all(job.entities_written == 0 for job in features.jobs), lines


async def test_a_view_busy_with_a_scheduled_run_is_waited_for(demo_stack, loaded, full, demo_dsn):
    """`make up` runs the scheduler too: its first look may take a view's lock before make up's
    own run asks; make up then asks again until the view is free."""
    from ml_serving_server.services.pipeline.postgres_store import PostgresMaterializationState
    state = await PostgresMaterializationState.connect(demo_dsn)
    try:
        lock = await state.try_lock("user_profile")  # as a scheduled run would hold it
        assert lock is not None
        again = demo_data.LoadReport(False, "already loaded", loaded.seed, loaded.users, loaded.items,
                                     loaded.events, loaded.anchor)
        features = demo_setup.DemoFeatures(demo_stack.grpc_addr, demo_stack.token, Loaded(again), wait_seconds=60,
                                           out=lambda line: None)
        await asyncio.sleep(2.5)
        assert not features.wait(0)  # still asking
        await lock.release()
        assert await asyncio.to_thread(features.wait, 60)
        assert features.mode == "INCREMENTAL" and len(features.jobs) == 4, features.outcome
    finally:
        await state.close()


def test_no_demo_data_no_materialisation(demo_stack):
    features, lines = materialise(demo_stack, None)
    assert (features.mode, lines, features.jobs) == ("", [], [])
    assert "not materialised" in demo_setup.features_banner(demo_stack.front_door, features)


def test_a_failure_is_a_warning(loaded):
    features = demo_setup.DemoFeatures("127.0.0.1:1", "token", Loaded(loaded), wait_seconds=2, out=lambda line: None)
    assert features.wait(30)
    assert features.outcome.startswith("warning: demo features: the FULL materialisation could not run")


def _commands(text: str) -> list[str]:
    """The banner's example commands, continuation lines joined."""
    commands, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and not stripped.startswith(("curl ", ".venv/bin/grpcurl ", "ML_SERVING_ADDR=")):
            continue
        current += stripped.removesuffix("\\")
        if stripped.endswith("\\"):
            continue
        commands.append(current)
        current = ""
    return commands


async def test_the_banner_feature_examples_work_as_printed(demo_stack, demo_dsn, full):
    features, _ = full
    text = demo_setup.features_banner(demo_stack.front_door, features)
    assert features.outcome.removeprefix("demo features: ") in text
    commands = _commands(text)
    assert [c.split()[0] for c in commands] == ["curl", "curl", ".venv/bin/grpcurl",
                                                f"ML_SERVING_ADDR={demo_stack.front_door}"]
    env = {**os.environ, "ML_SERVING_TOKEN": demo_stack.token}
    outputs = []
    for command in commands:
        done = await asyncio.to_thread(subprocess.run, ["bash", "-c", command], capture_output=True, text=True,
                                       env=env, cwd=ROOT, timeout=60)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
        outputs.append(done.stdout)
    rest, schema, grpc_answer, python_answer = outputs

    conn = await asyncpg.connect(demo_dsn)
    try:
        profile = {str(r["user_id"]): r for r in await conn.fetch(
            "SELECT * FROM demo_users WHERE user_id = ANY($1::bigint[])", [int(u) for u in demo_setup.SAMPLE_USERS])}
        clicks = await conn.fetchval("SELECT count(*) FILTER (WHERE clicked AND event_time > now() - interval '7 days')"
                                     " FROM demo_interactions WHERE user_id = $1", int(demo_setup.SAMPLE_USERS[0]))
    finally:
        await conn.close()

    entities = json.loads(rest)["entities"]
    assert [e["entityId"] for e in entities] == list(demo_setup.SAMPLE_USERS)
    for entity in entities:
        row, values = profile[entity["entityId"]], entity["features"]
        assert entity["found"] and values["country"]["source"] == "FEATURE_VALUE_SOURCE_ONLINE_STORE"
        assert values["country"]["value"]["stringValue"] == row["country"]
        assert values["taste"]["value"]["doubleListValue"]["values"] == pytest.approx(list(row["taste"]))
    assert json.loads(schema)["featureViews"][0]["name"] == "user_engagement"
    answered = json.loads(grpc_answer)["entities"][0]
    assert answered["found"] and int(answered["features"]["clicks_7d"]["value"]["int64_value"]) == clicks
    first = demo_setup.SAMPLE_USERS[0]
    assert f"{int(first)}: {{" in python_answer and f"'country': '{profile[first]['country']}'" in python_answer


def test_make_ups_banner_has_the_feature_section_only_with_demo_data(demo_stack, loaded, full):
    without = run_mesh.banner(demo_stack, "redis://...", "postgresql://...")
    assert "/api/v1/ml/features/get" not in without
    with_data = run_mesh.banner(demo_stack, "redis://...", "postgresql://...", data=loaded, features=full[0])
    assert demo_setup.features_banner(demo_stack.front_door, full[0]) in with_data


async def test_the_readmes_feature_example_runs_as_written(demo_stack, demo_dsn, full):
    """The README's client example for features (the second python block of "Python client")."""
    section = (ROOT / "README.md").read_text().split("## Python client", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.*?)```", section, re.DOTALL)[1]
    assert "get_feature_values" in code
    env = {**os.environ, "ML_SERVING_TOKEN": demo_stack.token, "ML_SERVING_ADDR": demo_stack.front_door}
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True,
                                   env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    conn = await asyncpg.connect(demo_dsn)
    try:
        country, premium = await conn.fetchrow("SELECT country, is_premium FROM demo_users WHERE user_id = 123")
    finally:
        await conn.close()
    first, *_, last = done.stdout.strip().splitlines()
    assert first.startswith(f"{country} [") and first.endswith("] None"), done.stdout
    assert "clicks_7d__event_time" in done.stdout and "entity_id" in done.stdout
    assert last == str({123: {"country": country, "is_premium": premium}})

"""Killing the materialiser mid-run (SIGKILL of the mesh process hosting the pipeline) and starting
it again leaves the online store exactly equal to a from-scratch materialisation.

The module loads the demo data (ml_serving_tools.demo_data) into a database of its own, large
enough in users that a FULL materialisation of the real `user_profile` view (features/users.yaml)
in small batches is caught midway; the killed and the restarted process share one Redis key
prefix, the from-scratch run (an in-process server on the same database) writes under another."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import asyncpg
import grpc
import pytest
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb
from mnbara.mlserving.pipeline.v1 import pipeline_pb2_grpc

from ml_serving_server.app import build_server
from ml_serving_server.services.pipeline.declarations import load_directory
from ml_serving_server.services.pipeline.redis_online_store import RedisOnlineStore
from ml_serving_server.services.pipeline.settings import PipelineSettings
from ml_serving_tools import demo_data
from ml_serving_tools import stack as stack_module
from ml_serving_tools.devauth import mint_token

from ...support import error_info, private_database, test_runtime

pytestmark = pytest.mark.timeout(180)

USERS = 2_000
BATCH = 10  # 200 batches of a few milliseconds each: a FULL run lasts long enough to be caught midway
KILL_AFTER = USERS // 10  # entities written before the kill (then 180 batches are left to go)
VIEW = "user_profile"
DEADLINE_SECONDS = 60.0


@pytest.fixture(scope="module")
def demo_dsn(postgres_server):
    with private_database(postgres_server) as url:
        report = asyncio.run(demo_data.load(url, users=USERS, items=20, events=200))
        assert report.loaded, report.line()
        yield url


@pytest.fixture
def prefixes(key_prefix):
    """Two Redis key prefixes of this test, the killed-and-restarted mesh's and the from-scratch
    run's, under the session's (their keys go with the session's)."""
    suffix = uuid.uuid4().hex[:6]
    return f"{key_prefix}-killed-{suffix}", f"{key_prefix}-scratch-{suffix}"


@pytest.fixture
def processes():
    """The mesh processes this test starts; each is stopped (SIGTERM, then SIGKILL) at the end."""
    started: list = []
    yield started
    for proc in started:
        if proc.poll() is None:
            stack_module.stop(proc)


def start_pipeline(tmp_path, name: str, redis_url: str, dsn: str, prefix: str, dev_keys, started: list) -> str:
    addr = f"127.0.0.1:{stack_module.free_port()}"
    env = {"REDIS_URL": redis_url, "DATABASE_URL": dsn, "MESH_KEY_PREFIX": prefix, "MESH_SERVICES": "pipeline",
           "MESH_GRPC_ADDR": addr, "MESH_METRICS_ADDR": "", "MESH_SHUTDOWN_DELAY_SECONDS": "0",
           "MESH_ACCESS_LOG": "false", "LOG_LEVEL": "INFO", "PIPELINE_MATERIALIZATION_BATCH_ENTRIES": str(BATCH),
           "AUTH_JWKS_FILE": str(dev_keys.jwks), "AUTH_ISSUER": dev_keys.issuer, "AUTH_AUDIENCE": dev_keys.audience}
    started.append(stack_module.start_mesh(env, tmp_path / f"{name}.log"))
    return addr


async def materialize(addr: str, token: str, *, mode=pb.MATERIALIZATION_MODE_FULL, wait: bool) -> pb.MaterializationJob:
    """MaterializeFeatures of the view; while the lock of a killed process's job lingers
    (MATERIALIZATION_IN_PROGRESS), asked again until the deadline."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = pipeline_pb2_grpc.PipelineServiceStub(channel)
        while True:
            try:
                answer = await stub.MaterializeFeatures(
                    pb.MaterializeFeaturesRequest(feature_views=[VIEW], mode=mode, wait=wait),
                    metadata=[("authorization", f"Bearer {token}")], timeout=DEADLINE_SECONDS)
                (job,) = answer.jobs
                return job
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION or time.monotonic() > deadline \
                        or error_info(error).reason != "MATERIALIZATION_IN_PROGRESS":
                    raise
            await asyncio.sleep(0.1)


async def job_row(conn, job_id: str):
    return await conn.fetchrow("SELECT state, entities_total, entities_written, resume_after, resumed_job_id, "
                               "error_message FROM pipeline_materialization_jobs WHERE job_id = $1::uuid", job_id)


def without_write_time(dump: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    return {key: {k: v for k, v in fields.items() if k != "c"} for key, fields in dump.items()}


async def test_a_materialiser_killed_midway_resumes_to_what_a_run_from_scratch_writes(
        tmp_path, demo_dsn, redis_url, prefixes, processes, dev_keys):
    killed_prefix, scratch_prefix = prefixes
    token = mint_token(dev_keys, ["pipeline.write"], subject="materializer-killed")
    view = load_directory(PipelineSettings().feature_views_path()).view(VIEW, field="feature_view")
    conn = await asyncpg.connect(demo_dsn)
    resumed_store = RedisOnlineStore.from_url(redis_url, killed_prefix, 5.0)
    scratch_store = RedisOnlineStore.from_url(redis_url, scratch_prefix, 5.0)
    try:
        # A FULL materialisation, not waited for, caught midway, and the process SIGKILLed.
        addr = start_pipeline(tmp_path, "first", redis_url, demo_dsn, killed_prefix, dev_keys, processes)
        queued = await materialize(addr, token, wait=False)
        assert queued.state == pb.JOB_STATE_QUEUED
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            row = await job_row(conn, queued.job_id)
            assert row["state"] in ("QUEUED", "RUNNING"), f"the job ended before it could be killed: {dict(row)}"
            if row["entities_total"] and KILL_AFTER <= row["entities_written"] < row["entities_total"]:
                break
            assert time.monotonic() < deadline, f"the job was not caught midway in {DEADLINE_SECONDS} s: {dict(row)}"
            await asyncio.sleep(0.005)
        processes[0].send_signal(signal.SIGKILL)
        assert processes[0].wait(timeout=10) == -signal.SIGKILL

        killed = await job_row(conn, queued.job_id)
        assert killed["state"] == "RUNNING" and killed["entities_total"] == USERS
        written, resume_after = killed["entities_written"], int(killed["resume_after"])
        assert KILL_AFTER <= written < USERS and written % BATCH == 0
        assert written == await conn.fetchval("SELECT count(*) FROM demo_users WHERE user_id <= $1", resume_after)
        online_at_kill = len(await resumed_store.dump(view))
        assert written <= online_at_kill <= written + BATCH  # at most the batch in flight beyond the progress
        assert await conn.fetchval("SELECT count(*) FROM pipeline_feature_view_state WHERE feature_view = $1",
                                   VIEW) == 0  # the watermark moves only when a job succeeds

        # A new process, the same key prefix: the next FULL run resumes after the last written key.
        addr = start_pipeline(tmp_path, "second", redis_url, demo_dsn, killed_prefix, dev_keys, processes)
        resumed = await materialize(addr, token, wait=True)
        assert (resumed.state, resumed.mode, resumed.resumed_job_id) == (
            pb.JOB_STATE_SUCCEEDED, pb.MATERIALIZATION_MODE_FULL, queued.job_id)
        assert resumed.entities_written == resumed.entities_total == USERS - written
        interrupted = await job_row(conn, queued.job_id)
        assert interrupted["state"] == "FAILED" and resumed.job_id in interrupted["error_message"]

        # The keys up to the resume point kept the killed run's writes; the rest are the new run's.
        resumed_dump = await resumed_store.dump(view)
        started_us = resumed.start_time.ToMicroseconds()
        kept = {key for key, fields in resumed_dump.items() if int(fields["c"]) < started_us}
        assert kept == {str(user) for user in range(resume_after + 1)}  # demo users are 0..USERS-1

        # And the resumed job moved the watermark to its window's end: nothing is left to do.
        again = await materialize(addr, token, mode=pb.MATERIALIZATION_MODE_INCREMENTAL, wait=True)
        assert (again.state, again.mode, again.entities_written) == (
            pb.JOB_STATE_SUCCEEDED, pb.MATERIALIZATION_MODE_INCREMENTAL, 0)

        # From scratch, under another prefix (an in-process pipeline on the same database, default
        # batches): the same records, apart from when each was written.
        runtime = test_runtime(redis_url, scratch_prefix, database_url=demo_dsn, services=("pipeline",))
        server = await build_server(runtime, service_settings={"pipeline": PipelineSettings()})
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
                answer = await pipeline_pb2_grpc.PipelineServiceStub(channel).MaterializeFeatures(
                    pb.MaterializeFeaturesRequest(feature_views=[VIEW], mode=pb.MATERIALIZATION_MODE_FULL, wait=True),
                    timeout=DEADLINE_SECONDS)
        finally:
            await server.stop(1.0)
        (scratch,) = answer.jobs
        assert (scratch.state, scratch.entities_written, scratch.resumed_job_id) == (
            pb.JOB_STATE_SUCCEEDED, USERS, "")
        scratch_dump = await scratch_store.dump(view)
        assert len(resumed_dump) == len(scratch_dump) == USERS
        assert without_write_time(resumed_dump) == without_write_time(scratch_dump)
    finally:
        await conn.close()
        await resumed_store.close()
        await scratch_store.close()

"""Materialisation's rules over in-memory ports: incremental by watermark, full on a changed
definition, batches, progress and resumption after a failure, one run per view."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ml_serving_server.errors import FailedPrecondition, InvalidArgument, NotFound
from ml_serving_server.services.pipeline.domain.materialization import FULL, INCREMENTAL, Materializer
from ml_serving_server.services.pipeline.domain.schema import FeatureSchema

from ..fakes import T0, FakeOnline, FakeSource, FakeState, view


def make(*views, batch_size=10):
    views = views or (view(),)
    source, online, state = FakeSource(), FakeOnline(), FakeState()
    materializer = Materializer(FeatureSchema(views), source, online, state, batch_size=batch_size)
    return materializer, source, online, state


def seed(source, n, start=0, name="scores", minutes=0):
    for key in range(start, start + n):
        source.put(name, key, T0 + timedelta(minutes=minutes + key), score=key / 2, tags=[str(key)])


async def test_a_first_run_writes_every_entity_in_batches_and_sets_the_watermark():
    materializer, source, online, state = make(batch_size=10)
    seed(source, 25)
    (job,) = await materializer.materialize([], wait=True)
    assert (job.state, job.mode, job.entities_written, job.entities_total) == ("SUCCEEDED", FULL, 25, 25)
    assert [len(keys) for _, keys in online.writes] == [10, 10, 5]
    assert state.states["scores"].materialized_until == T0 + timedelta(minutes=24) == job.window_end
    assert online.hashes[("scores", 3)].values == {"score": 1.5, "tags": ["3"]}
    assert online.hashes[("scores", 3)].event_time == T0 + timedelta(minutes=3)


async def test_incremental_rewrites_only_the_entities_changed_since_the_watermark():
    materializer, source, online, state = make()
    seed(source, 20)
    await materializer.materialize(["scores"], wait=True)
    online.writes.clear()
    source.put("scores", 4, T0 + timedelta(hours=5), score=99.0, tags=[])
    source.put("scores", 30, T0 + timedelta(hours=6), score=1.0, tags=["new"])
    (job,) = await materializer.materialize(["scores"], INCREMENTAL, wait=True)
    assert (job.mode, job.entities_written) == (INCREMENTAL, 2)
    assert online.writes == [("scores", [4, 30])]
    assert job.window_start == T0 + timedelta(minutes=19) and job.window_end == T0 + timedelta(hours=6)
    assert online.hashes[("scores", 4)].values["score"] == 99.0
    (again,) = await materializer.materialize(["scores"], wait=True)
    assert again.entities_written == 0 and len(online.writes) == 1


async def test_a_changed_definition_forces_a_full_run():
    materializer, source, online, state = make()
    seed(source, 5)
    await materializer.materialize([], wait=True)
    changed = view(query="SELECT user_id, score, tags, t FROM s WHERE true")
    other = Materializer(FeatureSchema((changed,)), source, online, state)
    (job,) = await other.materialize([], INCREMENTAL, wait=True)
    assert (job.mode, job.entities_written) == (FULL, 5)
    assert state.states["scores"].definition_hash == changed.definition_hash


async def test_full_rewrites_every_entity():
    materializer, source, online, _ = make()
    seed(source, 7)
    await materializer.materialize([], wait=True)
    (job,) = await materializer.materialize([], FULL, wait=True)
    assert (job.mode, job.entities_written) == (FULL, 7)


async def test_a_failed_batch_is_resumed_and_the_result_equals_a_run_from_scratch():
    materializer, source, online, state = make(batch_size=10)
    seed(source, 35)
    online.fail_on_write = 3  # batches 1 and 2 are written, the third fails
    (failed,) = await materializer.materialize([], wait=True)
    assert failed.state == "FAILED" and failed.error.reason == "INTERNAL"
    assert failed.entities_written == 20 and failed.resume_after == "19"
    assert "scores" not in state.states  # no watermark until the run completes
    online.fail_on_write = None
    (resumed,) = await materializer.materialize([], wait=True)
    assert resumed.state == "SUCCEEDED" and resumed.resumed_job_id == failed.job_id
    assert resumed.entities_written == 15 and [keys[0] for _, keys in online.writes[-2:]] == [20, 30]

    _, _, scratch, _ = fresh = make(batch_size=10)
    fresh[1].tables = source.tables
    await fresh[0].materialize([], FULL, wait=True)
    assert online.snapshot("scores") == scratch.snapshot("scores")


async def test_the_next_batch_is_read_while_one_is_written_and_a_failed_read_keeps_the_order():
    materializer, source, online, state = make(batch_size=10)
    seed(source, 45)
    source.fail_on_rows = 4  # the 4th batch's read fails, while the 3rd is written
    (failed,) = await materializer.materialize([], wait=True)
    assert failed.state == "FAILED" and failed.error.reason == "SOURCE_UNAVAILABLE"
    # Batches are written in order and the progress names the last one written: 3 of 5.
    assert [keys[0] for _, keys in online.writes] == [0, 10, 20]
    assert failed.entities_written == 30 and failed.resume_after == "29"
    source.fail_on_rows = None
    (resumed,) = await materializer.materialize([], wait=True)
    assert resumed.state == "SUCCEEDED" and resumed.entities_written == 15
    assert [keys[0] for _, keys in online.writes] == [0, 10, 20, 30, 40]


async def test_one_materialisation_per_view_at_a_time():
    materializer, source, _, state = make()
    state.locked.add("scores")
    with pytest.raises(FailedPrecondition) as caught:
        await materializer.materialize(["scores"])
    assert caught.value.reason.name == "MATERIALIZATION_IN_PROGRESS"
    assert caught.value.metadata["feature_view"] == "scores"


async def test_without_wait_the_queued_job_is_answered_and_runs():
    materializer, source, online, state = make()
    seed(source, 3)
    (job,) = await materializer.materialize([])
    assert job.state == "QUEUED"
    while state.locked:
        import asyncio
        await asyncio.sleep(0.01)
    assert state.jobs[-1].state == "SUCCEEDED" and len(online.hashes) == 3


async def test_the_request_is_checked():
    materializer, *_ = make()
    with pytest.raises(NotFound):
        await materializer.materialize(["nope"])
    with pytest.raises(InvalidArgument) as caught:
        await materializer.materialize(["scores", "Bad Name"])
    assert caught.value.field == "feature_views[1]"
    with pytest.raises(InvalidArgument) as caught:
        await materializer.materialize([], INCREMENTAL, start_time=T0)
    assert caught.value.field == "start_time"
    with pytest.raises(InvalidArgument) as caught:
        await materializer.materialize([], FULL, start_time=T0, end_time=T0 - timedelta(1))
    assert caught.value.reason.name == "INVALID_TIME_RANGE"


async def test_a_source_down_fails_the_job_as_unavailable():
    materializer, source, *_ = make()
    source.down = True
    (job,) = await materializer.materialize([], wait=True)
    assert (job.state, job.error.reason, job.error.code) == ("FAILED", "SOURCE_UNAVAILABLE", "UNAVAILABLE")


async def test_a_job_is_read_by_its_id_and_a_bad_or_unknown_id_is_refused():
    materializer, source, _, _ = make(batch_size=10)
    seed(source, 25)
    (done,) = await materializer.materialize([], wait=True)
    read = await materializer.job(done.job_id.upper())  # any spelling of the UUID
    assert (read.job_id, read.state, read.entities_written, read.entities_total) == (done.job_id, "SUCCEEDED", 25, 25)
    with pytest.raises(InvalidArgument) as bad:
        await materializer.job("x" * 5000)
    assert bad.value.field == "job_id" and len(bad.value.message) < 200
    with pytest.raises(NotFound) as unknown:
        await materializer.job("00000000-0000-0000-0000-000000000000")
    assert unknown.value.reason.name == "MATERIALIZATION_JOB_NOT_FOUND"


async def test_a_full_run_removes_the_online_entities_the_source_no_longer_has():
    materializer, source, online, state = make(batch_size=10)
    seed(source, 30)
    await materializer.materialize([], wait=True)
    for key in (3, 17, 29):
        del source.tables["scores"][key]
    (incremental,) = await materializer.materialize([], wait=True)
    assert incremental.entities_deleted == 0 and len(online.snapshot("scores")) == 30  # no tombstones to see
    (full,) = await materializer.materialize([], FULL, wait=True)
    assert full.state == "SUCCEEDED" and full.entities_deleted == 3 and full.entities_written == 27
    assert sorted(online.snapshot("scores")) == sorted(source.tables["scores"])
    (windowed,) = await materializer.materialize([], FULL, start_time=T0 + timedelta(minutes=20), wait=True)
    assert windowed.entities_deleted == 0 and len(online.snapshot("scores")) == 27  # a window sees only its rows


async def test_an_entity_back_in_the_source_since_the_key_scan_is_not_removed():
    materializer, source, online, state = make(batch_size=10)
    seed(source, 5)
    await materializer.materialize([], wait=True)
    del source.tables["scores"][4]
    real_changed_keys = source.changed_keys

    async def scan_then_reinsert(view, **bounds):
        keys = await real_changed_keys(view, **bounds)
        seed(source, 1, start=4)  # back in the source after the scan (and read through meanwhile)
        return keys
    source.changed_keys = scan_then_reinsert
    (full,) = await materializer.materialize([], FULL, wait=True)
    assert full.entities_deleted == 0 and 4 in {key for _, key in online.hashes}

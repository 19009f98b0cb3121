"""Retraining runs over gRPC, with tokens checked: trigger (checked by the demo model's own
trainer), status, list, cancel, their errors, and PostgreSQL down. No worker runs here, so runs
stay queued (tests/pipeline/e2e trains them)."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import grpc
import pytest
from google.protobuf import struct_pb2
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb

from ml_serving_tools.devauth import mint_token

from ...registry.faults import CuttableProxy
from ...support import error_info
from .conftest import pipeline_server, stub_to
from .test_dependencies_down import _via, failed

MODEL = "recommendation-model"  # the trainer PIPELINE_TRAINERS names by default


def params(**values) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(values)
    return out


async def trigger(stub, **fields) -> pb.TriggerRetrainingResponse:
    return await stub.TriggerRetraining(pb.TriggerRetrainingRequest(**{"model_name": MODEL, **fields}))


async def test_a_trigger_is_queued_at_once_and_its_status_read_back(stub):
    answer = await trigger(stub, reason="weekly refresh", parameters=params(epochs=2))
    run = answer.run
    assert answer.run_id == run.run_id and not answer.duplicate
    assert (run.state, run.trigger, run.model_name, run.reason) == (
        pb.RUN_STATE_QUEUED, pb.RUN_TRIGGER_MANUAL, MODEL, "weekly refresh")
    assert run.parameters["epochs"] == 2 and "max_rows" in run.parameters  # completed with the trainer's defaults
    assert run.attempt == 0 and run.max_attempts >= 1 and run.create_time.seconds > 0
    status = (await stub.GetRetrainingStatus(pb.GetRetrainingStatusRequest(run_id=run.run_id))).run
    assert status == run


async def test_a_repeated_idempotency_key_answers_the_first_run(stub):
    key = f"key-{uuid.uuid4().hex}"
    first = await trigger(stub, idempotency_key=key)
    again = await trigger(stub, idempotency_key=key, reason="again")
    assert again.duplicate and again.run_id == first.run_id and again.run.reason == ""


@pytest.mark.parametrize("fields, field", [
    ({"model_name": ""}, "model_name"),
    ({"parameters": params(epochs=0)}, "parameters.epochs"),
    ({"parameters": params(colour="red")}, "parameters.colour"),
    ({"reason": "x" * 5000}, "reason"),
    ({"idempotency_key": "k" * 200}, "idempotency_key"),
])
async def test_a_bad_trigger_is_invalid_naming_its_field(stub, fields, field):
    error = await failed(trigger(stub, **fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(error).metadata["field"] == field and len(error.details()) < 400


async def test_a_model_without_a_trainer_is_not_found(stub):
    error = await failed(trigger(stub, model_name="no-such-model"))
    assert (error.code(), error_info(error).reason) == (grpc.StatusCode.NOT_FOUND, "NO_TRAINER_FOR_MODEL")


async def test_runs_are_listed_newest_first_by_page_and_filtered(stub):
    ids = [(await trigger(stub, reason=f"list {i}")).run_id for i in range(3)]
    first = await stub.ListRetrainingRuns(pb.ListRetrainingRunsRequest(model_name=MODEL, page_size=2))
    assert [r.run_id for r in first.runs] == ids[::-1][:2] and first.next_page_token
    second = await stub.ListRetrainingRuns(pb.ListRetrainingRunsRequest(
        model_name=MODEL, page_size=2, page_token=first.next_page_token))
    assert second.runs[0].run_id == ids[0]
    cancelled = await stub.ListRetrainingRuns(pb.ListRetrainingRunsRequest(states=[pb.RUN_STATE_CANCELLED]))
    assert all(r.state == pb.RUN_STATE_CANCELLED for r in cancelled.runs)
    for request, field in ((pb.ListRetrainingRunsRequest(states=[42]), "states[0]"),
                           (pb.ListRetrainingRunsRequest(page_size=5000), "page_size"),
                           (pb.ListRetrainingRunsRequest(page_token="nope"), "page_token")):
        error = await failed(stub.ListRetrainingRuns(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error_info(error).metadata["field"] == field


async def test_a_queued_run_is_cancelled_and_unknown_or_malformed_ids_are_refused(stub):
    run_id = (await trigger(stub)).run_id
    cancelled = (await stub.CancelRetrainingRun(pb.CancelRetrainingRunRequest(run_id=run_id))).run
    assert cancelled.state == pb.RUN_STATE_CANCELLED and cancelled.end_time.seconds > 0
    again = (await stub.CancelRetrainingRun(pb.CancelRetrainingRunRequest(run_id=run_id))).run
    assert again.state == pb.RUN_STATE_CANCELLED
    unknown = str(uuid.uuid4())
    for call in (stub.CancelRetrainingRun(pb.CancelRetrainingRunRequest(run_id=unknown)),
                 stub.GetRetrainingStatus(pb.GetRetrainingStatusRequest(run_id=unknown))):
        error = await failed(call)
        assert (error.code(), error_info(error).reason) == (grpc.StatusCode.NOT_FOUND, "RUN_NOT_FOUND")
    error = await failed(stub.GetRetrainingStatus(pb.GetRetrainingStatusRequest(run_id="x" * 1000)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and len(error.details()) < 300


async def test_changing_runs_needs_pipeline_write(server, dev_keys):
    async with stub_to(server, mint_token(dev_keys, ["pipeline.read"], subject="reader")) as reader:
        error = await failed(trigger(reader))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        error = await failed(reader.CancelRetrainingRun(pb.CancelRetrainingRunRequest(run_id=str(uuid.uuid4()))))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        listed = await reader.ListRetrainingRuns(pb.ListRetrainingRunsRequest(page_size=1))
        assert listed is not None


async def test_postgresql_down_is_unavailable_and_nothing_is_queued(features_dir, redis_url, key_prefix,
                                                                    database_url, dev_keys):
    proxy = await CuttableProxy("127.0.0.1", urlsplit(database_url).port or 5432).start()
    try:
        async with pipeline_server(features_dir, redis_url, f"{key_prefix}:{uuid.uuid4().hex[:6]}",
                                   _via(database_url, proxy.port), dev_keys, database_timeout_seconds=1.0) as server, \
                stub_to(server, mint_token(dev_keys)) as stub:
            key = f"down-{uuid.uuid4().hex}"
            proxy.cut_after(0)
            for call in (trigger(stub, idempotency_key=key),
                         stub.ListRetrainingRuns(pb.ListRetrainingRunsRequest())):
                error = await failed(call)
                assert (error.code(), error_info(error).reason) == (grpc.StatusCode.UNAVAILABLE,
                                                                    "STATE_STORE_UNAVAILABLE")
            proxy.revive()
            queued = await trigger(stub, idempotency_key=key)
            assert not queued.duplicate  # the call that failed stored nothing
    finally:
        await proxy.stop()


# ----- schedules -----

async def test_a_schedule_is_created_read_listed_and_deleted(stub):
    created = (await stub.CreateRetrainingSchedule(pb.CreateRetrainingScheduleRequest(schedule=pb.RetrainingSchedule(
        model_name=MODEL, cron="0 3 * * *", time_zone="Europe/Paris", parameters=params(epochs=2), reason="nightly",
        enabled=True, jitter_seconds=120)))).schedule
    assert created.schedule_id and created.next_run_time.seconds > 0 and created.created_by == "pipeline-tests"
    assert created.parameters["epochs"] == 2 and created.jitter_seconds == 120
    got = (await stub.GetRetrainingSchedule(pb.GetRetrainingScheduleRequest(schedule_id=created.schedule_id))).schedule
    assert got == created
    listed = await stub.ListRetrainingSchedules(pb.ListRetrainingSchedulesRequest(model_name=MODEL, page_size=1000))
    assert created.schedule_id in [s.schedule_id for s in listed.schedules]
    await stub.DeleteRetrainingSchedule(pb.DeleteRetrainingScheduleRequest(schedule_id=created.schedule_id))
    error = await failed(stub.GetRetrainingSchedule(pb.GetRetrainingScheduleRequest(schedule_id=created.schedule_id)))
    assert (error.code(), error_info(error).reason) == (grpc.StatusCode.NOT_FOUND, "SCHEDULE_NOT_FOUND")


@pytest.mark.parametrize("fields, field, reason", [
    ({"cron": "soon"}, "schedule.cron", "INVALID_CRON"),
    ({"time_zone": "Nowhere/City"}, "schedule.time_zone", "INVALID_TIME_ZONE"),
    ({"parameters": params(epochs=-1)}, "schedule.parameters.epochs", "INVALID_FIELD"),
])
async def test_a_bad_schedule_is_invalid_naming_its_field(stub, fields, field, reason):
    schedule = pb.RetrainingSchedule(**{"model_name": MODEL, "cron": "0 3 * * *", **fields})
    error = await failed(stub.CreateRetrainingSchedule(pb.CreateRetrainingScheduleRequest(schedule=schedule)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error_info(error).metadata["field"], error_info(error).reason) == (field, reason)


async def test_schedules_need_pipeline_admin(server, dev_keys):
    async with stub_to(server, mint_token(dev_keys, ["pipeline.read", "pipeline.write"], subject="writer")) as writer:
        error = await failed(writer.CreateRetrainingSchedule(pb.CreateRetrainingScheduleRequest(
            schedule=pb.RetrainingSchedule(model_name=MODEL, cron="0 3 * * *"))))
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED

"""Random bytes and random view names as requests of the feature store's RPCs, to the in-process
mesh: the answer is a reply or a status the pipeline means (never INTERNAL or UNKNOWN), with the
pipeline's ErrorInfo, every INVALID_ARGUMENT naming its field, nothing logged as an error.
Retraining runs and schedules and the monitor's RPCs too.

A request that would really materialise the declared views is not sent: the session mesh has
their names but not their source tables, so its jobs would fail in the background, logging
into later tests.

Deterministic (derandomize, no example database) and bounded."""

from __future__ import annotations

import logging

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb

from ..support import error_info

PATH = "/mnbara.mlserving.pipeline.v1.PipelineService/GetFeatureSchema"
MEANT = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
NAMES = st.one_of(st.text(max_size=80), st.sampled_from(["", "user_profile", "item_catalog", "USER_PROFILE",
                                                         "user_profile\x00", "é" * 70, "x" * 70_000]))


async def answer(channel, body: bytes) -> None:
    try:
        reply = await channel.unary_unary(PATH, response_deserializer=pb.GetFeatureSchemaResponse.FromString)(
            body, timeout=10)
    except grpc.aio.AioRpcError as error:
        assert error.code() in MEANT, (error.code(), error.details())
        info = error_info(error)
        assert info.domain == "pipeline.mlserving.mnbara"
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            assert error.details().startswith(f"{info.metadata['field']}: ")
        assert len(error.details().encode()) <= 512
    else:
        assert reply.version and all(view.definition_hash for view in reply.feature_views)


def assert_quiet(caplog) -> None:
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not noisy, noisy[0].getMessage()


@settings(max_examples=100, **SETTINGS)
@given(body=st.binary(max_size=96))
async def test_random_bytes_get_a_meant_answer(channel, caplog, body):
    await answer(channel, body)
    assert_quiet(caplog)


@settings(max_examples=100, **SETTINGS)
@given(name=NAMES)
async def test_any_view_name_gets_a_meant_answer(channel, caplog, name):
    await answer(channel, pb.GetFeatureSchemaRequest(feature_view=name).SerializeToString())
    assert_quiet(caplog)


SERVICE = "/mnbara.mlserving.pipeline.v1.PipelineService/"
OTHER_MEANT = {
    "GetFeatures": {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE},
    "MaterializeFeatures": {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND},
    "GetMaterializationJob": {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND},
    "GetTrainingSet": {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                       grpc.StatusCode.FAILED_PRECONDITION},
    # Retraining and the monitor: a random request is refused naming a field, or finds nothing.
    **dict.fromkeys(["TriggerRetraining", "GetRetrainingStatus", "ListRetrainingRuns", "CancelRetrainingRun",
                     "CreateRetrainingSchedule", "GetRetrainingSchedule", "ListRetrainingSchedules",
                     "DeleteRetrainingSchedule", "RecordMetric", "BatchRecordMetrics", "ListAlerts",
                     "CreateAlertRule", "GetAlertRule", "ListAlertRules", "UpdateAlertRule", "DeleteAlertRule"],
                    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                     grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS}),
}


def _would_materialise(body: bytes) -> bool:
    try:
        request = pb.MaterializeFeaturesRequest.FromString(body)
    except Exception:  # noqa: BLE001 - not a request: the server refuses it
        return False
    return all(name in ("user_profile", "user_engagement", "item_catalog", "item_engagement")
               for name in request.feature_views)


async def other_answer(channel, method: str, body: bytes) -> None:
    if method == "GetTrainingSet":
        call = channel.unary_stream(SERVICE + method)(body, timeout=10)
        reply = None
        try:
            async for reply in call:
                pass
        except grpc.aio.AioRpcError as error:
            return _check_error(error, OTHER_MEANT[method])
        return
    try:
        await channel.unary_unary(SERVICE + method)(body, timeout=10)
    except grpc.aio.AioRpcError as error:
        _check_error(error, OTHER_MEANT[method])


def _check_error(error: grpc.aio.AioRpcError, meant: set) -> None:
    assert error.code() in meant, (error.code(), error.details())
    info = error_info(error)
    assert info.domain == "pipeline.mlserving.mnbara"
    if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
        assert error.details().startswith(f"{info.metadata['field']}: ")
    assert len(error.details().encode()) <= 512


@settings(max_examples=60, **SETTINGS)
@given(body=st.binary(max_size=96))
async def test_random_bytes_to_the_other_rpcs_get_a_meant_answer(channel, caplog, body):
    for method in OTHER_MEANT:
        if method == "MaterializeFeatures" and _would_materialise(body):
            continue
        await other_answer(channel, method, body)
    assert_quiet(caplog)

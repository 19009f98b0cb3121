"""gRPC <-> domain for retraining runs and schedules: the RPCs PipelineServicer takes from this mixin."""

from __future__ import annotations

from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from mnbara.mlserving.catalog import BY_NAME
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb

from ...errors import InvalidArgument
from ...runtime.auth import caller
from .domain.retraining import Run, RunState, Trigger
from .domain.runs import RetrainingRuns
from .domain.schedules import RetrainingSchedules, Schedule
from .wire import timestamp

ERROR_DOMAIN = BY_NAME["pipeline"].error_domain
_STATES = {RunState.QUEUED: pb.RUN_STATE_QUEUED, RunState.RUNNING: pb.RUN_STATE_RUNNING,
           RunState.SUCCEEDED: pb.RUN_STATE_SUCCEEDED, RunState.FAILED: pb.RUN_STATE_FAILED,
           RunState.CANCELLED: pb.RUN_STATE_CANCELLED}
_STATES_FROM_PB = {value: key for key, value in _STATES.items()}
_TRIGGERS = {Trigger.MANUAL: pb.RUN_TRIGGER_MANUAL, Trigger.SCHEDULE: pb.RUN_TRIGGER_SCHEDULE,
             Trigger.ALERT: pb.RUN_TRIGGER_ALERT}


def run_to_pb(run: Run) -> pb.RetrainingRun:
    message = pb.RetrainingRun(
        run_id=run.run_id, model_name=run.model_name, state=_STATES[run.state], trigger=_TRIGGERS[run.trigger],
        reason=run.reason, schedule_id=run.schedule_id, alert_id=run.alert_id,
        create_time=timestamp(run.create_time), start_time=timestamp(run.start_time), end_time=timestamp(run.end_time),
        heartbeat_time=timestamp(run.heartbeat_time), metrics=run.metrics, mlflow_run_id=run.mlflow_run_id,
        registered_version=run.registered_version, attempt=run.attempt, max_attempts=run.max_attempts,
        worker_id=run.worker_id, idempotency_key=run.idempotency_key, progress=run.progress, stage=run.stage,
        cancel_requested=run.cancel_requested)
    message.parameters.update(run.parameters)
    if run.error is not None:
        code = code_pb2.Code.Value(run.error.code) if run.error.code in code_pb2.Code.keys() else code_pb2.INTERNAL
        status = status_pb2.Status(code=code, message=run.error.message)
        status.details.add().Pack(error_details_pb2.ErrorInfo(reason=run.error.reason, domain=ERROR_DOMAIN))
        message.error.CopyFrom(status)
    return message


def schedule_to_pb(schedule: Schedule) -> pb.RetrainingSchedule:
    message = pb.RetrainingSchedule(
        schedule_id=schedule.schedule_id, model_name=schedule.model_name, cron=schedule.cron,
        time_zone=schedule.time_zone, reason=schedule.reason, enabled=schedule.enabled,
        next_run_time=timestamp(schedule.next_run_time), last_run_time=timestamp(schedule.last_run_time),
        last_run_id=schedule.last_run_id, created_by=schedule.created_by, create_time=timestamp(schedule.create_time),
        jitter_seconds=schedule.jitter_seconds)
    message.parameters.update(schedule.parameters)
    return message


def _states(values) -> list[RunState]:
    states = []
    for index, value in enumerate(values):
        if value not in _STATES_FROM_PB:
            raise InvalidArgument(f"states[{index}]", f"is not a run state: {value}")
        states.append(_STATES_FROM_PB[value])
    return states


class RetrainingRpcs:
    _runs: RetrainingRuns
    _schedules: RetrainingSchedules

    async def TriggerRetraining(self, request, context):
        run, duplicate = await self._runs.trigger(
            request.model_name, reason=request.reason, parameters=json_format.MessageToDict(request.parameters),
            idempotency_key=request.idempotency_key)
        return pb.TriggerRetrainingResponse(run_id=run.run_id, run=run_to_pb(run), duplicate=duplicate)

    async def GetRetrainingStatus(self, request, context):
        return pb.GetRetrainingStatusResponse(run=run_to_pb(await self._runs.get(request.run_id)))

    async def ListRetrainingRuns(self, request, context):
        runs, token = await self._runs.list(model_name=request.model_name, states=_states(request.states),
                                            page_size=request.page_size, page_token=request.page_token)
        return pb.ListRetrainingRunsResponse(runs=[run_to_pb(run) for run in runs], next_page_token=token)

    async def CancelRetrainingRun(self, request, context):
        return pb.CancelRetrainingRunResponse(run=run_to_pb(await self._runs.cancel(request.run_id)))

    async def CreateRetrainingSchedule(self, request, context):
        given = request.schedule
        schedule = await self._schedules.create(
            model_name=given.model_name, cron=given.cron, time_zone=given.time_zone,
            parameters=json_format.MessageToDict(given.parameters), reason=given.reason, enabled=given.enabled,
            jitter_seconds=given.jitter_seconds, created_by=caller())
        return pb.CreateRetrainingScheduleResponse(schedule=schedule_to_pb(schedule))

    async def GetRetrainingSchedule(self, request, context):
        return pb.GetRetrainingScheduleResponse(schedule=schedule_to_pb(await self._schedules.get(request.schedule_id)))

    async def ListRetrainingSchedules(self, request, context):
        found, token = await self._schedules.list(model_name=request.model_name, page_size=request.page_size,
                                                  page_token=request.page_token)
        return pb.ListRetrainingSchedulesResponse(schedules=[schedule_to_pb(s) for s in found], next_page_token=token)

    async def DeleteRetrainingSchedule(self, request, context):
        await self._schedules.delete(request.schedule_id)
        return pb.DeleteRetrainingScheduleResponse()

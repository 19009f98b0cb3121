"""InferenceService over gRPC: map the request, call the domain, map the response."""

from __future__ import annotations

import json
from typing import AsyncIterator

from google.protobuf import duration_pb2, json_format, struct_pb2
from google.rpc import status_pb2
from mnbara.mlserving.catalog import BY_NAME
from mnbara.mlserving.inference.v1 import inference_pb2 as pb
from mnbara.mlserving.inference.v1 import inference_pb2_grpc
from mnbara.mlserving.registry.v1 import registry_pb2

from ...errors import DomainError, InvalidArgument
from ...runtime import status as status_mapping
from .domain.model import PRODUCTION, LoadedModel, LoadSpec, ResolvedVersion, Selector, SelectorKind
from .domain.service import InferenceService

ERROR_DOMAIN = BY_NAME["inference"].error_domain
_STATUS = {"LOADING": pb.LOADED_MODEL_STATUS_LOADING, "READY": pb.LOADED_MODEL_STATUS_READY,
           "DEGRADED": pb.LOADED_MODEL_STATUS_DEGRADED, "UNAVAILABLE": pb.LOADED_MODEL_STATUS_UNAVAILABLE}
_WORKER = {"READY": pb.WORKER_STATUS_READY, "STARTING": pb.WORKER_STATUS_STARTING,
           "UNLOADING": pb.WORKER_STATUS_UNLOADING, "FAILED": pb.WORKER_STATUS_FAILED}
_STAGE_OF = {"DEVELOPMENT": registry_pb2.STAGE_DEVELOPMENT, "STAGING": registry_pb2.STAGE_STAGING,
             "PRODUCTION": registry_pb2.STAGE_PRODUCTION, "ARCHIVED": registry_pb2.STAGE_ARCHIVED}
_STAGE_NAME = {value: name for name, value in _STAGE_OF.items()}


def selector_of(request) -> Selector:
    which = request.WhichOneof("selector")
    if which is None:
        return PRODUCTION
    if which == "stage":
        if request.stage not in _STAGE_NAME:
            raise InvalidArgument("stage", "name a stage: STAGE_DEVELOPMENT, STAGE_STAGING, STAGE_PRODUCTION or "
                                           "STAGE_ARCHIVED")
        return Selector(SelectorKind.STAGE, _STAGE_NAME[request.stage])
    return Selector(SelectorKind(which), getattr(request, which))


def payload_of(message, field: str = "inputs") -> bytes:
    """The bytes TorchServe receives: a Struct as JSON, raw bytes as they are."""
    which = message.WhichOneof("input")
    if which == "raw_input":
        return message.raw_input
    if which == "inputs":
        return json.dumps(json_format.MessageToDict(message.inputs), separators=(",", ":")).encode()
    raise InvalidArgument(field, "an input is required (inputs or raw_input)")


def fill_output(response, output: bytes, raw: bool) -> None:
    """JSON output as a Value, anything else (or when asked) as raw bytes."""
    if not raw:
        try:
            _set_value(response.prediction, json.loads(output))
            return
        except (ValueError, TypeError, RecursionError):
            response.ClearField("prediction")
    response.raw_prediction = output


def _set_value(value: struct_pb2.Value, parsed: object) -> None:
    """Struct.update and ListValue.extend: several times faster than json_format.ParseDict."""
    if isinstance(parsed, dict):
        value.struct_value.SetInParent()  # set even when empty
        value.struct_value.update(parsed)
    elif isinstance(parsed, list):
        value.list_value.SetInParent()
        value.list_value.extend(parsed)
    elif parsed is None:
        value.null_value = struct_pb2.NULL_VALUE
    elif isinstance(parsed, bool):
        value.bool_value = parsed
    elif isinstance(parsed, (int, float)):
        value.number_value = parsed
    else:
        value.string_value = parsed


def resolved_model(resolved: ResolvedVersion) -> pb.ResolvedModel:
    return pb.ResolvedModel(model_name=resolved.model_name, model_version=resolved.version,
                            stage=_STAGE_OF.get(resolved.stage, registry_pb2.STAGE_UNSPECIFIED))


def _timeout(context) -> float | None:
    return context.time_remaining()


def _seconds(value: duration_pb2.Duration, field: str) -> float:
    seconds = value.seconds + value.nanos / 1e9
    if seconds < 0:
        raise InvalidArgument(field, "must not be negative")
    return seconds


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromMilliseconds(int(seconds * 1000))
    return value


def loaded_message(model: LoadedModel) -> pb.LoadedModel:
    return pb.LoadedModel(
        model_name=model.model_name, version=model.version,
        status=_STATUS.get(model.status, pb.LOADED_MODEL_STATUS_UNSPECIFIED),
        min_workers=model.min_workers, max_workers=model.max_workers, batch_size=model.batch_size,
        max_batch_delay=_duration(model.max_batch_delay_ms / 1000), response_timeout=_duration(model.response_timeout_s),
        workers=[pb.Worker(id=w.id, status=_WORKER.get(w.status, pb.WORKER_STATUS_UNSPECIFIED), pid=w.pid or 0)
                 for w in model.workers])


def error_status(error: DomainError) -> status_pb2.Status:
    """A batch item's error as Predict would have returned it."""
    code = status_mapping.status_code_for(error)
    rich = status_mapping.rich_status(code, error.message, error.reason.name, ERROR_DOMAIN, error.metadata)
    for key, value in rich.trailing_metadata:
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return status_pb2.Status(code=code.value[0], message=error.message)


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, service: InferenceService):
        self.service = service

    async def Predict(self, request: pb.PredictRequest, context) -> pb.PredictResponse:
        prediction = await self.service.predict(request.model_name, selector_of(request), payload_of(request),
                                                _timeout(context))
        response = pb.PredictResponse(model=resolved_model(prediction.model),
                                      model_latency_ms=round(prediction.latency_ms, 3))
        fill_output(response, prediction.output, request.raw_output)
        return response

    async def BatchPredict(self, request: pb.BatchPredictRequest, context) -> pb.BatchPredictResponse:
        payloads = []
        for index, instance in enumerate(request.instances):
            which = instance.WhichOneof("input")
            payloads.append(payload_of(instance, f"instances[{index}]") if which else b"")
        resolved, results = await self.service.batch_predict(request.model_name, selector_of(request), payloads,
                                                             _timeout(context))
        response = pb.BatchPredictResponse(model=resolved_model(resolved))
        for item in results:
            result = response.results.add(index=item.index)
            if item.error is not None:
                result.error.CopyFrom(error_status(item.error))
                response.failure_count += 1
            else:
                fill_output(result, item.output, request.raw_output)
                response.success_count += 1
        return response

    async def StreamPredict(self, request: pb.StreamPredictRequest, context) -> AsyncIterator[pb.StreamPredictResponse]:
        resolved, outputs = await self.service.stream_predict(request.model_name, selector_of(request),
                                                              payload_of(request), _timeout(context))
        model = resolved_model(resolved)
        index, pending = 0, None
        async for chunk in outputs:  # one behind, so that the last message can say so
            if pending is not None:
                yield self._part(model, index, pending, request.raw_output, last=False)
                index += 1
            pending = chunk
        if pending is not None:
            yield self._part(model, index, pending, request.raw_output, last=True)

    @staticmethod
    def _part(model, index: int, chunk: bytes, raw: bool, last: bool) -> pb.StreamPredictResponse:
        response = pb.StreamPredictResponse(model=model, index=index, last=last)
        fill_output(response, chunk, raw)
        return response

    async def LoadModel(self, request: pb.LoadModelRequest, context) -> pb.LoadModelResponse:
        if request.handler:
            raise InvalidArgument("handler", "overriding the archive's handler is not supported; build the archive "
                                             "with the handler it should run")
        spec = LoadSpec(
            min_workers=request.min_workers, max_workers=request.max_workers, batch_size=request.batch_size,
            max_batch_delay_ms=round(_seconds(request.max_batch_delay, "max_batch_delay") * 1000)
            if request.HasField("max_batch_delay") else None,
            response_timeout_s=round(_seconds(request.response_timeout, "response_timeout"))
            if request.HasField("response_timeout") else None,
            startup_timeout_s=_seconds(request.startup_timeout, "startup_timeout")
            if request.HasField("startup_timeout") else None,
            wait_until_ready=request.wait_until_ready)
        loaded = await self.service.load(request.model_name, selector_of(request), spec)
        return pb.LoadModelResponse(loaded_model=loaded_message(loaded))

    async def UnloadModel(self, request: pb.UnloadModelRequest, context) -> pb.UnloadModelResponse:
        drain = _seconds(request.drain_timeout, "drain_timeout") if request.HasField("drain_timeout") else None
        await self.service.unload(request.model_name, request.version, drain or None)
        return pb.UnloadModelResponse()

    async def ScaleModel(self, request: pb.ScaleModelRequest, context) -> pb.ScaleModelResponse:
        loaded = await self.service.scale(request.model_name, request.version, request.min_workers,
                                          request.max_workers, request.wait_until_ready)
        return pb.ScaleModelResponse(loaded_model=loaded_message(loaded))

    async def ListLoadedModels(self, request: pb.ListLoadedModelsRequest, context) -> pb.ListLoadedModelsResponse:
        models, token = await self.service.list_loaded(request.model_name, request.page_size, request.page_token)
        return pb.ListLoadedModelsResponse(loaded_models=[loaded_message(m) for m in models], next_page_token=token)

    async def DescribeLoadedModel(self, request: pb.DescribeLoadedModelRequest,
                                  context) -> pb.DescribeLoadedModelResponse:
        loaded = await self.service.describe(request.model_name, request.version)
        return pb.DescribeLoadedModelResponse(loaded_model=loaded_message(loaded))

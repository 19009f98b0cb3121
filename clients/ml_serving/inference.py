"""InferenceClient: predictions and model management over TorchServe (InferenceService)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from google.protobuf import json_format, struct_pb2
from mnbara.mlserving.inference.v1 import inference_pb2 as pb
from mnbara.mlserving.inference.v1 import inference_pb2_grpc
from mnbara.mlserving.registry.v1 import registry_pb2

from ._base import AsyncClient, model_input
from ._methods import paged, server_stream, unary

StageLike = registry_pb2.Stage | str
Inputs = Mapping[str, Any] | struct_pb2.Struct
"""JSON-like model input: a plain dict (or a Struct)."""


def prediction_value(response: Any) -> Any:
    """The prediction of a Predict-like response (or of one BatchPredict result) as plain Python
    (dict, list, str, float, bool, None), or bytes when the model's output was raw."""
    oneof = "output" if "output" in response.DESCRIPTOR.oneofs_by_name else "result"
    if response.WhichOneof(oneof) == "raw_prediction":
        return response.raw_prediction
    if not response.HasField("prediction"):
        return None
    return json_format.MessageToDict(response.prediction)


class InferenceClient(AsyncClient[inference_pb2_grpc.InferenceServiceStub]):
    """Async client of mnbara.mlserving.inference.v1.InferenceService. Methods return the
    response messages; `ModelServer.predict` returns plain Python instead."""

    stub_type = inference_pb2_grpc.InferenceServiceStub

    async def predict(self, model_name: str, inputs: Inputs | bytes, *, version: str | None = None,
                      stage: StageLike | None = None, alias: str | None = None, raw_output: bool = False,
                      timeout: float | None = None) -> pb.PredictResponse:
        """Predict with a model version chosen by at most one of version, stage or alias (none means
        Production). `inputs` is a dict (sent as a Struct) or raw bytes. Returns the PredictResponse."""
        request = pb.PredictRequest(model_name=model_name, version=version, stage=stage, alias=alias,
                                    raw_output=raw_output, **model_input(inputs))
        return await self._call(self.stub.Predict, request, timeout)

    async def batch_predict(self, model_name: str, instances: Sequence[Inputs | bytes], *,
                            version: str | None = None, stage: StageLike | None = None, alias: str | None = None,
                            raw_output: bool = False, timeout: float | None = None) -> pb.BatchPredictResponse:
        """Predict many inputs (dicts or raw bytes) with one version; each result carries its own error."""
        request = pb.BatchPredictRequest(model_name=model_name, version=version, stage=stage, alias=alias,
                                         raw_output=raw_output,
                                         instances=[pb.PredictInstance(**model_input(item)) for item in instances])
        return await self._call(self.stub.BatchPredict, request, timeout)

    async def load_model(self, model_name: str, *, version: str | None = None, stage: StageLike | None = None,
                         alias: str | None = None, min_workers: int = 0, max_workers: int = 0, batch_size: int = 0,
                         max_batch_delay: timedelta | None = None, response_timeout: timedelta | None = None,
                         startup_timeout: timedelta | None = None, handler: str = "",
                         wait_until_ready: bool = False, set_default: bool = False,
                         timeout: float | None = None) -> pb.LoadModelResponse:
        """Load a registry version (by version, stage or alias; none means Production) into TorchServe."""
        request = pb.LoadModelRequest(model_name=model_name, version=version, stage=stage, alias=alias,
                                      min_workers=min_workers, max_workers=max_workers, batch_size=batch_size,
                                      max_batch_delay=max_batch_delay, response_timeout=response_timeout,
                                      startup_timeout=startup_timeout, handler=handler,
                                      wait_until_ready=wait_until_ready, set_default=set_default)
        return await self._call(self.stub.LoadModel, request, timeout)

    async def unload_model(self, model_name: str, version: str, *,
                           timeout: float | None = None) -> pb.UnloadModelResponse:
        """Unload a version from TorchServe."""
        request = pb.UnloadModelRequest(model_name=model_name, version=version)
        return await self._call(self.stub.UnloadModel, request, timeout)

    stream_predict = server_stream(lambda stub: stub.StreamPredict, pb.StreamPredictRequest,
                                   pb.StreamPredictResponse)
    scale_model = unary(lambda stub: stub.ScaleModel, pb.ScaleModelRequest, pb.ScaleModelResponse)
    list_loaded_models = unary(lambda stub: stub.ListLoadedModels, pb.ListLoadedModelsRequest,
                               pb.ListLoadedModelsResponse)
    describe_loaded_model = unary(lambda stub: stub.DescribeLoadedModel, pb.DescribeLoadedModelRequest,
                                  pb.DescribeLoadedModelResponse)

    iter_loaded_models = paged(list_loaded_models, lambda page: page.loaded_models)


class ModelServer(InferenceClient):
    """The seed README's model server client; `predict` returns the prediction as plain Python:

    >>> server = ModelServer()
    >>> result = await server.predict(model_name="recommendation-model", inputs={"user_id": 123, "context": {}})
    """

    async def predict(self, model_name: str, inputs: Inputs | bytes, *, version: str | None = None,
                      stage: StageLike | None = None, alias: str | None = None, raw_output: bool = False,
                      timeout: float | None = None) -> Any:
        """The prediction as plain Python (dict, list, number, ...); bytes when the model's output is
        not JSON or `raw_output` is asked for."""
        # The output travels as the model's own bytes and is parsed here: building a protobuf
        # Value on the server costs more than the rest of the mesh's hop.
        response = await super().predict(model_name, inputs, version=version, stage=stage, alias=alias,
                                         raw_output=True, timeout=timeout)
        if raw_output:
            return response.raw_prediction
        try:
            return json.loads(response.raw_prediction)
        except ValueError:
            return response.raw_prediction

"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, what tritonclient and
KServe's clients speak) and its REST form (`OpenInferenceRestService`, transcoded by Envoy at
/v2/...): map the messages to tensors, call the domain, map the tensors back.
"""

from __future__ import annotations

from google.protobuf import json_format, struct_pb2
from inference import grpc_predict_v2_pb2 as oip
from inference import grpc_predict_v2_pb2_grpc as oip_grpc
from mnbara.mlserving.inference.v1 import open_inference_rest_pb2 as rest
from mnbara.mlserving.inference.v1 import open_inference_rest_pb2_grpc as rest_grpc

from ...errors import InvalidArgument
from .domain import tensors
from .domain.open_inference import SERVER_NAME, OpenInference, not_ready


class GrpcInferenceServicer(oip_grpc.GRPCInferenceServiceServicer):
    def __init__(self, protocol: OpenInference):
        self.protocol = protocol

    async def ServerLive(self, request, context) -> oip.ServerLiveResponse:
        return oip.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context) -> oip.ServerReadyResponse:
        return oip.ServerReadyResponse(ready=await self.protocol.server_ready())

    async def ModelReady(self, request, context) -> oip.ModelReadyResponse:
        return oip.ModelReadyResponse(ready=await self.protocol.model_ready(request.name, request.version))

    async def ServerMetadata(self, request, context) -> oip.ServerMetadataResponse:
        return oip.ServerMetadataResponse(name=SERVER_NAME, version=self.protocol.server_version)

    async def ModelMetadata(self, request, context) -> oip.ModelMetadataResponse:
        found = await self.protocol.metadata(request.name, request.version)
        spec = oip.ModelMetadataResponse.TensorMetadata
        return oip.ModelMetadataResponse(
            name=found.name, versions=found.versions, platform=found.platform,
            inputs=[spec(name=s.name, datatype=s.datatype, shape=s.shape) for s in found.inputs],
            outputs=[spec(name=s.name, datatype=s.datatype, shape=s.shape) for s in found.outputs])

    async def ModelInfer(self, request: oip.ModelInferRequest, context) -> oip.ModelInferResponse:
        inputs = tensors.with_raw_contents([_grpc_input(t) for t in request.inputs], request.raw_input_contents)
        result = await self.protocol.infer(request.model_name, request.model_version, inputs,
                                           [o.name for o in request.outputs], context.time_remaining())
        response = oip.ModelInferResponse(model_name=result.model.model_name, model_version=result.model.version,
                                          id=request.id)
        for tensor in result.outputs:  # raw contents: what tritonclient reads, and FP16 has no other form
            response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            response.raw_output_contents.append(tensors.encode_raw(tensor.datatype, tensor.values))
        return response


def _grpc_input(tensor) -> tensors.Tensor:
    field = tensors.CONTENTS_FIELD.get(tensor.datatype)
    values = list(getattr(tensor.contents, field)) if field else []
    return tensors.Tensor(tensor.name, tensor.datatype, tuple(tensor.shape), values or None)


class RestInferenceServicer(rest_grpc.OpenInferenceRestServiceServicer):
    """REST clients (tritonclient.http) read only the HTTP status of the readiness calls: not
    ready is an error (503), not a `false`."""

    def __init__(self, protocol: OpenInference):
        self.protocol = protocol

    async def ServerLive(self, request, context) -> rest.ServerLiveResponse:
        return rest.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context) -> rest.ServerReadyResponse:
        if not await self.protocol.server_ready():
            raise not_ready("the model server")
        return rest.ServerReadyResponse(ready=True)

    async def ModelReady(self, request, context) -> rest.ModelReadyResponse:
        if not await self.protocol.model_ready(request.name, request.version):
            raise not_ready(f"model {request.name[:64]!r}")
        return rest.ModelReadyResponse(name=request.name, ready=True)

    async def ServerMetadata(self, request, context) -> rest.ServerMetadataResponse:
        return rest.ServerMetadataResponse(name=SERVER_NAME, version=self.protocol.server_version)

    async def ModelMetadata(self, request, context) -> rest.ModelMetadataResponse:
        found = await self.protocol.metadata(request.name, request.version)
        spec = rest.ModelMetadataResponse.TensorMetadata
        return rest.ModelMetadataResponse(
            name=found.name, versions=found.versions, platform=found.platform,
            inputs=[spec(name=s.name, datatype=s.datatype, shape=s.shape) for s in found.inputs],
            outputs=[spec(name=s.name, datatype=s.datatype, shape=s.shape) for s in found.outputs])

    async def ModelInfer(self, request: rest.ModelInferRequest, context) -> rest.ModelInferResponse:
        inputs = [tensors.Tensor(t.name, t.datatype, tuple(t.shape), _values(t.data)) for t in request.inputs]
        result = await self.protocol.infer(request.model_name, request.model_version, inputs,
                                           [o.name for o in request.outputs], context.time_remaining(), "data")
        response = rest.ModelInferResponse(model_name=result.model.model_name, model_version=result.model.version,
                                           id=request.id)
        for tensor in result.outputs:
            out = response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
            if tensor.datatype == "FP16":
                raise InvalidArgument("outputs", "FP16 outputs travel only as raw bytes: use the gRPC protocol")
            out.data.extend([v.decode() if isinstance(v, bytes) else v for v in tensor.values])
        return response


def _values(data: struct_pb2.ListValue) -> list | None:
    values = json_format.MessageToDict(data) if data.values else []
    return values or None

"""The Registry changes a canary makes (canaries.RegistryWriter), over the Registry's gRPC API.

Its token needs registry.read, registry.write and registry.promote. No grpc exception leaves this module: an
answer that says no is PromotionRefused (with the Registry's reason), anything else
(unreachable, too slow, overloaded) is RegistryUnavailable.
"""

from __future__ import annotations

from typing import Callable

import grpc
from mnbara.mlserving.registry.v1 import registry_pb2 as pb
from mnbara.mlserving.registry.v1 import registry_pb2_grpc

from ..inference.domain.resolution import RegistryUnavailable
from ..inference.registry_resolver import _reason_of as reason_of
from .domain.canaries import PromotionRefused

_UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                          grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED,
                          grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})


class GrpcRegistryWriter:
    def __init__(self, addr: Callable[[], str], token: str, timeout_s: float):
        self._addr = addr
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._stub_instance: registry_pb2_grpc.RegistryServiceStub | None = None

    @property
    def _stub(self) -> registry_pb2_grpc.RegistryServiceStub:
        if self._stub_instance is None:
            try:
                addr = self._addr()
            except RuntimeError as error:  # this server is not listening yet
                raise RegistryUnavailable(str(error)) from None
            self._channel = grpc.aio.insecure_channel(addr)
            self._stub_instance = registry_pb2_grpc.RegistryServiceStub(self._channel)
        return self._stub_instance

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()

    async def promote(self, model_name: str, version: str, reason: str, override_gates: bool) -> None:
        if await self._stage(model_name, version) == pb.STAGE_DEVELOPMENT:
            await self._transition(model_name, version, pb.STAGE_STAGING, reason, override_gates)
        await self._transition(model_name, version, pb.STAGE_PRODUCTION, reason, override_gates)

    async def archive(self, model_name: str, version: str, reason: str) -> None:
        if await self._stage(model_name, version) != pb.STAGE_ARCHIVED:
            await self._transition(model_name, version, pb.STAGE_ARCHIVED, reason, False)

    async def _stage(self, model_name: str, version: str) -> int:
        request = pb.GetModelVersionRequest(model_name=model_name, version=version)
        response = await self._call(self._stub.GetModelVersion, request)
        return response.model_version.stage

    async def _transition(self, model_name: str, version: str, stage: int, reason: str, override: bool) -> None:
        request = pb.TransitionStageRequest(model_name=model_name, version=version, to_stage=stage,
                                            reason=reason or "canary", override=override)
        await self._call(self._stub.TransitionStage, request)

    async def _call(self, method, request):
        try:
            return await method(request, timeout=self._timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            if error.code() in _UNREACHABLE:
                raise RegistryUnavailable(f"{error.code().name}: {(error.details() or '')[:120]}") from None
            raise PromotionRefused(reason_of(error) or error.code().name, error.details() or "") from None

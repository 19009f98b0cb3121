"""The Open Inference Protocol (KServe v2) over the Inference service: readiness, metadata from
the signature the Registry stores, and inference with tensors mapped to and from the handler.

A model's `version` in the protocol is a registry version; none means Production. The
handler receives `{input name: nested list}` as JSON and answers `{output name: values}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

from ....errors import DomainError, Unavailable
from . import tensors
from .errors import ErrorReason
from .model import PRODUCTION, ResolvedVersion, Selector, SelectorKind, TensorSpec
from .service import InferenceService

SERVER_NAME = "ml-serving-mesh"
PLATFORM = "pytorch_torchserve"


@dataclass(frozen=True)
class Metadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


@dataclass(frozen=True)
class InferResult:
    model: ResolvedVersion
    outputs: list[tensors.Tensor]


class OpenInference:
    def __init__(self, service: InferenceService, server_version: str, limits: tensors.Limits = tensors.Limits()):
        self.service = service
        self.server_version = server_version
        self.limits = limits

    async def server_ready(self) -> bool:
        return await self.service.backend.ping()

    async def model_ready(self, name: str, version: str) -> bool:
        resolved = await self.service.resolve(name, _selector(version))
        try:
            loaded = await self.service.describe(resolved.model_name, resolved.version)
        except DomainError:
            return False
        return loaded.status in ("READY", "DEGRADED")

    async def metadata(self, name: str, version: str) -> Metadata:
        resolved = await self.service.resolve(name, _selector(version))
        return Metadata(resolved.model_name, (resolved.version,), PLATFORM, resolved.inputs, resolved.outputs)

    async def infer(self, name: str, version: str, inputs: Sequence[tensors.Tensor], requested: Sequence[str],
                    timeout_s: float | None, values_field: str = "contents") -> InferResult:
        handler_input = tensors.to_handler_json(inputs, self.limits, values_field)
        payload = json.dumps(handler_input, separators=(",", ":")).encode()
        prediction = await self.service.predict(name, _selector(version), payload, timeout_s)
        try:
            answer = json.loads(prediction.output)
        except ValueError:
            raise tensors.ModelOutputError("", "is not JSON") from None
        signature = prediction.model.outputs or None
        return InferResult(prediction.model, tensors.from_handler_json(answer, signature, requested, self.limits))


def _selector(version: str) -> Selector:
    return Selector(SelectorKind.VERSION, version) if version else PRODUCTION


def not_ready(what: str) -> Unavailable:
    return Unavailable(f"{what} is not ready", reason=ErrorReason.BACKEND_UNAVAILABLE)

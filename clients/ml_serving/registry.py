"""RegistryClient: registered models, versions, lifecycle stages and aliases (RegistryService)."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

from mnbara.mlserving.registry.v1 import registry_pb2 as pb
from mnbara.mlserving.registry.v1 import registry_pb2_grpc

from ._base import AsyncClient
from .errors import AlreadyExistsError
from ._methods import paged, server_stream, unary

StageLike = pb.Stage | str
"""A Stage value or its name, e.g. "STAGE_PRODUCTION"."""
ArtifactSource = bytes | str | os.PathLike
"""An artifact's bytes, or the path of a local file holding them."""

INLINE_LIMIT = 8 * 1024 * 1024
"""Artifacts up to this size go inside CreateModelVersion; larger ones through UploadArtifact."""
CHUNK_BYTES = 1024 * 1024
UPLOAD_TIMEOUT = 600.0
"""Default deadline of an upload, in seconds (a 2 GiB artifact at a few MB/s)."""


def parse_reference(reference: str) -> tuple[str, dict[str, object]]:
    """"model@production" / "model@staging" (a stage), "model@champion" (an alias), "model/3" (a version),
    "model" (its Production version) -> (model name, ResolveModelVersion selector keywords)."""
    if "@" in reference:
        name, _, label = reference.partition("@")
        stage = f"STAGE_{label.upper()}"
        if stage in pb.Stage.keys() and stage != "STAGE_UNSPECIFIED":
            return name, {"stage": pb.Stage.Value(stage)}
        return name, {"alias": label}
    name, slash, number = reference.rpartition("/")
    if slash and number.isdigit():
        return name, {"version": number}
    return reference, {}


def _digest(source: ArtifactSource) -> tuple[int, str]:
    if isinstance(source, bytes):
        return len(source), hashlib.sha256(source).hexdigest()
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as file:
        while block := file.read(CHUNK_BYTES):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


async def _upload_requests(header: pb.UploadArtifactHeader, source: ArtifactSource,
                           chunk_bytes: int) -> AsyncIterator[pb.UploadArtifactRequest]:
    yield pb.UploadArtifactRequest(header=header)
    if isinstance(source, bytes):
        for start in range(0, len(source), chunk_bytes):
            yield pb.UploadArtifactRequest(chunk=source[start:start + chunk_bytes])
        return
    with open(source, "rb") as file:
        while block := file.read(chunk_bytes):
            yield pb.UploadArtifactRequest(chunk=block)


class RegistryClient(AsyncClient[registry_pb2_grpc.RegistryServiceStub]):
    """Async client of mnbara.mlserving.registry.v1.RegistryService (over MLflow)."""

    stub_type = registry_pb2_grpc.RegistryServiceStub

    async def create_registered_model(self, name: str, *, description: str = "",
                                      tags: Mapping[str, str] | None = None,
                                      promotion_policy: pb.PromotionPolicy | None = None,
                                      timeout: float | None = None) -> pb.CreateRegisteredModelResponse:
        """Declare a new registered model, without versions. Raises AlreadyExistsError (MODEL_ALREADY_EXISTS)."""
        model = pb.RegisteredModel(name=name, description=description, tags=tags, promotion_policy=promotion_policy)
        request = pb.CreateRegisteredModelRequest(registered_model=model)
        return await self._call(self.stub.CreateRegisteredModel, request, timeout)

    async def get_registered_model(self, name: str, *,
                                   timeout: float | None = None) -> pb.GetRegisteredModelResponse:
        """One registered model with its stages and aliases. Raises NotFoundError (MODEL_NOT_FOUND)."""
        return await self._call(self.stub.GetRegisteredModel, pb.GetRegisteredModelRequest(name=name), timeout)

    async def list_registered_models(self, *, name_contains: str = "", tags: Sequence[str] = (), page_size: int = 0,
                                     page_token: str = "",
                                     timeout: float | None = None) -> pb.ListRegisteredModelsResponse:
        """One page of registered models in name order; `iter_registered_models` goes through every page."""
        request = pb.ListRegisteredModelsRequest(name_contains=name_contains, tags=tags, page_size=page_size,
                                                 page_token=page_token)
        return await self._call(self.stub.ListRegisteredModels, request, timeout)

    async def delete_registered_model(self, name: str, *, force: bool = False,
                                      timeout: float | None = None) -> pb.DeleteRegisteredModelResponse:
        """Delete a model with its versions (`force` is needed while it has a Production version)."""
        request = pb.DeleteRegisteredModelRequest(name=name, force=force)
        return await self._call(self.stub.DeleteRegisteredModel, request, timeout)

    async def upload_artifact(self, model_name: str, artifact: ArtifactSource, *, file_name: str = "",
                              artifact_format: pb.ArtifactFormat | str = 0, chunk_bytes: int = CHUNK_BYTES,
                              timeout: float | None = UPLOAD_TIMEOUT) -> pb.UploadArtifactResponse:
        """Stream an artifact of any size (bytes, or a file's path) to the registry's store, with its size and
        SHA-256 so that the registry checks them; pass the answer's `artifact_uri` to `create_model_version`."""
        size, sha256 = _digest(artifact)
        if not file_name and not isinstance(artifact, bytes):
            file_name = Path(artifact).name
        header = pb.UploadArtifactHeader(model_name=model_name, file_name=file_name, artifact_format=artifact_format,
                                         size_bytes=size, sha256=sha256)
        return await self._call(self.stub.UploadArtifact, _upload_requests(header, artifact, chunk_bytes), timeout)

    async def create_model_version(self, model_name: str, *, artifact: ArtifactSource | None = None,
                                   artifact_uri: str | None = None,
                                   artifact_format: pb.ArtifactFormat | str = 0, artifact_file_name: str = "",
                                   artifact_sha256: str = "",
                                   source_run_id: str = "", metrics: Mapping[str, float] | None = None,
                                   parameters: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None,
                                   description: str = "", initial_stage: StageLike = 0,
                                   create_model_if_missing: bool = False, request_id: str = "",
                                   signature: pb.ModelSignature | Mapping | None = None,
                                   timeout: float | None = None) -> pb.CreateModelVersionResponse:
        """Register a new version from an `artifact` (bytes or a local file's path: a .mar, or a zipped /
        gzipped-tar model directory) or an existing `artifact_uri` (s3://, runs:/). Artifacts over
        INLINE_LIMIT, and files, go through `upload_artifact` first. Idempotent by `request_id`."""
        if artifact is not None and (not isinstance(artifact, bytes) or len(artifact) > INLINE_LIMIT):
            if create_model_if_missing:  # an upload is kept under its model, which must exist first
                try:
                    await self.create_registered_model(model_name, timeout=timeout)
                except AlreadyExistsError:
                    pass
            if not artifact_file_name and not isinstance(artifact, bytes):
                artifact_file_name = Path(artifact).name
            uploaded = await self.upload_artifact(model_name, artifact, file_name=artifact_file_name,
                                                  artifact_format=artifact_format)
            artifact, artifact_uri = None, uploaded.artifact_uri
            artifact_sha256 = artifact_sha256 or uploaded.sha256
        request = pb.CreateModelVersionRequest(
            model_name=model_name, artifact=artifact, artifact_uri=artifact_uri, artifact_format=artifact_format,
            artifact_file_name=artifact_file_name, artifact_sha256=artifact_sha256, source_run_id=source_run_id,
            metrics=metrics, parameters=parameters, tags=tags, description=description, initial_stage=initial_stage,
            create_model_if_missing=create_model_if_missing, request_id=request_id, signature=signature)
        return await self._call(self.stub.CreateModelVersion, request, timeout)

    async def get_model_version(self, model_name: str, version: str, *,
                                timeout: float | None = None) -> pb.GetModelVersionResponse:
        """One model version. Raises NotFoundError (MODEL_NOT_FOUND, VERSION_NOT_FOUND)."""
        request = pb.GetModelVersionRequest(model_name=model_name, version=version)
        return await self._call(self.stub.GetModelVersion, request, timeout)

    async def list_model_versions(self, model_name: str, *, stages: Sequence[StageLike] = (), alias: str = "",
                                  page_size: int = 0, page_token: str = "",
                                  timeout: float | None = None) -> pb.ListModelVersionsResponse:
        """One page of a model's versions, newest first ("-" lists every model's); `iter_model_versions`
        goes through every page."""
        request = pb.ListModelVersionsRequest(model_name=model_name, stages=stages, alias=alias,
                                              page_size=page_size, page_token=page_token)
        return await self._call(self.stub.ListModelVersions, request, timeout)

    async def transition_stage(self, model_name: str, version: str, to_stage: StageLike, *,
                               expected_stage: StageLike = 0, extra_gates: Sequence[pb.MetricGate] = (),
                               override: bool = False, reason: str = "", actor: str = "",
                               timeout: float | None = None) -> pb.TransitionStageResponse:
        """Move a version through the lifecycle (promotion gates apply; `override` needs a `reason`).
        Raises FailedPreconditionError (INVALID_TRANSITION, GATE_FAILED, ...)."""
        request = pb.TransitionStageRequest(model_name=model_name, version=version, to_stage=to_stage,
                                            expected_stage=expected_stage, extra_gates=extra_gates,
                                            override=override, reason=reason, actor=actor)
        return await self._call(self.stub.TransitionStage, request, timeout)

    async def resolve_model_version(self, model_name: str, *, version: str | None = None,
                                    stage: StageLike | None = None, alias: str | None = None,
                                    as_of: datetime | None = None,
                                    timeout: float | None = None) -> pb.ResolveModelVersionResponse:
        """The version a selector (at most one of version, stage, alias; none means Production) points at;
        with `as_of`, the version that was in Production then."""
        request = pb.ResolveModelVersionRequest(model_name=model_name, version=version, stage=stage, alias=alias,
                                                as_of=as_of)
        return await self._call(self.stub.ResolveModelVersion, request, timeout)

    async def resolve(self, reference: str, *, timeout: float | None = None) -> pb.ModelVersion:
        """The version a reference names: "fraud@production", "fraud@champion" (an alias), "fraud/3", "fraud"."""
        name, selector = parse_reference(reference)
        return (await self.resolve_model_version(name, **selector, timeout=timeout)).model_version

    update_registered_model = unary(lambda stub: stub.UpdateRegisteredModel, pb.UpdateRegisteredModelRequest,
                                    pb.UpdateRegisteredModelResponse)
    update_model_version = unary(lambda stub: stub.UpdateModelVersion, pb.UpdateModelVersionRequest,
                                 pb.UpdateModelVersionResponse)
    delete_model_version = unary(lambda stub: stub.DeleteModelVersion, pb.DeleteModelVersionRequest,
                                 pb.DeleteModelVersionResponse)
    set_alias = unary(lambda stub: stub.SetAlias, pb.SetAliasRequest, pb.SetAliasResponse)
    delete_alias = unary(lambda stub: stub.DeleteAlias, pb.DeleteAliasRequest, pb.DeleteAliasResponse)
    list_stage_transitions = unary(lambda stub: stub.ListStageTransitions, pb.ListStageTransitionsRequest,
                                   pb.ListStageTransitionsResponse)
    watch_events = server_stream(lambda stub: stub.WatchEvents, pb.WatchEventsRequest, pb.WatchEventsResponse)

    iter_registered_models = paged(list_registered_models, lambda page: page.registered_models)
    iter_model_versions = paged(list_model_versions, lambda page: page.model_versions)
    iter_stage_transitions = paged(list_stage_transitions, lambda page: page.transitions)


class MLflowModelRegistry(RegistryClient):
    """The seed README's name for the registry client:

    >>> registry = MLflowModelRegistry()
    >>> await registry.create_registered_model(name="recommendation-model",
    ...                                        description="Product recommendation model")
    """

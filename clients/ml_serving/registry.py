"""RegistryClient: registered models, versions, lifecycle stages and aliases (RegistryService)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from mnbara.mlserving.registry.v1 import registry_pb2 as pb
from mnbara.mlserving.registry.v1 import registry_pb2_grpc

from ._base import AsyncClient
from ._methods import paged, server_stream, unary

StageLike = pb.Stage | str
"""A Stage value or its name, e.g. "STAGE_PRODUCTION"."""


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

    async def create_model_version(self, model_name: str, *, artifact: bytes | None = None,
                                   artifact_uri: str | None = None,
                                   artifact_format: pb.ArtifactFormat | str = 0, artifact_file_name: str = "",
                                   source_run_id: str = "", metrics: Mapping[str, float] | None = None,
                                   parameters: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None,
                                   description: str = "", initial_stage: StageLike = 0,
                                   create_model_if_missing: bool = False, request_id: str = "",
                                   timeout: float | None = None) -> pb.CreateModelVersionResponse:
        """Register a new version from uploaded `artifact` bytes (a .mar, or a zipped / gzipped-tar
        model directory) or an existing `artifact_uri`. Idempotent by `request_id`."""
        request = pb.CreateModelVersionRequest(
            model_name=model_name, artifact=artifact, artifact_uri=artifact_uri, artifact_format=artifact_format,
            artifact_file_name=artifact_file_name, source_run_id=source_run_id, metrics=metrics,
            parameters=parameters, tags=tags, description=description, initial_stage=initial_stage,
            create_model_if_missing=create_model_if_missing, request_id=request_id)
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
                                    timeout: float | None = None) -> pb.ResolveModelVersionResponse:
        """The version a selector (at most one of version, stage, alias; none means Production) points at."""
        request = pb.ResolveModelVersionRequest(model_name=model_name, version=version, stage=stage, alias=alias)
        return await self._call(self.stub.ResolveModelVersion, request, timeout)

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

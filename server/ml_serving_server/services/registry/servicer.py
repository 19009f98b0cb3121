"""RegistryService over gRPC: map the request, call the domain, map the response."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import AsyncIterator

from google.protobuf import timestamp_pb2
from mnbara.mlserving.registry.v1 import registry_pb2 as pb
from mnbara.mlserving.registry.v1 import registry_pb2_grpc

from ...errors import InvalidArgument
from ...runtime.auth import caller
from .domain.model import (
    ArtifactFormat,
    Comparison,
    EventType,
    GateResult,
    MetricGate,
    ModelVersion,
    RegistryEvent,
    Signature,
    Stage,
    StageTransition,
    TensorSpec,
)
from .domain.service import ModelView, NewVersion, RegistryService
from .metrics import count_stage_change

MAX_CHUNK_BYTES = 4 * 1024 * 1024


def _timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def _time(message, field: str) -> datetime | None:
    if not message.HasField(field):
        return None
    return getattr(message, field).ToDatetime(tzinfo=timezone.utc)


def _stage(value: int, field: str, *, unset_ok: bool = True) -> Stage | None:
    if value == pb.STAGE_UNSPECIFIED:
        if unset_ok:
            return None
        raise InvalidArgument(field, "name a stage: STAGE_DEVELOPMENT, STAGE_STAGING, STAGE_PRODUCTION or "
                                     "STAGE_ARCHIVED")
    try:
        return Stage(value)
    except ValueError:
        raise InvalidArgument(field, f"unknown stage {value}") from None


def _format(value: int, field: str) -> ArtifactFormat:
    try:
        return ArtifactFormat(value)
    except ValueError:
        raise InvalidArgument(field, f"unknown artifact format {value}") from None


def _gate_from_pb(gate: pb.MetricGate, field: str) -> MetricGate:
    try:
        comparison = Comparison(gate.comparison)
    except ValueError:
        raise InvalidArgument(f"{field}.comparison", "name a comparison, e.g. GATE_COMPARISON_GREATER_OR_EQUAL") \
            from None
    target = _stage(gate.target_stage, f"{field}.target_stage") or Stage.PRODUCTION
    return MetricGate(gate.metric, comparison, gate.threshold, target)


def _gate_to_pb(gate: MetricGate) -> pb.MetricGate:
    return pb.MetricGate(metric=gate.metric, comparison=gate.comparison.value, threshold=gate.threshold,
                         target_stage=gate.target_stage.value)


def _gate_result_to_pb(result: GateResult) -> pb.GateResult:
    return pb.GateResult(gate=_gate_to_pb(result.gate), actual=result.actual, passed=result.passed)


def _signature_from_pb(signature: pb.ModelSignature) -> Signature:
    def specs(items) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(s.name, s.datatype, tuple(s.shape)) for s in items)
    return Signature(specs(signature.inputs), specs(signature.outputs))


def _signature_to_pb(signature: Signature) -> pb.ModelSignature:
    def specs(items: tuple[TensorSpec, ...]) -> list[pb.TensorSpec]:
        return [pb.TensorSpec(name=s.name, datatype=s.datatype, shape=s.shape) for s in items]
    return pb.ModelSignature(inputs=specs(signature.inputs), outputs=specs(signature.outputs))


def _model_to_pb(view: ModelView) -> pb.RegisteredModel:
    model = view.model
    return pb.RegisteredModel(
        name=model.name, description=model.description, tags=model.tags,
        promotion_policy=pb.PromotionPolicy(gates=[_gate_to_pb(g) for g in model.gates]),
        latest_version=view.latest_version, production_version=view.production_version,
        staging_versions=view.staging_versions, aliases=model.aliases,
        create_time=_timestamp(model.create_time), update_time=_timestamp(model.update_time))


def _version_to_pb(version: ModelVersion | None) -> pb.ModelVersion | None:
    if version is None:
        return None
    artifact = version.artifact
    return pb.ModelVersion(
        model_name=version.model_name, version=version.version, description=version.description,
        stage=version.stage.value, aliases=version.aliases,
        artifact_uri=artifact.uri if artifact else "", artifact_format=artifact.format.value if artifact else 0,
        artifact_sha256=artifact.sha256 if artifact else "", artifact_size_bytes=artifact.size_bytes if artifact else 0,
        source_run_id=version.source_run_id, metrics=version.metrics, parameters=version.parameters,
        tags=version.tags, status=version.status.value, status_message=version.status_message,
        created_by=version.created_by, create_time=_timestamp(version.create_time),
        update_time=_timestamp(version.update_time), stage_update_time=_timestamp(version.stage_update_time),
        signature=_signature_to_pb(version.signature))


def _transition_to_pb(t: StageTransition | None) -> pb.StageTransition | None:
    if t is None:
        return None
    return pb.StageTransition(
        transition_id=t.transition_id, model_name=t.model_name, version=t.version, from_stage=t.from_stage.value,
        to_stage=t.to_stage.value, actor=t.actor, reason=t.reason, transition_time=_timestamp(t.time),
        override=t.override, gate_results=[_gate_result_to_pb(r) for r in t.gate_results],
        caused_by_transition_id=t.caused_by)


def _event_to_pb(e: RegistryEvent) -> pb.RegistryEvent:
    return pb.RegistryEvent(
        sequence=e.sequence, event_type=e.type.value, event_time=_timestamp(e.time), model_name=e.model_name,
        version=e.version, from_stage=e.from_stage.value if e.from_stage else 0,
        to_stage=e.to_stage.value if e.to_stage else 0, alias=e.alias, actor=e.actor,
        model_version=_version_to_pb(e.model_version), transition=_transition_to_pb(e.transition))


def _actor(requested: str = "") -> str:
    """The authenticated principal when there is one, else what the caller says (auth off)."""
    return caller() or requested or "anonymous"


RESOLVED_MESSAGES = 10_000
"""Resolve answers kept as messages: the cache hands out the same version object until it changes."""


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, service: RegistryService):
        self._service = service
        self._resolved: dict[tuple[str, str], tuple[ModelVersion, pb.ModelVersion]] = {}

    def _resolved_message(self, version: ModelVersion) -> pb.ModelVersion:
        """The message of a resolved version, built once per version object (the hot path's main cost)."""
        key = (version.model_name, version.version)
        held = self._resolved.get(key)
        if held is not None and held[0] is version:
            return held[1]
        if len(self._resolved) >= RESOLVED_MESSAGES:
            self._resolved.clear()
        message = _version_to_pb(version)
        self._resolved[key] = (version, message)
        return message

    async def CreateRegisteredModel(self, request, context):
        model = request.registered_model
        gates = [_gate_from_pb(g, "registered_model.promotion_policy.gates")
                 for g in model.promotion_policy.gates]
        view = await self._service.create_model(model.name, model.description, dict(model.tags), gates, _actor())
        return pb.CreateRegisteredModelResponse(registered_model=_model_to_pb(view))

    async def GetRegisteredModel(self, request, context):
        return pb.GetRegisteredModelResponse(registered_model=_model_to_pb(await self._service.get_model(request.name)))

    async def ListRegisteredModels(self, request, context):
        views, token = await self._service.list_models(request.name_contains, list(request.tags), request.page_size,
                                                       request.page_token)
        return pb.ListRegisteredModelsResponse(registered_models=[_model_to_pb(v) for v in views],
                                               next_page_token=token)

    async def UpdateRegisteredModel(self, request, context):
        gates = None
        if request.HasField("promotion_policy"):
            gates = [_gate_from_pb(g, "promotion_policy.gates") for g in request.promotion_policy.gates]
        description = request.description if request.HasField("description") else None
        view = await self._service.update_model(request.name, description, dict(request.set_tags),
                                                list(request.remove_tag_keys), gates, _actor())
        return pb.UpdateRegisteredModelResponse(registered_model=_model_to_pb(view))

    async def DeleteRegisteredModel(self, request, context):
        await self._service.delete_model(request.name, request.force, _actor())
        return pb.DeleteRegisteredModelResponse()

    async def UploadArtifact(self, request_iterator, context):
        requests = request_iterator.__aiter__()
        try:
            first = await requests.__anext__()
        except StopAsyncIteration:
            raise InvalidArgument("header", "the first message must carry the header") from None
        if first.WhichOneof("part") != "header":
            raise InvalidArgument("header", "the first message must carry the header")
        header = first.header

        async def chunks() -> AsyncIterator[bytes]:
            async for message in requests:
                if message.WhichOneof("part") != "chunk":
                    raise InvalidArgument("chunk", "only the first message carries a header")
                if not message.chunk or len(message.chunk) > MAX_CHUNK_BYTES:
                    raise InvalidArgument("chunk", f"each chunk is 1 byte to {MAX_CHUNK_BYTES} bytes")
                yield message.chunk

        uploaded = await self._service.upload_artifact(
            header.model_name, header.file_name, _format(header.artifact_format, "header.artifact_format"),
            header.size_bytes, header.sha256, chunks())
        return pb.UploadArtifactResponse(artifact_uri=uploaded.uri, sha256=uploaded.sha256,
                                         size_bytes=uploaded.size_bytes, artifact_format=uploaded.format.value)

    async def CreateModelVersion(self, request, context):
        source = request.WhichOneof("source")
        new = NewVersion(
            model_name=request.model_name,
            artifact=request.artifact if source == "artifact" else None,
            artifact_uri=request.artifact_uri if source == "artifact_uri" else None,
            artifact_format=_format(request.artifact_format, "artifact_format"),
            artifact_file_name=request.artifact_file_name, artifact_sha256=request.artifact_sha256,
            source_run_id=request.source_run_id, metrics=dict(request.metrics), parameters=dict(request.parameters),
            tags=dict(request.tags), description=request.description,
            initial_stage=_stage(request.initial_stage, "initial_stage"),
            create_model_if_missing=request.create_model_if_missing, request_id=request.request_id,
            signature=_signature_from_pb(request.signature))
        version, duplicate = await self._service.create_version(new, _actor())
        if not duplicate and version.stage == Stage.STAGING:  # registered in Staging: one transition
            count_stage_change(version.model_name, Stage.STAGING)
        return pb.CreateModelVersionResponse(model_version=_version_to_pb(version), duplicate=duplicate)

    async def GetModelVersion(self, request, context):
        version = await self._service.get_version(request.model_name, request.version)
        return pb.GetModelVersionResponse(model_version=_version_to_pb(version))

    async def ListModelVersions(self, request, context):
        stages = [_stage(s, "stages", unset_ok=False) for s in request.stages]
        page = await self._service.list_versions(request.model_name, stages, request.alias, request.page_size,
                                                 request.page_token)
        return pb.ListModelVersionsResponse(model_versions=[_version_to_pb(v) for v in page.versions],
                                            next_page_token=page.next_token, event_sequence=page.event_sequence)

    async def UpdateModelVersion(self, request, context):
        description = request.description if request.HasField("description") else None
        version = await self._service.update_version(
            request.model_name, request.version, description, dict(request.set_tags), list(request.remove_tag_keys),
            dict(request.set_metrics), _actor())
        return pb.UpdateModelVersionResponse(model_version=_version_to_pb(version))

    async def DeleteModelVersion(self, request, context):
        await self._service.delete_version(request.model_name, request.version, _actor())
        return pb.DeleteModelVersionResponse()

    async def TransitionStage(self, request, context):
        result = await self._service.transition(
            request.model_name, request.version, _stage(request.to_stage, "to_stage", unset_ok=False),
            _stage(request.expected_stage, "expected_stage"),
            [_gate_from_pb(g, "extra_gates") for g in request.extra_gates], request.override, request.reason,
            _actor(request.actor))
        count_stage_change(result.transition.model_name, result.transition.to_stage)
        if result.archived is not None:
            count_stage_change(result.archived.model_name, Stage.ARCHIVED)
        return pb.TransitionStageResponse(model_version=_version_to_pb(result.version),
                                          transition=_transition_to_pb(result.transition),
                                          archived_version=_version_to_pb(result.archived))

    async def SetAlias(self, request, context):
        version, previous = await self._service.set_alias(request.model_name, request.alias, request.version,
                                                          _actor())
        return pb.SetAliasResponse(model_version=_version_to_pb(version), previous_version=previous)

    async def DeleteAlias(self, request, context):
        await self._service.delete_alias(request.model_name, request.alias, _actor())
        return pb.DeleteAliasResponse()

    async def ResolveModelVersion(self, request, context):
        selector = request.WhichOneof("selector")
        stage = _stage(request.stage, "stage", unset_ok=False) if selector == "stage" else None
        version, sequence = await self._service.resolve(
            request.model_name, version=request.version if selector == "version" else None, stage=stage,
            alias=request.alias if selector == "alias" else None, as_of=_time(request, "as_of"))
        return pb.ResolveModelVersionResponse(model_version=self._resolved_message(version), event_sequence=sequence)

    async def ListStageTransitions(self, request, context):
        transitions, token = await self._service.transitions(
            request.model_name, request.version, _time(request, "start_time"), _time(request, "end_time"),
            request.actor, request.page_size, request.page_token)
        return pb.ListStageTransitionsResponse(transitions=[_transition_to_pb(t) for t in transitions],
                                              next_page_token=token)

    async def WatchEvents(self, request, context):
        after = request.after_sequence if request.HasField("after_sequence") else None
        types = []
        for value in request.event_types:
            try:
                types.append(EventType(value))
            except ValueError:
                raise InvalidArgument("event_types", f"unknown event type {value}") from None
        async for batch in self._service.watch(after, list(request.model_names), types):
            yield pb.WatchEventsResponse(events=[_event_to_pb(e) for e in batch.events], head_sequence=batch.head)

"""The VersionResolver port over the Registry's gRPC API, with a cache kept fresh by its events.

A resolved selector is kept until the Registry reports a change to that model
(WatchEvents), so Predict costs no Registry round trip once warm. While the event stream
is down the cache is not trusted: entries are dropped and each call asks the Registry
again, so a change is never missed. Artifact URLs are presigned here with the S3 keys
(boto3 presigns locally, no request is made).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Callable
from urllib.parse import urlsplit

import grpc
from mnbara.mlserving.registry.v1 import registry_pb2 as pb
from mnbara.mlserving.registry.v1 import registry_pb2_grpc

from .domain.deployer import CursorExpired, StageEvent
from .domain.model import ResolvedVersion, Selector, SelectorKind, TensorSpec
from .domain.resolution import NotInRegistry, RegistryUnavailable

log = logging.getLogger(__name__)

_STAGES = {"DEVELOPMENT": pb.STAGE_DEVELOPMENT, "STAGING": pb.STAGE_STAGING, "PRODUCTION": pb.STAGE_PRODUCTION,
           "ARCHIVED": pb.STAGE_ARCHIVED}
_STAGE_NAMES = {value: name for name, value in _STAGES.items()}
_MISSING_REASONS = {"MODEL_NOT_FOUND", "VERSION_NOT_FOUND", "ALIAS_NOT_FOUND", "NO_VERSION_IN_STAGE"}


class RegistryResolver:
    """`addr` gives the Registry's address when first needed (this server's own port, maybe)."""

    def __init__(self, addr: Callable[[], str], token: str, timeout_s: float, cache_entries: int, presigner=None):
        self._addr = addr
        self._channel: grpc.aio.Channel | None = None
        self._stub_instance: registry_pb2_grpc.RegistryServiceStub | None = None
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._timeout_s = timeout_s
        self._cache: OrderedDict[tuple[str, Selector], ResolvedVersion] = OrderedDict()
        self._cache_entries = cache_entries
        self._presigner = presigner
        self._watching = False  # the cache is trusted only while the event stream is up
        self._epoch = 0  # bumped by every event and stream break: an answer older than one is not kept
        self._watch_task: asyncio.Task | None = None

    def start(self) -> None:
        self._watch_task = asyncio.get_running_loop().create_task(self._follow_events(), name="inference-registry-watch")

    async def stop_watching(self) -> None:
        """End the event stream; the cache is not trusted from here on."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
            self._watch_task = None
        self._watching = False
        self._epoch += 1
        self._cache.clear()

    async def close(self) -> None:
        await self.stop_watching()
        if self._channel is not None:
            await self._channel.close()

    @property
    def _stub(self) -> registry_pb2_grpc.RegistryServiceStub:
        if self._stub_instance is None:
            try:
                addr = self._addr()
            except RuntimeError as error:  # not listening yet
                raise RegistryUnavailable(str(error)) from None
            self._channel = grpc.aio.insecure_channel(addr)
            self._stub_instance = registry_pb2_grpc.RegistryServiceStub(self._channel)
        return self._stub_instance

    async def resolve(self, model_name: str, selector: Selector) -> ResolvedVersion:
        key = (model_name, selector)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        epoch = self._epoch  # an event during the call may already be older than its answer
        request = pb.ResolveModelVersionRequest(model_name=model_name)
        if selector.kind is SelectorKind.VERSION:
            request.version = selector.value
        elif selector.kind is SelectorKind.STAGE:
            request.stage = _STAGES[selector.value]
        elif selector.kind is SelectorKind.ALIAS:
            request.alias = selector.value
        try:
            stub = self._stub
            reply = await stub.ResolveModelVersion(request, timeout=self._timeout_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise _translated(error) from None
        resolved = _resolved(reply.model_version)
        if self._watching and epoch == self._epoch:
            self._remember(key, resolved)
        return resolved

    async def presigned_url(self, artifact_uri: str, ttl_s: int) -> str:
        parts = urlsplit(artifact_uri)
        if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
            raise ValueError("only artifacts stored in the registry's S3 bucket can be served")
        if self._presigner is None:
            raise ValueError("no S3 store is configured for the Inference service")
        return await asyncio.to_thread(self._presigner.generate_presigned_url, "get_object",
                                       Params={"Bucket": parts.netloc, "Key": parts.path.lstrip("/")},
                                       ExpiresIn=ttl_s)

    # --- the deployer's feed (ServingFeed) ------------------------------------------------

    async def serving_versions(self) -> tuple[set[tuple[str, str]], int]:
        """Every Staging and Production version of every model, paged, and the sequence of the first page."""
        wanted, token, sequence = set(), "", None
        while True:
            request = pb.ListModelVersionsRequest(model_name="-", stages=[pb.STAGE_STAGING, pb.STAGE_PRODUCTION],
                                                  page_size=1000, page_token=token)
            try:
                page = await self._stub.ListModelVersions(request, timeout=self._timeout_s * 5,
                                                          metadata=self._metadata)
            except grpc.aio.AioRpcError as error:
                raise _translated(error) from None
            sequence = page.event_sequence if sequence is None else sequence
            wanted.update((v.model_name, v.version) for v in page.model_versions)
            token = page.next_page_token
            if not token:
                return wanted, sequence

    async def events(self, after: int | None):
        request = pb.WatchEventsRequest(event_types=[
            pb.REGISTRY_EVENT_TYPE_STAGE_CHANGED, pb.REGISTRY_EVENT_TYPE_VERSION_DELETED,
            pb.REGISTRY_EVENT_TYPE_MODEL_DELETED])
        if after is not None:
            request.after_sequence = after
        try:
            async for message in self._stub.WatchEvents(request, metadata=self._metadata):
                yield [StageEvent(e.sequence, pb.RegistryEventType.Name(e.event_type).removeprefix(
                    "REGISTRY_EVENT_TYPE_"), e.model_name, e.version, _STAGE_NAMES.get(e.to_stage, ""))
                       for e in message.events]
        except grpc.aio.AioRpcError as error:
            if error.code() is grpc.StatusCode.OUT_OF_RANGE:
                raise CursorExpired(str(after)) from None
            raise _translated(error) from None

    def _remember(self, key, resolved: ResolvedVersion) -> None:
        self._cache[key] = resolved
        while len(self._cache) > self._cache_entries:
            self._cache.popitem(last=False)

    def _forget(self, model_name: str) -> None:
        for key in [k for k in self._cache if k[0] == model_name]:
            del self._cache[key]

    async def _follow_events(self) -> None:
        """Drop a model's entries on each of its events; on any break, drop all and reconnect."""
        after: int | None = None
        while True:
            try:
                request = pb.WatchEventsRequest()
                if after is not None:
                    request.after_sequence = after
                stream = self._stub.WatchEvents(request, metadata=self._metadata)
                async for message in stream:
                    if not self._watching:
                        self._cache.clear()  # whatever changed while we were away
                        self._watching = True
                    for event in message.events:
                        self._epoch += 1
                        self._forget(event.model_name)
                    after = max(after or 0, message.head_sequence, *(e.sequence for e in message.events))
            except asyncio.CancelledError:
                raise
            except RegistryUnavailable:
                pass  # not listening yet
            except grpc.aio.AioRpcError as error:
                if error.code() is grpc.StatusCode.OUT_OF_RANGE:
                    after = None  # our cursor expired: start from now
                log.debug("registry event stream broke: %s", error.code().name)
            except Exception:  # noqa: BLE001 - keep following; the cache is distrusted meanwhile
                log.exception("registry event stream failed")
            self._watching = False
            self._epoch += 1
            self._cache.clear()
            await asyncio.sleep(1.0)


def _translated(error: grpc.aio.AioRpcError) -> Exception:
    code = error.code()
    if code is grpc.StatusCode.NOT_FOUND:
        reason = _reason_of(error)
        return NotInRegistry(reason if reason in _MISSING_REASONS else "MODEL_NOT_FOUND", error.details() or "not found")
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return NotInRegistry("MODEL_NOT_FOUND", error.details() or "not a valid selector")
    return RegistryUnavailable(f"{code.name}: {(error.details() or '')[:120]}")


def _reason_of(error: grpc.aio.AioRpcError) -> str:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def _resolved(version: pb.ModelVersion) -> ResolvedVersion:
    specs = lambda items: tuple(TensorSpec(t.name, t.datatype, tuple(t.shape)) for t in items)  # noqa: E731
    return ResolvedVersion(
        model_name=version.model_name, version=version.version, stage=_STAGE_NAMES.get(version.stage, "DEVELOPMENT"),
        artifact_uri=version.artifact_uri, ready=version.status == pb.MODEL_VERSION_STATUS_READY,
        inputs=specs(version.signature.inputs), outputs=specs(version.signature.outputs))

"""ModelBackend over TorchServe 0.12's gRPC inference and management APIs.

One long-lived `grpc.aio` channel per API (created at the first call, reused for the
backend's lifetime), 64 MiB messages both ways (TorchServe's `max_request_size` /
`max_response_size` must be raised to match), short reconnect backoff so a restarted
TorchServe is found again within a second or two. The caller's remaining time is the call's
gRPC deadline.

What TorchServe 0.12 answers (observed, not documented) and what it becomes here. A status
raised inside TorchServe carries the Java exception's class on the details' last line
(".../ModelNotFoundException", "InternalServerException.()"); one made by gRPC itself (server
down, deadline) carries none, which is how "TorchServe down" and "handler failed" (both
UNAVAILABLE) are told apart.

  inference
    unknown model or version         INTERNAL  "Model not found: x" / "Model version: v does
                                     not exist for model: x"                 -> ModelNotLoaded
    worker process died mid-request  INTERNAL  "Worker died."                -> WorkerDied
    queue full (job_queue_size)      INTERNAL  "Model "x" has no worker to serve inference
                                     request. ..."                           -> BackendOverloaded
    handler raised an exception      UNAVAILABLE "Prediction failed" (its text is hidden)
                                                                             -> HandlerError
    handler raised PredictionException(msg, code)  the code as HTTP -> gRPC (400 INVALID_ARGUMENT,
                                     404 NOT_FOUND, 500/507 INTERNAL, 503 UNAVAILABLE) with msg
                                                                             -> HandlerError
    nothing listening                UNAVAILABLE "failed to connect to all addresses ..."
                                                                             -> BackendUnavailable
    deadline                         DEADLINE_EXCEEDED (the handler still runs to its end)
                                                                             -> BackendTimeout
  management
    unknown model / version          NOT_FOUND                               -> ModelNotLoaded
    register: no such file, URL not allowed  NOT_FOUND "Model not found at: ..." / "Given URL
                                     ... does not match any allowed URL(s)"  -> ModelLoadFailed
    register: download failed        INVALID_ARGUMENT "Failed to download archive from: ..."
                                                                             -> ModelLoadFailed
    register: workers did not start  INTERNAL "Failed to start workers for model x version: v"
                                     (the model stays registered: it is unregistered here)
                                                                             -> ModelLoadFailed
    register: a file of the URL's name already in the model store (TorchServe keeps what it
                                     fetched, across restarts) INTERNAL "Model file already exists x"
                                                                             -> the stored copy is
                                                                                registered instead
    register: any other failure TorchServe answers                          -> ModelLoadFailed
    register a loaded version, unregister the default version while others are loaded
                                     UNKNOWN with empty details (a 409 lost in translation)
                                                                             -> ModelAlreadyLoaded
                                                                                / BackendConflict
    bad values (max < min workers)   INVALID_ARGUMENT                        -> BackendRejected
    ListModels                       needs limit > 0; DescribeModel answers a JSON list
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import AsyncIterator
from urllib.parse import urlsplit

import grpc
from google.protobuf import empty_pb2
from org.pytorch.serve.grpc.inference import inference_pb2, inference_pb2_grpc
from org.pytorch.serve.grpc.management import management_pb2, management_pb2_grpc

from .domain.ports import (
    BackendConflict,
    BackendError,
    BackendModel,
    BackendOverloaded,
    BackendRejected,
    BackendTimeout,
    BackendUnavailable,
    BackendWorker,
    HandlerError,
    ModelAlreadyLoaded,
    ModelLoadFailed,
    ModelNotLoaded,
    ModelState,
    WorkerDied,
)

log = logging.getLogger(__name__)

MESSAGE_LIMIT = 64 * 1024 * 1024
LIST_PAGE = 1000  # TorchServe's largest ListModels page
PING_TIMEOUT_S = 2.0
MANAGEMENT_TIMEOUT_S = 30.0  # one call without a synchronous wait (describe, list, unregister)
SYNCHRONOUS_TIMEOUT_S = 300.0  # register/scale waiting for workers: TorchServe's startup timeout is 120 s
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MESSAGE_LIMIT),
    ("grpc.max_receive_message_length", MESSAGE_LIMIT),
    # gRPC's default backoff grows to 120 s: a restarted TorchServe would stay unseen for minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # An address that resolves to several TorchServe replicas (dns:/// of a headless Service)
    # gets every one of them, in turn; one address behaves as before.
    ("grpc.lb_policy_name", "round_robin"),
]
_JAVA_EXCEPTION = re.compile(r"\n\s*((?:[\w$]+\.)*[\w$]*Exception)(?:\.\(\))?\s*$")
_CLIENT_FAULT_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                       grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE}


# --------------------------------------------------------------------------- error mapping


_STORED_FILE = "Model file already exists"


class ArchiveInStore(BackendError):
    """TorchServe already holds a file of the URL's name in its model store."""


def _file_name(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[-1]


def split_details(details: str | None) -> tuple[str, str | None]:
    """(TorchServe's message, the Java exception's simple class name), or (details, None)
    when the status did not come from TorchServe's code (gRPC itself made it)."""
    text = details or ""
    match = _JAVA_EXCEPTION.search(text)
    if match is None:
        return text.strip(), None
    return text[: match.start()].strip(), match.group(1).rsplit(".", 1)[-1]


def _common(exc: grpc.aio.AioRpcError, message: str, java: str | None) -> BackendError | None:
    """What every call maps alike: deadline, transport failures, unknown model."""
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return BackendTimeout("deadline exceeded waiting for TorchServe")
    if java is None and code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return BackendUnavailable(f"TorchServe unreachable: {message}")
    if java is None and code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return BackendRejected(message)  # gRPC's own message size check
    if java in ("ModelNotFoundException", "ModelVersionNotFoundException"):
        return ModelNotLoaded(message)
    return None


def inference_error(exc: grpc.aio.AioRpcError) -> BackendError:
    message, java = split_details(exc.details())
    mapped = _common(exc, message, java)
    if mapped is not None:
        return mapped
    if message.startswith("Worker died"):
        return WorkerDied(message)
    if "has no worker to serve inference request" in message:
        return BackendOverloaded(message)
    if java is not None:
        return HandlerError(message, client_fault=exc.code() in _CLIENT_FAULT_CODES)
    return BackendUnavailable(f"TorchServe answered {exc.code().name}: {message}")


def management_error(exc: grpc.aio.AioRpcError, conflict: str) -> BackendError:
    """`conflict`: what an UNKNOWN without details (TorchServe's 409) means for this call."""
    message, java = split_details(exc.details())
    mapped = _common(exc, message, java)
    if mapped is not None:
        return mapped
    if exc.code() == grpc.StatusCode.UNKNOWN and not message:
        return BackendConflict(conflict)
    if exc.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
        return BackendRejected(message)
    if java is not None and message.startswith("Failed to start workers"):
        return ModelLoadFailed(message)
    if message.startswith(_STORED_FILE):
        return BackendUnavailable(message, answered=True)
    return BackendUnavailable(f"TorchServe answered {exc.code().name}: {message}", answered=java is not None)


def _timeout(deadline: float | None) -> float | None:
    """Seconds left before `deadline` (monotonic); BackendTimeout when none are."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise BackendTimeout("deadline exceeded before calling TorchServe")
    return left


# --------------------------------------------------------------------------- describe JSON


def _state(min_workers: int, workers: tuple[BackendWorker, ...]) -> ModelState:
    if any(w.status == "READY" for w in workers):
        return ModelState.READY
    return ModelState.LOADING if min_workers > 0 else ModelState.STOPPED


def parse_model(doc: dict) -> BackendModel:
    """One entry of DescribeModel's JSON list."""
    workers = tuple(
        BackendWorker(id=str(w.get("id", "")), status=str(w.get("status", "")), pid=w.get("pid"),
                      memory_usage_bytes=w.get("memoryUsage"))
        for w in doc.get("workers") or ())
    queue = doc.get("jobQueueStatus") or {}
    min_workers = int(doc.get("minWorkers", 0))
    return BackendModel(
        name=str(doc.get("modelName", "")), version=str(doc.get("modelVersion", "")),
        url=str(doc.get("modelUrl", "")), state=_state(min_workers, workers),
        min_workers=min_workers, max_workers=int(doc.get("maxWorkers", 0)),
        batch_size=int(doc.get("batchSize", 1)), max_batch_delay_ms=int(doc.get("maxBatchDelay", 0)),
        response_timeout_s=int(doc.get("responseTimeout", 0)), workers=workers,
        pending_requests=int(queue.get("pendingRequests", 0)), queue_capacity=queue.get("remainingCapacity"))


def _json(msg: str, what: str):
    try:
        return json.loads(msg)
    except ValueError as exc:
        raise BackendUnavailable(f"TorchServe answered {what} with something other than JSON") from exc


# --------------------------------------------------------------------------- the backend


class TorchServeBackend:
    """ModelBackend for one TorchServe: `inference_addr` and `management_addr` as host:port."""

    def __init__(self, inference_addr: str, management_addr: str) -> None:
        self.inference_addr = inference_addr
        self.management_addr = management_addr
        self._channels: tuple[grpc.aio.Channel, grpc.aio.Channel] | None = None
        self._inference: inference_pb2_grpc.InferenceAPIsServiceStub | None = None
        self._management: management_pb2_grpc.ManagementAPIsServiceStub | None = None

    # channels are made at the first call: grpc.aio binds them to the running event loop
    def _stubs(self) -> tuple[inference_pb2_grpc.InferenceAPIsServiceStub,
                              management_pb2_grpc.ManagementAPIsServiceStub]:
        if self._channels is None:
            self._channels = (grpc.aio.insecure_channel(self.inference_addr, options=_CHANNEL_OPTIONS),
                              grpc.aio.insecure_channel(self.management_addr, options=_CHANNEL_OPTIONS))
            self._inference = inference_pb2_grpc.InferenceAPIsServiceStub(self._channels[0])
            self._management = management_pb2_grpc.ManagementAPIsServiceStub(self._channels[1])
        return self._inference, self._management

    async def close(self) -> None:
        channels, self._channels = self._channels, None
        for channel in channels or ():
            await channel.close()

    # ------------------------------------------------------------------ inference

    async def predict(self, name: str, version: str, payload: bytes, timeout_s: float | None, *,
                      retry_on_worker_death: bool = False) -> bytes:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        request = inference_pb2.PredictionsRequest(model_name=name, model_version=version, input={"data": payload})
        try:
            return await self._predict_once(request, deadline)
        except WorkerDied:
            if not retry_on_worker_death:
                raise
            log.warning("TorchServe worker died during %s:%s; retrying once", name, version or "default")
        # TorchServe queues the retry until the replacement worker is ready (about 2 s).
        return await self._predict_once(request, deadline)

    async def _predict_once(self, request: inference_pb2.PredictionsRequest, deadline: float | None) -> bytes:
        inference, _ = self._stubs()
        try:
            reply = await inference.Predictions(request, timeout=_timeout(deadline))
        except grpc.aio.AioRpcError as exc:
            raise inference_error(exc) from None
        return reply.prediction

    async def stream_predict(self, name: str, version: str, payload: bytes,
                             timeout_s: float | None) -> AsyncIterator[bytes]:
        inference, _ = self._stubs()
        request = inference_pb2.PredictionsRequest(model_name=name, model_version=version, input={"data": payload})
        if timeout_s is not None and timeout_s <= 0:
            raise BackendTimeout("deadline exceeded before calling TorchServe")
        call = inference.StreamPredictions(request, timeout=timeout_s)
        try:
            async for reply in call:
                yield reply.prediction
        except grpc.aio.AioRpcError as exc:
            raise inference_error(exc) from None
        finally:
            call.cancel()  # the consumer stopped early: end the stream (no-op once it is done)

    async def ping(self) -> bool:
        inference, _ = self._stubs()
        try:
            reply = await inference.Ping(empty_pb2.Empty(), timeout=PING_TIMEOUT_S)
            return json.loads(reply.health or "{}").get("status") == "Healthy"
        except (grpc.aio.AioRpcError, ValueError, AttributeError):
            return False

    # ------------------------------------------------------------------ management

    async def _manage(self, method: str, request, conflict: str, timeout_s: float = MANAGEMENT_TIMEOUT_S) -> str:
        _, management = self._stubs()
        try:
            reply = await getattr(management, method)(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise management_error(exc, conflict) from None
        return reply.msg

    async def describe(self, name: str, version: str) -> BackendModel:
        models = await self._describe(name, version)
        if not models:
            raise ModelNotLoaded(f"Model not found: {name}")
        return models[0]

    async def versions(self, name: str) -> list[BackendModel]:
        return await self._describe(name, "all")

    async def _describe(self, name: str, version: str) -> list[BackendModel]:
        request = management_pb2.DescribeModelRequest(model_name=name, model_version=version)
        docs = _json(await self._manage("DescribeModel", request, "describe refused"), "DescribeModel")
        return [parse_model(doc) for doc in docs if isinstance(doc, dict)]

    async def list_models(self) -> list[tuple[str, list[str]]]:
        names: list[str] = []
        token = 0
        while True:  # ListModels pages by offset; nextPageToken is absent on the last page
            request = management_pb2.ListModelsRequest(limit=LIST_PAGE, next_page_token=token)
            page = _json(await self._manage("ListModels", request, "list refused"), "ListModels")
            names += [str(m.get("modelName", "")) for m in page.get("models") or ()]
            token = int(page.get("nextPageToken") or 0)
            if not token:
                break
        out = []
        for name in sorted(set(names)):
            try:
                out.append((name, [m.version for m in await self.versions(name)]))
            except ModelNotLoaded:
                continue  # unregistered between the two calls
        return out

    async def register(self, name: str, version: str, url: str, *, initial_workers: int = 1,
                       batch_size: int = 1, max_batch_delay_ms: int = 100, response_timeout_s: int = 120,
                       synchronous: bool = True) -> None:
        before = await self._version_names(name)
        if version and version in before:
            raise ModelAlreadyLoaded(f"model {name} version {version} is already registered")
        request = management_pb2.RegisterModelRequest(
            model_name=name, url=url, initial_workers=initial_workers, batch_size=batch_size,
            max_batch_delay=max_batch_delay_ms, response_timeout=response_timeout_s, synchronous=synchronous)
        try:
            try:
                await self._register(request, name, url, synchronous)
            except ArchiveInStore:
                # TorchServe keeps what it fetched (across its restarts too) and will not fetch a file
                # of the same name again: load that copy. The name is the object key's last segment,
                # unique per stored artifact, so the copy is this very archive.
                request.url = _file_name(url)
                await self._register(request, name, url, synchronous)
        except ModelLoadFailed:
            # Workers did not start, yet TorchServe keeps the model registered (without workers).
            await self._discard(name, await self._version_names(name) - before)
            raise
        await self._check_version(name, version, url, before)

    async def _register(self, request, name: str, url: str, synchronous: bool) -> None:
        try:
            await self._manage("RegisterModel", request, f"model {name} (version in {url}) is already registered",
                               SYNCHRONOUS_TIMEOUT_S if synchronous else MANAGEMENT_TIMEOUT_S)
        except BackendConflict as exc:
            raise ModelAlreadyLoaded(exc.message) from None
        except (ModelNotLoaded, BackendRejected) as exc:  # no such file, URL not allowed, download failed
            raise ModelLoadFailed(exc.message) from None
        except BackendUnavailable as exc:
            if exc.message.startswith(_STORED_FILE) and request.url.startswith(("http://", "https://")):
                raise ArchiveInStore(exc.message) from None
            if exc.answered:  # TorchServe answered with a failure of its own: the load failed
                raise ModelLoadFailed(exc.message) from None
            raise

    async def _version_names(self, name: str) -> set[str]:
        try:
            return {m.version for m in await self.versions(name)}
        except ModelNotLoaded:
            return set()

    async def _check_version(self, name: str, version: str, url: str, before: set[str]) -> None:
        """TorchServe takes the version from the archive, not the request: undo a mismatch."""
        if not version:
            return
        added = await self._version_names(name) - before
        if version in added:
            return
        await self._discard(name, added)
        raise ModelLoadFailed(f"archive {url} carries version {', '.join(sorted(added)) or '?'}, not {version}")

    async def _discard(self, name: str, versions: set[str]) -> None:
        for version in versions:
            try:
                await self.unregister(name, version)
            except BackendError as exc:  # best effort: the caller gets the load failure
                log.warning("could not unregister %s:%s after a failed load: %s", name, version, exc)

    async def unregister(self, name: str, version: str) -> None:
        request = management_pb2.UnregisterModelRequest(model_name=name, model_version=version)
        await self._manage("UnregisterModel", request,
                           f"cannot unregister the default version of {name} while other versions are loaded")

    async def set_default(self, name: str, version: str) -> None:
        request = management_pb2.SetDefaultRequest(model_name=name, model_version=version)
        await self._manage("SetDefault", request, f"cannot make {name}:{version} the default")

    async def scale(self, name: str, version: str, min_workers: int, max_workers: int, *,
                    synchronous: bool = True) -> None:
        request = management_pb2.ScaleWorkerRequest(model_name=name, model_version=version, min_worker=min_workers,
                                                    max_worker=max_workers, synchronous=synchronous)
        await self._manage("ScaleWorker", request, f"cannot scale {name}:{version}",
                           SYNCHRONOUS_TIMEOUT_S if synchronous else MANAGEMENT_TIMEOUT_S)

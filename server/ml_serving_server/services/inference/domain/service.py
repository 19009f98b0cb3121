"""The Inference service's use cases: predict through the model server, and manage what it serves.

A request names a registry model and a selector; the resolver (the Registry's cache) says
which version that is, and the version is served in the model server as its own model
(naming.py). Model server failures become DomainErrors here, in one place (`_mapped`).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import AsyncIterator, Sequence

from ....errors import AlreadyExists, DeadlineExceeded, DomainError, FailedPrecondition, Internal, InvalidArgument, \
    NotFound, ResourceExhausted, Unavailable
from . import limits
from .errors import ErrorReason
from .model import ItemResult, LoadedModel, LoadSpec, Prediction, ResolvedVersion, Selector, Worker
from .naming import parse_served_name, served_name
from .ports import BackendConflict, BackendModel, BackendOverloaded, BackendRejected, BackendTimeout, \
    BackendUnavailable, HandlerError, ModelAlreadyLoaded, ModelBackend, ModelLoadFailed, ModelNotLoaded, WorkerDied
from .resolution import NotInRegistry, RegistryUnavailable, VersionResolver

BATCH_CONCURRENCY = 64
"""Items of one BatchPredict in flight at once (TorchServe batches them per its batch_size)."""

DEFAULT_BATCH_DELAY_MS = 100
DEFAULT_RESPONSE_TIMEOUT_S = 120
DEFAULT_STARTUP_TIMEOUT_S = 120.0


DEFAULT_DRAIN_S = 30.0


class InferenceService:
    """`max_predict_s` caps a prediction's wait when the caller set no deadline: no call hangs,
    whatever the model server does."""

    def __init__(self, backend: ModelBackend, resolver: VersionResolver, *, max_input_bytes: int,
                 presign_ttl_s: int = 600, max_predict_s: float = 60.0):
        self.backend = backend
        self.resolver = resolver
        self.max_input_bytes = max_input_bytes
        self.presign_ttl_s = presign_ttl_s
        self.max_predict_s = max_predict_s
        self._in_flight: dict[str, int] = {}  # served name -> predictions running on this replica
        self._unloading: set[str] = set()  # served names refusing new predictions while they drain

    # --- predictions -------------------------------------------------------------------

    async def predict(self, name: str, selector: Selector, payload: bytes, timeout_s: float | None) -> Prediction:
        limits.payload(payload, self.max_input_bytes)
        resolved = await self.resolve(name, selector)
        started = time.perf_counter()
        async with self._serving(resolved) as served, _mapped(resolved):
            # A prediction changes nothing: when its worker dies, running it once more is safe.
            output = await self.backend.predict(served, "", payload, self._deadline(timeout_s),
                                                retry_on_worker_death=True)
        return Prediction(resolved, output, (time.perf_counter() - started) * 1000)

    def _deadline(self, timeout_s: float | None) -> float:
        return self.max_predict_s if timeout_s is None else min(timeout_s, self.max_predict_s)

    @asynccontextmanager
    async def _serving(self, resolved: ResolvedVersion):
        """The served name, counted in flight; refused while it is being unloaded (TorchServe would
        queue a request for a model it is unregistering, and never answer it)."""
        served = served_name(resolved.model_name, resolved.version)
        if served in self._unloading:
            raise NotFound(f"version {resolved.version} of {resolved.model_name!r} is being unloaded"[:200],
                           reason=ErrorReason.MODEL_NOT_LOADED,
                           metadata={"model_name": resolved.model_name, "version": resolved.version})
        self._in_flight[served] = self._in_flight.get(served, 0) + 1
        try:
            yield served
        finally:
            left = self._in_flight[served] - 1
            if left:
                self._in_flight[served] = left
            else:
                del self._in_flight[served]

    async def batch_predict(self, name: str, selector: Selector, payloads: Sequence[bytes],
                            timeout_s: float | None) -> tuple[ResolvedVersion, list[ItemResult]]:
        limits.instance_count(len(payloads))
        resolved = await self.resolve(name, selector)
        served = served_name(resolved.model_name, resolved.version)
        slots = asyncio.Semaphore(BATCH_CONCURRENCY)

        async def one(index: int, payload: bytes) -> ItemResult:
            try:
                limits.payload(payload, self.max_input_bytes, f"instances[{index}]")
                async with slots, self._serving(resolved), _mapped(resolved):
                    output = await self.backend.predict(served, "", payload, self._deadline(timeout_s),
                                                        retry_on_worker_death=True)
                return ItemResult(index, output=output)
            except DomainError as error:
                return ItemResult(index, error=error)

        results = await asyncio.gather(*(one(i, p) for i, p in enumerate(payloads)))
        unavailable = [r.error for r in results if isinstance(r.error, Unavailable)]
        if unavailable and len(unavailable) == len(results):
            raise unavailable[0]  # nothing served at all: the call fails, as Predict would
        return resolved, list(results)

    async def stream_predict(self, name: str, selector: Selector, payload: bytes,
                             timeout_s: float | None) -> tuple[ResolvedVersion, AsyncIterator[bytes]]:
        limits.payload(payload, self.max_input_bytes)
        resolved = await self.resolve(name, selector)

        async def outputs() -> AsyncIterator[bytes]:
            async with self._serving(resolved) as served, _mapped(resolved):
                async for chunk in self.backend.stream_predict(served, "", payload, self._deadline(timeout_s)):
                    yield chunk

        return resolved, outputs()

    async def resolve(self, name: str, selector: Selector) -> ResolvedVersion:
        limits.model_name(name)
        limits.selector(selector)
        try:
            return await self.resolver.resolve(name, selector)
        except NotInRegistry as missing:
            reason = ErrorReason[missing.reason] if missing.reason in ErrorReason.__members__ \
                else ErrorReason.MODEL_NOT_FOUND
            raise NotFound(missing.message, reason=reason, metadata={"model_name": name}) from None
        except RegistryUnavailable:
            raise Unavailable("the model registry is unavailable; retry later",
                              reason=ErrorReason.REGISTRY_UNAVAILABLE) from None

    # --- management --------------------------------------------------------------------

    async def load(self, name: str, selector: Selector, spec: LoadSpec) -> LoadedModel:
        low, high = limits.workers(spec.min_workers, spec.max_workers)
        batch_size = limits.bounded_int(spec.batch_size or 1, "batch_size", 1, limits.MAX_BATCH_SIZE)
        delay_ms = limits.bounded_int(DEFAULT_BATCH_DELAY_MS if spec.max_batch_delay_ms is None
                                      else spec.max_batch_delay_ms, "max_batch_delay", 0, limits.MAX_BATCH_DELAY_MS)
        response_s = limits.bounded_int(spec.response_timeout_s or DEFAULT_RESPONSE_TIMEOUT_S, "response_timeout", 1,
                                        limits.MAX_TIMEOUT_S)
        startup_s = spec.startup_timeout_s or DEFAULT_STARTUP_TIMEOUT_S
        if not 0 < startup_s <= limits.MAX_TIMEOUT_S:
            raise InvalidArgument("startup_timeout", f"must be more than 0 s and at most {limits.MAX_TIMEOUT_S} s")
        resolved = await self.resolve(name, selector)
        if not resolved.ready:
            raise FailedPrecondition(f"version {resolved.version} has no artifact yet",
                                     reason=ErrorReason.VERSION_NOT_READY)
        try:
            url = await self.resolver.presigned_url(resolved.artifact_uri, self.presign_ttl_s)
        except ValueError as why:
            raise FailedPrecondition(f"version {resolved.version} cannot be served: {why}"[:200],
                                     reason=ErrorReason.ARTIFACT_NOT_SERVABLE) from None
        served = served_name(resolved.model_name, resolved.version)
        await self._refuse_if_loaded(resolved, served)
        try:
            async with _mapped(resolved, loading=True):
                await asyncio.wait_for(self.backend.register(
                    served, "", url, initial_workers=low, batch_size=batch_size, max_batch_delay_ms=delay_ms,
                    response_timeout_s=response_s, synchronous=spec.wait_until_ready), startup_s)
                if high != low:
                    await self.backend.scale(served, "", low, high, synchronous=False)
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"the model did not start within {startup_s:g} s",
                                   reason=ErrorReason.LOAD_TIMEOUT) from None
        return await self.describe(resolved.model_name, resolved.version)

    async def _refuse_if_loaded(self, resolved: ResolvedVersion, served: str) -> None:
        """ALREADY_EXISTS before anything is fetched (TorchServe's own answer to a second load of the
        same archive is not told apart from other failures)."""
        try:
            async with _mapped(resolved):
                await self.backend.describe(served, "")
        except NotFound:
            return
        raise AlreadyExists(f"version {resolved.version} of {resolved.model_name!r} is already loaded"[:200],
                            reason=ErrorReason.MODEL_ALREADY_LOADED)

    async def unload(self, name: str, version: str, drain_timeout_s: float | None) -> None:
        """New predictions are refused at once; those in flight here get `drain_timeout_s` to finish
        (default 30 s), then the model server lets the version go."""
        limits.model_name(name)
        limits.version(version)
        resolved = ResolvedVersion(name, version, "")
        served = served_name(name, version)
        self._unloading.add(served)
        try:
            await self._drained(served, DEFAULT_DRAIN_S if drain_timeout_s is None else drain_timeout_s)
            async with _mapped(resolved):
                await self.backend.unregister(served, "")
        finally:
            self._unloading.discard(served)

    async def _drained(self, served: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self._in_flight.get(served) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def scale(self, name: str, version: str, min_workers: int, max_workers: int,
                    wait_until_ready: bool) -> LoadedModel:
        limits.model_name(name)
        limits.version(version)
        low, high = limits.workers(min_workers, max_workers)
        async with _mapped(ResolvedVersion(name, version, "")):
            await self.backend.scale(served_name(name, version), "", low, high, synchronous=wait_until_ready)
        return await self.describe(name, version)

    async def describe(self, name: str, version: str) -> LoadedModel:
        limits.model_name(name)
        limits.version(version)
        async with _mapped(ResolvedVersion(name, version, "")):
            return _loaded(name, version, await self.backend.describe(served_name(name, version), ""))

    async def list_loaded(self, name_filter: str, page_size: int, page_token: str) -> tuple[list[LoadedModel], str]:
        if name_filter:
            limits.model_name(name_filter)
        size = limits.bounded_int(page_size or 100, "page_size", 1, 1000)
        if page_token and parse_served_name(page_token) is None:
            raise InvalidArgument("page_token", "not a token this service issued",
                                  reason=ErrorReason.INVALID_PAGE_TOKEN)
        async with _mapped(ResolvedVersion("", "", "")):
            listed = await self.backend.list_models()
        keys = sorted(_sort_key(model, version) for served, _ in listed
                      if (parsed := parse_served_name(served)) for model, version in [parsed]
                      if not name_filter or model == name_filter)
        after = _sort_key(*parse_served_name(page_token)) if page_token else None
        page = [k for k in keys if after is None or k > after][:size]
        models = []
        for model, number in page:
            try:
                models.append(await self.describe(model, str(number)))
            except NotFound:
                continue  # unloaded meanwhile
        more = len(page) == size and page[-1] != keys[-1]
        return models, served_name(page[-1][0], str(page[-1][1])) if more else ""


def _sort_key(model: str, version: str) -> tuple[str, int]:
    return model, int(version)


def _loaded(name: str, version: str, found: BackendModel) -> LoadedModel:
    ready = sum(1 for w in found.workers if w.status == "READY")
    if ready >= max(found.min_workers, 1):
        status = "READY"
    elif ready:
        status = "DEGRADED"
    elif found.state.value == "LOADING":
        status = "LOADING"
    else:
        status = "UNAVAILABLE"
    return LoadedModel(name, version, status, found.min_workers, found.max_workers, found.batch_size,
                       found.max_batch_delay_ms, found.response_timeout_s,
                       tuple(Worker(w.id, w.status, w.pid) for w in found.workers))


@asynccontextmanager
async def _mapped(model: ResolvedVersion, loading: bool = False):
    """The model server's failures as the caller should hear them."""
    where = {"model_name": model.model_name, "version": model.version}
    try:
        yield
    except ModelNotLoaded:
        raise NotFound(f"version {model.version} of {model.model_name!r} is not loaded in the model server"[:200],
                       reason=ErrorReason.MODEL_NOT_LOADED, metadata=where) from None
    except ModelAlreadyLoaded:
        raise AlreadyExists(f"version {model.version} of {model.model_name!r} is already loaded"[:200],
                            reason=ErrorReason.MODEL_ALREADY_LOADED, metadata=where) from None
    except ModelLoadFailed as failed:
        raise Internal(f"the model could not be loaded: {failed.message}", reason=ErrorReason.MODEL_LOAD_FAILED,
                       metadata=where) from None
    except WorkerDied:
        raise Unavailable("the model's worker died while serving the request; retry",
                          reason=ErrorReason.WORKER_DIED, metadata=where) from None
    except HandlerError as failed:
        if failed.client_fault:
            raise InvalidArgument("inputs", f"the model refused the input: {failed.message}",
                                  reason=ErrorReason.MODEL_HANDLER_ERROR) from None
        raise Internal(f"the model's handler failed: {failed.message}", reason=ErrorReason.MODEL_HANDLER_ERROR,
                       metadata=where) from None
    except BackendOverloaded as busy:
        raise ResourceExhausted(f"the model server is at capacity: {busy.message}",
                                reason=ErrorReason.BACKEND_OVERLOADED, metadata=where) from None
    except BackendTimeout:
        raise DeadlineExceeded("the model did not answer within the deadline",
                               reason=ErrorReason.PREDICTION_TIMEOUT, metadata=where) from None
    except (BackendRejected, BackendConflict) as refused:
        reason = ErrorReason.MODEL_LOAD_FAILED if loading else ErrorReason.INVALID_FIELD
        raise FailedPrecondition(f"the model server refused: {refused.message}", reason=reason,
                                 metadata=where) from None
    except BackendUnavailable:
        raise Unavailable("the model server is unavailable; retry later", reason=ErrorReason.BACKEND_UNAVAILABLE,
                          metadata=where) from None


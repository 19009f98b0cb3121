"""RouterClient (async) and ABTestingRouter (sync): A/B experiments, assignment, canaries (RouterService)."""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grpc
from mnbara.mlserving.catalog import BY_NAME
from mnbara.mlserving.router.v1 import router_pb2 as pb
from mnbara.mlserving.router.v1 import router_pb2_grpc

from ._base import AsyncClient, messages, model_input, struct
from ._methods import paged, unary
from ._sync import SyncClient
from .errors import InvalidArgumentError, MLServingError, NotFoundError
from .inference import Inputs

log = logging.getLogger("ml_serving.router")

Attributes = Mapping[str, Any]
"""User attributes for targeting, e.g. {"country": "DE", "plan": "premium"}."""


def _assign_variant_request(user_id: str, attributes: Attributes | None, segments: Sequence[str], experiment: str,
                            model_name: str, dry_run: bool) -> pb.AssignVariantRequest:
    return pb.AssignVariantRequest(user_id=user_id, attributes=struct(attributes), segments=segments,
                                   experiment=experiment, model_name=model_name, dry_run=dry_run)


class RouterClient(AsyncClient[router_pb2_grpc.RouterServiceStub]):
    """Async client of mnbara.mlserving.router.v1.RouterService."""

    stub_type = router_pb2_grpc.RouterServiceStub

    async def assign_variant(self, user_id: str, *, attributes: Attributes | None = None,
                             segments: Sequence[str] = (), experiment: str = "", model_name: str = "",
                             dry_run: bool = False, timeout: float | None = None) -> pb.AssignVariantResponse:
        """The model version this user gets: deterministic and sticky. Counts an exposure unless `dry_run`."""
        request = _assign_variant_request(user_id, attributes, segments, experiment, model_name, dry_run)
        return await self._call(self.stub.AssignVariant, request, timeout)

    async def predict(self, user_id: str, inputs: Inputs | bytes, *, attributes: Attributes | None = None,
                      segments: Sequence[str] = (), experiment: str = "", model_name: str = "",
                      raw_output: bool = False, timeout: float | None = None) -> pb.PredictResponse:
        """Assign the user, then predict with the assigned version (`inputs`: a dict or raw bytes)."""
        request = pb.PredictRequest(user_id=user_id, attributes=struct(attributes), segments=segments,
                                    experiment=experiment, model_name=model_name, raw_output=raw_output,
                                    **model_input(inputs))
        return await self._call(self.stub.Predict, request, timeout)

    async def create_experiment(self, experiment: pb.Experiment | Mapping[str, Any], *, paused: bool = False,
                                timeout: float | None = None) -> pb.CreateExperimentResponse:
        """Create an experiment (an Experiment message or a dict of its fields, e.g.
        {"name": "e1", "variants": [{"name": "control", "model_name": "m", "model_version": "1",
        "weight_bps": 5000, "control": True}, ...]}); running unless `paused`."""
        request = pb.CreateExperimentRequest(experiment=messages(pb.Experiment, [experiment])[0], paused=paused)
        return await self._call(self.stub.CreateExperiment, request, timeout)

    async def get_experiment(self, name: str, *, timeout: float | None = None) -> pb.GetExperimentResponse:
        """One experiment. Raises NotFoundError (EXPERIMENT_NOT_FOUND)."""
        return await self._call(self.stub.GetExperiment, pb.GetExperimentRequest(name=name), timeout)

    async def list_experiment_changes(self, name: str, *, page_size: int = 0, page_token: str = "",
                                      timeout: float | None = None) -> pb.ListExperimentChangesResponse:
        """One page of an experiment's history, oldest first: who changed what, when and why, and
        the figures behind the adaptive allocation's weight changes; `iter_experiment_changes` goes
        through every page. Raises NotFoundError (EXPERIMENT_NOT_FOUND), InvalidArgumentError
        (INVALID_PAGE_TOKEN)."""
        request = pb.ListExperimentChangesRequest(name=name, page_size=page_size, page_token=page_token)
        return await self._call(self.stub.ListExperimentChanges, request, timeout)

    async def record_outcome(self, *, experiment: str, user_id: str, metric: str = "", variant: str = "",
                             converted: bool | None = None, value: float | None = None, event_id: str = "",
                             timeout: float | None = None) -> pb.RecordOutcomeResponse:
        """Record an outcome (binary `converted` or numeric `value`) of a user; idempotent by `event_id`."""
        request = pb.RecordOutcomeRequest(experiment=experiment, user_id=user_id, metric=metric, variant=variant,
                                          converted=converted, value=value, event_id=event_id)
        return await self._call(self.stub.RecordOutcome, request, timeout)

    async def get_experiment_results(self, name: str, *, metric: str = "", confidence_level: float = 0.0,
                                     timeout: float | None = None) -> pb.GetExperimentResultsResponse:
        """Per-variant estimates with confidence intervals, the difference to control and a verdict."""
        request = pb.GetExperimentResultsRequest(name=name, metric=metric, confidence_level=confidence_level)
        return await self._call(self.stub.GetExperimentResults, request, timeout)

    list_experiments = unary(lambda stub: stub.ListExperiments, pb.ListExperimentsRequest,
                             pb.ListExperimentsResponse)
    update_experiment = unary(lambda stub: stub.UpdateExperiment, pb.UpdateExperimentRequest,
                              pb.UpdateExperimentResponse)
    pause_experiment = unary(lambda stub: stub.PauseExperiment, pb.PauseExperimentRequest, pb.PauseExperimentResponse)
    resume_experiment = unary(lambda stub: stub.ResumeExperiment, pb.ResumeExperimentRequest,
                              pb.ResumeExperimentResponse)
    stop_experiment = unary(lambda stub: stub.StopExperiment, pb.StopExperimentRequest, pb.StopExperimentResponse)
    batch_record_outcomes = unary(lambda stub: stub.BatchRecordOutcomes, pb.BatchRecordOutcomesRequest,
                                  pb.BatchRecordOutcomesResponse)
    record_exposures = unary(lambda stub: stub.RecordExposures, pb.RecordExposuresRequest,
                             pb.RecordExposuresResponse)
    start_canary = unary(lambda stub: stub.StartCanary, pb.StartCanaryRequest, pb.StartCanaryResponse)
    get_canary = unary(lambda stub: stub.GetCanary, pb.GetCanaryRequest, pb.GetCanaryResponse)
    list_canaries = unary(lambda stub: stub.ListCanaries, pb.ListCanariesRequest, pb.ListCanariesResponse)
    pause_canary = unary(lambda stub: stub.PauseCanary, pb.PauseCanaryRequest, pb.PauseCanaryResponse)
    resume_canary = unary(lambda stub: stub.ResumeCanary, pb.ResumeCanaryRequest, pb.ResumeCanaryResponse)
    rollback_canary = unary(lambda stub: stub.RollbackCanary, pb.RollbackCanaryRequest, pb.RollbackCanaryResponse)
    promote_canary = unary(lambda stub: stub.PromoteCanary, pb.PromoteCanaryRequest, pb.PromoteCanaryResponse)
    list_canary_events = unary(lambda stub: stub.ListCanaryEvents, pb.ListCanaryEventsRequest,
                               pb.ListCanaryEventsResponse)

    iter_experiments = paged(list_experiments, lambda page: page.experiments)
    iter_canaries = paged(list_canaries, lambda page: page.canaries)
    iter_canary_events = paged(list_canary_events, lambda page: page.events)
    iter_experiment_changes = paged(list_experiment_changes, lambda page: page.changes)


SEGMENT_KEYS = ("user_segments", "segments")
"""Context keys whose list value is taken as the user's segments (the first one present)."""
REFRESH_SECONDS_ENV = "ML_SERVING_ROUTER_REFRESH_SECONDS"
DEFAULT_REFRESH_SECONDS = 5.0
LIST_PAGE_SIZE = 1000
MAX_USER_ID_LENGTH = 256
_ERROR_DOMAIN = BY_NAME["router"].error_domain

_local: Any = None
"""The module `_local_assignment`, imported by the first router that starts (it loads the server's domain)."""


def _refresh_seconds(value: float | None) -> float:
    """The refresh period: the argument, else ML_SERVING_ROUTER_REFRESH_SECONDS, else 5 s."""
    if value is None:
        value = float(os.environ.get(REFRESH_SECONDS_ENV) or DEFAULT_REFRESH_SECONDS)
    if not value > 0:
        raise ValueError(f"refresh_seconds must be positive, got {value}")
    return value


def _valid_user(user_id: Any) -> bool:
    """What the server's check_user_id accepts: 1 to 256 characters of encodable text."""
    if user_id.__class__ is str and 0 < len(user_id) <= MAX_USER_ID_LENGTH and user_id.isascii():
        return True  # the usual user id, checked without encoding it
    if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_USER_ID_LENGTH:
        return False
    try:
        user_id.encode()
    except UnicodeEncodeError:
        return False
    return True


def _no_matching_experiment() -> NotFoundError:
    """The server's answer when no experiment applies and no model was named."""
    return NotFoundError(grpc.StatusCode.NOT_FOUND, "no running experiment applies to this user; name a model_name "
                         "to get its Production version", "NO_MATCHING_EXPERIMENT", _ERROR_DOMAIN)


def _close_if_alive(router: weakref.ref) -> None:
    """At interpreter exit: flush a router nobody closed (best effort)."""
    alive = router()
    if alive is not None:
        alive.close()


class ABTestingRouter(SyncClient[router_pb2_grpc.RouterServiceStub]):
    """The seed README's synchronous A/B router, for code that is not async:

    >>> router = ABTestingRouter()
    >>> model, version = router.get_model_for_user(user_id="user123", context={"user_segments": ["premium"]})

    `get_model_for_user` assigns locally, with no call per user: on first use it loads the
    running and paused experiments and turns each into the very definition the server assigns
    with, so both answer the same for every user. A daemon thread reloads them every
    `refresh_seconds` (default ML_SERVING_ROUTER_REFRESH_SECONDS, else 5); another sends the
    exposures every `exposure_flush_seconds` with RecordExposures (at most
    `max_buffered_exposures` wait; beyond that the oldest are dropped, see
    `exposures_dropped`). `close()` (or leaving a `with` block) stops both and sends what is
    left. `refresh()` reloads now, e.g. right after changing an experiment. `assign_variant`
    is the AssignVariant RPC itself. Other arguments: as every client (address, token, ...).

    Calls still go to the server for what it alone decides: an experiment not loaded yet (once),
    a model's Production version (once per refresh), a model under an active canary (each
    time), and a user id it rejects (to raise its error).
    """

    stub_type = router_pb2_grpc.RouterServiceStub

    def __init__(self, address: str | None = None, *, refresh_seconds: float | None = None,
                 exposure_flush_seconds: float = 1.0, max_buffered_exposures: int = 1_000_000,
                 **options: Any) -> None:
        super().__init__(address, **options)
        self.refresh_seconds = _refresh_seconds(refresh_seconds)
        if not exposure_flush_seconds > 0 or max_buffered_exposures < 1:
            raise ValueError("exposure_flush_seconds and max_buffered_exposures must be positive")
        self.exposure_flush_seconds = exposure_flush_seconds
        self.max_buffered_exposures = max_buffered_exposures
        self._snapshot: Any = None  # replaced whole, never changed: the request path reads it without a lock
        self._lock = threading.Lock()  # serialises the writers of _snapshot
        self._threads: tuple = ()
        self._exposures: Any = None
        self._append: Any = None
        self._count: Any = None
        self._at_exit: Any = None

    def assign_variant(self, user_id: str, *, attributes: Attributes | None = None, segments: Sequence[str] = (),
                       experiment: str = "", model_name: str = "", dry_run: bool = False,
                       timeout: float | None = None) -> pb.AssignVariantResponse:
        """As RouterClient.assign_variant, blocking."""
        request = _assign_variant_request(user_id, attributes, segments, experiment, model_name, dry_run)
        return self._call(self.stub.AssignVariant, request, timeout)

    def get_model_for_user(self, user_id: str, context: Attributes | None = None, *, model_name: str = "",
                           experiment: str = "", dry_run: bool = False,
                           timeout: float | None = None) -> tuple[str, str]:
        """(model_name, model_version) this user should be served, as AssignVariant would answer.
        `context` holds the user's attributes for targeting; a list under "user_segments" (or
        "segments") gives the segments. Counts an exposure unless `dry_run`. `timeout` bounds
        the calls that are sometimes needed (first use, an experiment not loaded yet, a
        model's Production version)."""
        snapshot = self._snapshot
        if snapshot is None:
            snapshot = self._start(timeout)
        # The common cases: the named experiment, or the model's first one, running and answering
        # everyone (no targeting, so no context to read).
        head = snapshot.by_name.get(experiment) if experiment else snapshot.heads.get(model_name)
        if (head is None or head.targeted or not head.active or user_id.__class__ is not str
                or not 0 < len(user_id) <= 256):  # MAX_USER_ID_LENGTH
            return self._assign(snapshot, user_id, context, model_name, experiment, dry_run, timeout)
        try:
            chosen = head.assign(user_id)
        except UnicodeEncodeError:  # a user id the server rejects: let it say why
            return _version(self._ask_server(user_id, context, model_name, experiment, dry_run, timeout))
        if not dry_run:
            exposed = head.exposed
            if user_id not in exposed:
                exposed.add(user_id)
                self._append((head.name, user_id, chosen))
                self._count()
        variant = chosen[0]
        return variant.model_name, variant.model_version

    def refresh(self, timeout: float | None = None) -> None:
        """Reload the experiments now (the background thread does it every refresh_seconds)."""
        if self._snapshot is None:
            self._start(timeout)
            return
        listed = list(self._listed(timeout))
        with self._lock:
            self._snapshot = _local.build_snapshot(listed, self._snapshot)

    def _refresh_tick(self) -> None:
        if self._snapshot is not None:  # not after close()
            self.refresh()

    @property
    def exposures_dropped(self) -> int:
        """Exposures never sent: dropped from a full buffer, or given up after failed sends."""
        buffer = self._exposures
        return 0 if buffer is None else buffer.dropped + buffer.unsent

    def close(self) -> None:
        """Stop the background threads, send the exposures still buffered (best effort), close the channel."""
        threads, self._threads = self._threads, ()
        for thread in threads:
            thread.stop(self.timeout or 10.0)
        if self._at_exit is not None:
            atexit.unregister(self._at_exit)
            self._at_exit = None
        if self._exposures is not None:
            try:
                self._flush_exposures()
            except Exception:  # noqa: BLE001 - best effort: closing must not fail
                log.warning("could not send the last exposures", exc_info=True)
        self._snapshot = None
        super().close()

    # --- loading ------------------------------------------------------------------------

    def _start(self, timeout: float | None) -> Any:
        """First use: load the experiments, then start the refresh and flush threads."""
        global _local
        with self._lock:
            if self._snapshot is not None:
                return self._snapshot
            if _local is None:
                from . import _local_assignment
                _local = _local_assignment
            snapshot = _local.build_snapshot(self._listed(timeout), None)
            buffer = _local.ExposureBuffer(self.max_buffered_exposures)
            self._exposures, self._append, self._count = buffer, buffer.append, buffer.count
            self._threads = (_local.Periodic(self, "_refresh_tick", self.refresh_seconds, "ab-router-refresh"),
                             _local.Periodic(self, "_flush_exposures", self.exposure_flush_seconds,
                                             "ab-router-exposures"))
            for thread in self._threads:
                thread.start()
            self._at_exit = functools.partial(_close_if_alive, weakref.ref(self))
            atexit.register(self._at_exit)
            self._snapshot = snapshot
            return snapshot

    def _listed(self, timeout: float | None) -> Iterator[pb.Experiment]:
        """Every running and paused experiment, all pages."""
        request = pb.ListExperimentsRequest(states=[pb.EXPERIMENT_STATE_RUNNING, pb.EXPERIMENT_STATE_PAUSED],
                                            page_size=LIST_PAGE_SIZE)
        while True:
            page = self._call(self.stub.ListExperiments, request, timeout)
            yield from page.experiments
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def _fetch(self, name: str, timeout: float | None) -> Any:
        """An experiment the snapshot lacks (stopped, or created since): GetExperiment, then kept.
        Raises NotFoundError (EXPERIMENT_NOT_FOUND) as AssignVariant would."""
        message = self._call(self.stub.GetExperiment, pb.GetExperimentRequest(name=name), timeout).experiment
        fetched = _local.LocalExperiment(message)
        with self._lock:
            snapshot = self._snapshot
            known = snapshot.by_name.get(name) if snapshot is not None else None
            if known is not None and known.revision >= fetched.revision:
                return known
            if snapshot is not None:
                self._snapshot = snapshot.with_experiment(fetched)
        return fetched

    # --- the other assignment paths -----------------------------------------------------

    def _assign(self, snapshot: Any, user_id: Any, context: Attributes | None, model_name: str, experiment: str,
                dry_run: bool, timeout: float | None) -> tuple[str, str]:
        """A named experiment, targeting, no experiment at all, or an unusual user id."""
        if not _valid_user(user_id):  # the server says why
            return _version(self._ask_server(user_id, context, model_name, experiment, dry_run, timeout))
        if experiment:
            return self._in_experiment(snapshot, user_id, context, experiment, dry_run, timeout)
        segments, attributes = _local.split_context(context, snapshot.conditions.get(model_name, False))
        not_targeted = _local.NOT_TARGETED
        for entry in snapshot.running.get(model_name, ()):
            chosen = entry.assign(user_id, attributes, segments, True)
            if chosen.reason is not not_targeted:
                return self._chosen(entry, user_id, chosen, dry_run)
        return self._default(snapshot, user_id, context, model_name, dry_run, timeout)

    def _in_experiment(self, snapshot: Any, user_id: str, context: Attributes | None, name: str, dry_run: bool,
                       timeout: float | None) -> tuple[str, str]:
        entry = snapshot.by_name.get(name) or self._fetch(name, timeout)
        segments, attributes = _local.split_context(context, entry.conditions)
        return self._chosen(entry, user_id, entry.assign(user_id, attributes, segments, entry.active), dry_run)

    def _chosen(self, entry: Any, user_id: str, chosen: Any, dry_run: bool) -> tuple[str, str]:
        """The answer, with its exposure buffered when the server would count one."""
        if not dry_run and entry.active and chosen.reason in _local.COUNTED and user_id not in entry.exposed:
            entry.exposed.add(user_id)
            self._append((entry.name, user_id, chosen))
            self._count()
        return _version(chosen.variant)

    def _default(self, snapshot: Any, user_id: str, context: Attributes | None, model_name: str, dry_run: bool,
                 timeout: float | None) -> tuple[str, str]:
        """No running experiment applies: the model's Production version, asked once per refresh."""
        if not model_name:
            raise _no_matching_experiment()
        cached = snapshot.defaults.get(model_name)
        if cached is not None:
            return cached
        answer = self._ask_server(user_id, context, model_name, "", dry_run, timeout)
        if answer.reason == pb.ASSIGNMENT_REASON_DEFAULT:
            snapshot.defaults[model_name] = _version(answer)
        elif answer.experiment:  # the server knows a running experiment the snapshot does not yet
            for refresher in self._threads[:1]:
                refresher.wake()
        # (an active canary's answer is the server's alone: asked again each time)
        return _version(answer)

    def _ask_server(self, user_id: Any, context: Attributes | None, model_name: str, experiment: str, dry_run: bool,
                    timeout: float | None) -> pb.Assignment:
        """AssignVariant itself, for what only the server may decide (a user id it rejects, the
        Production version), with the context split as the old client sent it."""
        segments, attributes = _local.split_context(context, True)
        return self.assign_variant(user_id, attributes=attributes, segments=segments, experiment=experiment,
                                   model_name=model_name, dry_run=dry_run, timeout=timeout).assignment

    # --- exposures ----------------------------------------------------------------------

    def _flush_exposures(self) -> None:
        """Send what is buffered with RecordExposures, in batches of at most 10,000; a batch
        that fails for a passing reason is kept for the next flush."""
        buffer = self._exposures
        keys = buffer.take()
        if self._snapshot is not None:
            _local.forget_exposed(self._snapshot)
        batch_size = _local.MAX_EXPOSURE_BATCH
        for start in range(0, len(keys), batch_size):
            try:
                self._send_exposures(keys[start:start + batch_size])
            except MLServingError as error:
                log.warning("could not send %d exposures (%s); trying again at the next flush",
                            len(keys) - start, error)
                buffer.failed(keys[start:])
                return

    def _send_exposures(self, batch: list[tuple]) -> None:
        """One RecordExposures call. When the server rejects an item (its variant removed, its
        experiment unknown), the items like it are dropped with a warning and the rest sent again."""
        while batch:
            request = pb.RecordExposuresRequest(exposures=_local.records(batch))
            try:
                self._call(self.stub.RecordExposures, request)
            except (InvalidArgumentError, NotFoundError) as error:
                index = error.metadata.get("index", "")
                if not index.isdigit() or int(index) >= len(batch):
                    raise
                batch = _without_rejected(batch, batch[int(index)], error)
                continue
            self._exposures.succeeded()
            return


def _without_rejected(batch: list[tuple], rejected: tuple, error: MLServingError) -> list[tuple]:
    """The batch without the rejected item and those the same error would reject."""
    if isinstance(error, NotFoundError):
        def alike(key: tuple) -> bool:
            return key[0] == rejected[0]
    elif error.reason == "UNKNOWN_VARIANT":
        def alike(key: tuple) -> bool:
            return key[0] == rejected[0] and key[2] == rejected[2]
    else:
        def alike(key: tuple) -> bool:
            return key == rejected
    kept = [key for key in batch if not alike(key)]
    log.warning("dropping %d exposures the server rejects, e.g. %s: %s", len(batch) - len(kept), rejected, error)
    return kept


def _version(answer: Any) -> tuple[str, str]:
    """(model_name, model_version) of a Variant or an Assignment message."""
    return answer.model_name, answer.model_version

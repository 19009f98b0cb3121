"""What ABTestingRouter assigns with locally: the server's own definitions, an immutable snapshot
of them, the context split, the exposure buffer and the background threads.

Why the server's code: each served Experiment becomes its definition through
`convert.definition_from_pb`, the function the server's tests check it against, and assignment
runs the domain's `Assigner`; one implementation, so the client and the server cannot disagree
on a user. Why a snapshot: the refresh thread builds a new one and swaps it in with a single
attribute assignment, so the per-call path reads it without a lock.

Imported on first use only: the server's domain pulls in scipy (about a second).
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import timezone
from typing import Any

from mnbara.mlserving.router.v1 import router_pb2 as pb
from ml_serving_server.services.router.convert import definition_from_pb
from ml_serving_server.services.router.domain.assignment import AssignmentReason

from .router import SEGMENT_KEYS, log

MAX_EXPOSURE_BATCH = 10_000
"""RecordExposures takes at most this many exposures per call."""
MAX_RETRIES = 3
"""Flushes that retry a failed batch before its exposures are given up."""
MAX_EXPOSED_USERS = 1_000_000
"""Users remembered per experiment revision as already reported (beyond that, forgotten and reported again)."""
NOT_TARGETED = AssignmentReason.NOT_TARGETED
HOLDOUT = AssignmentReason.HOLDOUT
COUNTED = frozenset({AssignmentReason.EXPERIMENT_BUCKET, AssignmentReason.USER_OVERRIDE, HOLDOUT})
"""Reasons that count as an exposure, as in the server's RouterService._expose."""


def _created(message: pb.Experiment) -> float:
    """create_time as ExperimentCatalog sorts it (datetime.timestamp(), 0.0 when unset)."""
    if not message.HasField("create_time"):
        return 0.0
    return message.create_time.ToDatetime(tzinfo=timezone.utc).timestamp()


class LocalExperiment:
    """One experiment revision as the client keeps it. Its assigner (10,000 prepared answers) is
    built on first use, as the server does, so unused experiments cost no memory.

    `exposed` holds the users already reported for this revision: within one revision a user
    always gets the same counted answer, and the server counts a user once per variant, so a
    repeat needs no report (one set lookup instead of an append the flush thread would undo).
    A new revision (a ramp, a pause, a resume) starts empty, so nothing the server may have
    ignored meanwhile stays unreported."""

    __slots__ = ("name", "model_name", "revision", "active", "stopped", "priority", "created", "definition",
                 "targeted", "conditions", "compiled", "assign", "exposed")

    def __init__(self, message: pb.Experiment):
        self.definition = definition_from_pb(message)
        self.name = message.name
        self.model_name = self.definition.variants[0].model_name
        self.revision = message.revision
        self.active = message.state == pb.EXPERIMENT_STATE_RUNNING
        self.stopped = message.state == pb.EXPERIMENT_STATE_STOPPED
        self.priority = message.priority
        self.created = _created(message)
        targeting = self.definition.targeting
        self.targeted = not targeting.is_empty
        self.conditions = bool(targeting.conditions)
        self.compiled = False
        self.assign: Callable[..., Any] = self._compile_and_assign
        self.exposed: set[str] = set()

    def compile(self) -> None:
        """Build the assigner now and call it directly from then on."""
        self.assign = self.definition.assigner.assign
        self.compiled = True

    def _compile_and_assign(self, *args: Any) -> Any:
        self.compile()
        return self.assign(*args)

    def order(self) -> tuple[int, float, str]:
        """The server's selection order: priority descending, then oldest, then name."""
        return -self.priority, self.created, self.name


def forget_exposed(snapshot: Snapshot) -> None:
    """Bound the memory of `exposed`: a revision past MAX_EXPOSED_USERS starts over."""
    for experiment in snapshot.by_name.values():
        if len(experiment.exposed) > MAX_EXPOSED_USERS:
            experiment.exposed.clear()


class Snapshot:
    """Immutable definitions (by name, and the running ones per model in selection order),
    plus `defaults`, the Production versions looked up since this snapshot was built."""

    __slots__ = ("by_name", "running", "heads", "conditions", "defaults")

    def __init__(self, experiments: Iterable[LocalExperiment], defaults: dict[str, tuple[str, str]] | None = None):
        self.by_name = {e.name: e for e in experiments}
        running = sorted((e for e in self.by_name.values() if e.active), key=LocalExperiment.order)
        by_model: dict[str, list[LocalExperiment]] = {"": running}
        for experiment in running:
            by_model.setdefault(experiment.model_name, []).append(experiment)
        self.running = {model: tuple(entries) for model, entries in by_model.items()}
        # A first experiment without targeting answers every user: no context to read, no loop.
        self.heads = {model: entries[0] for model, entries in self.running.items()
                      if entries and not entries[0].targeted}
        self.conditions = {model: any(e.conditions for e in entries) for model, entries in self.running.items()}
        self.defaults = {} if defaults is None else defaults

    def with_experiment(self, experiment: LocalExperiment) -> Snapshot:
        """This snapshot plus one experiment fetched by name (its cached defaults kept)."""
        return Snapshot([*self.by_name.values(), experiment], self.defaults)

    def stopped(self) -> list[LocalExperiment]:
        return [e for e in self.by_name.values() if e.stopped]


def build_snapshot(messages: Iterable[pb.Experiment], previous: Snapshot | None) -> Snapshot:
    """A snapshot of the listed experiments. Unchanged ones (same revision) are reused with their
    compiled assigner; a changed one that was in use is compiled here, off the request path.
    Stopped experiments fetched by name are carried over: a stop is final, so they cannot go stale."""
    known = previous.by_name if previous is not None else {}
    experiments = []
    for message in messages:
        before = known.get(message.name)
        if before is not None and before.revision >= message.revision:  # unchanged, or fetched newer meanwhile
            experiments.append(before)
            continue
        experiment = LocalExperiment(message)
        if before is not None and before.compiled:
            experiment.compile()
        experiments.append(experiment)
    listed = {e.name for e in experiments}
    carried = [e for e in previous.stopped() if e.name not in listed] if previous is not None else []
    return Snapshot(experiments + carried)


def split_context(context: Mapping[str, Any] | None, attributes_needed: bool) -> tuple[Any, Mapping[str, Any] | None]:
    """(segments, attributes) as the server receives them from the old client: the first of
    SEGMENT_KEYS present gives the segments and is not an attribute. The context is copied
    only when a targeting condition will read the attributes."""
    if not context:
        return (), context
    for key in SEGMENT_KEYS:
        if key in context:
            segments = context[key]
            if attributes_needed:
                context = {name: value for name, value in context.items() if name != key}
            return (segments if segments is not None else ()), context
    return (), context


class ExposureBuffer:
    """Assignments to report, appended on the request path (one deque append) and sent by the
    flush thread. Bounded: when full the oldest are dropped, and counted in `dropped`."""

    def __init__(self, limit: int):
        self._items: deque = deque(maxlen=limit)
        self._appended = itertools.count()  # read by taking the next value: _reads counts those
        self._reads = 0
        self._taken = 0
        self._failures = 0
        self.dropped = 0
        """Assignments dropped unsent because the buffer was full."""
        self.unsent = 0
        """Exposures given up after failed sends."""
        self.pending: list[tuple] = []
        """Keys whose send failed, sent first at the next flush."""

    def succeeded(self) -> None:
        """A send went through: failures in a row start over."""
        self._failures = 0

    @property
    def append(self) -> Callable[[tuple], None]:
        """The request path's append of (experiment name, user id, Assignment)."""
        return self._items.append

    @property
    def count(self) -> Callable[[], int]:
        """The request path's tick of the append counter, called after `append` (so a take
        between the two never counts a drop that did not happen)."""
        return self._appended.__next__

    def take(self) -> list[tuple]:
        """Everything buffered as distinct (experiment, user, variant, holdout) keys, after the
        keys of a failed send; updates `dropped`."""
        items = self._items
        keys = dict.fromkeys(self.pending)
        self.pending = []
        appended = next(self._appended) - self._reads
        self._reads += 1
        waiting = len(items)
        # Exact unless an append falls between the two reads; a later take then corrects it.
        self.dropped = max(self.dropped, appended - self._taken - waiting)
        popleft, popped = items.popleft, 0
        for _ in range(waiting):
            try:
                name, user_id, chosen = popleft()
            except IndexError:  # close() flushing while a stuck flush thread drains too
                break
            popped += 1
            keys[name, user_id, chosen.variant.name, chosen.reason is HOLDOUT] = None
        self._taken += popped
        return list(keys)

    def failed(self, keys: list[tuple]) -> None:
        """A send failed: keep its keys for the next flush, up to MAX_RETRIES times in a row."""
        self._failures += 1
        if self._failures > MAX_RETRIES:
            self.unsent += len(keys)
            self._failures = 0
            log.warning("gave up sending %d exposures after %d attempts", len(keys), MAX_RETRIES + 1)
        else:
            self.pending = keys + self.pending


def records(keys: list[tuple]) -> list[pb.ExposureRecord]:
    return [pb.ExposureRecord(experiment=name, user_id=user_id, variant=variant, holdout=holdout)
            for name, user_id, variant, holdout in keys]


class Periodic:
    """A daemon thread that calls `owner.<tick>()` every `interval` seconds, or when woken.
    It holds the owner weakly, so a router nobody closed can still be collected (the thread
    then ends); a failing tick is logged as a warning and tried again at the next one."""

    def __init__(self, owner: object, tick: str, interval: float, name: str):
        self._owner = weakref.ref(owner)
        self._tick, self._interval = tick, interval
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float | None) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not threading.current_thread() and self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            owner = None if self._stopping else self._owner()
            if owner is None:
                return
            try:
                getattr(owner, self._tick)()
            except Exception:  # noqa: BLE001 - keep serving from what is cached; try again next tick
                log.warning("%s failed; trying again in %.1f s", self._thread.name, self._interval, exc_info=True)
            del owner

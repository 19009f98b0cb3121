"""Materialisation: the views' values computed from the source and written to the online store.

A run of one view (a job):
  1. Takes the view's lock (one materialisation per view at a time, across replicas), else
     FAILED_PRECONDITION (MATERIALIZATION_IN_PROGRESS).
  2. Reads the view's state: its watermark (the largest event time materialised) and the
     definition hash it was computed with. INCREMENTAL reads the entities whose rows have an
     event time > the watermark; a first run, or a changed definition, is FULL: every entity.
  3. Fixes its window: up to the request's end_time, else the source's largest event time now.
     The keys changed in the window, in ascending order, are recomputed in batches (the view's
     query restricted to the batch's keys) and written, one round trip per batch.
  4. After each batch is written, stores the job's progress: the batch's last key. A job that
     stops (crash, cancel, failure) leaves that resume point; the next job of the view with the
     same mode and definition takes the stopped job's window and skips the keys up to it, so at
     most the one batch in flight is done twice (rewriting a hash is idempotent: nothing is lost
     or counted twice).
  5. Succeeds: the job and the view's new watermark (the window's end) are stored together.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from datetime import datetime, timezone
from typing import Callable, Sequence

from ....errors import DomainError, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from .errors import ErrorReason
from .feature_views import FeatureView
from .ports import (
    EncodedRow,
    EntityRow,
    FeatureSource,
    Job,
    JobError,
    MaterializationState,
    OnlineStore,
    ViewLock,
    ViewState,
)
from .schema import FeatureSchema
from .values import EntityKey, key_from_text, key_text

log = logging.getLogger(__name__)

INCREMENTAL, FULL = "INCREMENTAL", "FULL"
QUEUED, RUNNING, SUCCEEDED, FAILED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED"
UNFINISHED = (QUEUED, RUNNING, FAILED)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Materializer:
    def __init__(self, schema: FeatureSchema, source: FeatureSource, online: OnlineStore,
                 state: MaterializationState, *, batch_size: int = 1000,
                 clock: Callable[[], datetime] = _now):
        if batch_size < 1:
            raise ValueError("batch_size must be positive")
        self._schema = schema
        self._source, self._online, self._state = source, online, state
        self._batch_size = batch_size
        self._clock = clock
        self._tasks: set[asyncio.Task] = set()

    async def materialize(self, feature_views: Sequence[str], mode: str = INCREMENTAL, *,
                          start_time: datetime | None = None, end_time: datetime | None = None,
                          wait: bool = False, unless_since: datetime | None = None) -> list[Job]:
        """Queue one job per view (every view when none is named); with `wait`, answer after they
        end (a failed job is answered with its error, not raised). `unless_since`: no job for a
        view that has one created at or after that time (checked under the view's lock, so two
        replicas firing one schedule start one job)."""
        views = self._views(feature_views)
        if mode not in (INCREMENTAL, FULL):
            raise InvalidArgument("mode", "must be INCREMENTAL or FULL")
        if start_time is not None and mode != FULL:
            raise InvalidArgument("start_time", "only a FULL materialisation reads a window from a start time")
        if start_time is not None and end_time is not None and start_time > end_time:
            raise InvalidArgument("start_time", "must not be after end_time", reason=ErrorReason.INVALID_TIME_RANGE)
        locks: list[ViewLock] = []
        try:
            for view in views:
                lock = await self._state.try_lock(view.name)
                if lock is None:
                    raise FailedPrecondition(f"a materialisation of feature view {view.name} is already running",
                                             reason=ErrorReason.MATERIALIZATION_IN_PROGRESS,
                                             metadata={"feature_view": view.name})
                locks.append(lock)
            if unless_since is not None:
                views, locks = await self._without_jobs_since(views, locks, unless_since)
            jobs = []
            for view in views:
                job = Job(job_id=str(uuid.uuid4()), feature_view=view.name, mode=mode, state=QUEUED,
                          definition_hash=view.definition_hash, create_time=self._clock(),
                          window_start=start_time, requested_until=end_time)
                await self._state.create_job(job)
                jobs.append(job)
        except BaseException:
            await asyncio.gather(*(lock.release() for lock in locks), return_exceptions=True)
            raise
        tasks = []
        for view, job, lock in zip(views, jobs, locks):
            task = asyncio.create_task(self._run_locked(view, job, lock), name=f"materialize {view.name}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            tasks.append(task)
        if not wait:
            return [replace(job) for job in jobs]
        return list(await asyncio.gather(*(asyncio.shield(task) for task in tasks)))

    async def _without_jobs_since(self, views, locks, since: datetime):
        """The views (and their locks) with no job created at or after `since`; the others' locks given back."""
        kept_views, kept_locks = [], []
        for view, lock in zip(views, locks):
            newest = await self._state.newest_job_time(view.name)
            if newest is not None and newest >= since:
                await lock.release()
            else:
                kept_views.append(view)
                kept_locks.append(lock)
        return tuple(kept_views), kept_locks

    async def job(self, job_id: str) -> Job:
        """One job as it is now (its progress while it runs)."""
        try:
            canonical = str(uuid.UUID(job_id)) if len(job_id) <= 36 else ""
        except ValueError:
            canonical = ""
        if not canonical:
            raise InvalidArgument("job_id", "must be a job id (a UUID) as MaterializeFeatures answered it")
        job = await self._state.get_job(canonical)
        if job is None:
            raise NotFound(f"no materialisation job {canonical}", reason=ErrorReason.MATERIALIZATION_JOB_NOT_FOUND,
                           metadata={"job_id": canonical})
        return job

    def _views(self, names: Sequence[str]) -> tuple[FeatureView, ...]:
        if not names:
            return self._schema.views
        if len(names) > len(self._schema.views):
            names = list(dict.fromkeys(names))  # a repeat is no new view; more names than views: an unknown one
        seen: dict[str, FeatureView] = {}
        for index, name in enumerate(names):
            view = self._schema.view(name, field=f"feature_views[{index}]")
            seen.setdefault(view.name, view)
        return tuple(seen.values())

    async def _run_locked(self, view: FeatureView, job: Job, lock: ViewLock) -> Job:
        try:
            return await self.run(view, job)
        finally:
            try:
                await lock.release()
            except Exception:  # noqa: BLE001 - the lock goes with its connection anyway
                log.warning("could not release the materialisation lock of %s", view.name, exc_info=True)

    async def run(self, view: FeatureView, job: Job) -> Job:
        """Run a queued job whose view lock the caller holds. A cancel leaves the job as it is
        (RUNNING, with its progress): the next job resumes it, as after a crash."""
        try:
            await self._run(view, job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the job records the failure, whatever it is
            job.state, job.end_time = FAILED, self._clock()
            job.error = _job_error(exc)
            if not isinstance(exc, DomainError):
                log.exception("materialisation of %s failed", view.name)
            try:
                await self._state.update_job(job)
            except Exception:  # noqa: BLE001
                log.warning("could not record the failure of job %s", job.job_id, exc_info=True)
        return job

    async def _run(self, view: FeatureView, job: Job) -> None:
        previous = await self._state.view_state(view.name)
        watermark = None
        if job.mode == INCREMENTAL:
            if previous is not None and previous.definition_hash == view.definition_hash:
                watermark = previous.materialized_until
                job.window_start = watermark
            else:
                job.mode = FULL  # a first run, or a changed definition: every entity
        resume_after: EntityKey | None = None
        stopped = await self._state.last_job(view.name, before=job)
        if stopped is not None and stopped.state in UNFINISHED and stopped.resume_after is not None \
                and stopped.mode == job.mode and stopped.definition_hash == view.definition_hash \
                and stopped.window_start == job.window_start \
                and (job.requested_until is None or job.requested_until == stopped.window_end):
            job.window_end = stopped.window_end
            job.resumed_job_id = stopped.job_id
            resume_after = key_from_text(view, stopped.resume_after)
            job.resume_after = stopped.resume_after
        if stopped is not None and stopped.state in (QUEUED, RUNNING):
            stopped.state, stopped.end_time = FAILED, self._clock()
            stopped.error = JobError("INTERNAL", f"interrupted; resumed by job {job.job_id}" if job.resumed_job_id
                                     else "interrupted")
            await self._state.update_job(stopped)
        if job.window_end is None:
            job.window_end = job.requested_until or await self._source.max_event_time(view)
        job.state, job.start_time = RUNNING, self._clock()
        keys: list[EntityKey] = []
        if job.window_end is not None:
            keys = await self._source.changed_keys(view, after=watermark,
                                                   since=job.window_start if job.mode == FULL else None,
                                                   until=job.window_end if job.mode == INCREMENTAL
                                                   else job.requested_until)
        every_key = keys
        if resume_after is not None:
            keys = [key for key in keys if key > resume_after]
        job.entities_total = len(keys)  # this job's own: a resumed job counts what it writes
        await self._state.update_job(job)
        await self._copy(view, job, keys)
        if job.mode == FULL and job.window_start is None and job.requested_until is None:
            await self._remove_deleted(view, job, every_key)
        job.state, job.end_time = SUCCEEDED, self._clock()
        materialized_until = job.window_end
        if watermark is not None and (materialized_until is None or materialized_until < watermark):
            materialized_until = watermark  # an earlier end_time never moves the watermark back
        await self._state.finish(job, ViewState(view.name, view.definition_hash, materialized_until, job.end_time))

    async def _read(self, view: FeatureView, keys: list[EntityKey]) -> list[EncodedRow] | list[EntityRow]:
        """A batch's rows, encoded by the source where it can (no Python value in between), else typed."""
        encoded = await self._source.encoded_rows(view, keys)
        return encoded if encoded is not None else await self._source.rows(view, keys)

    async def _remove_deleted(self, view: FeatureView, job: Job, source_keys: list[EntityKey]) -> None:
        """After a FULL run over the whole source: remove the online entities the source no longer
        has. A candidate is asked of the source once more (one that appeared since the key scan, read
        through meanwhile, stays)."""
        known = set(source_keys)
        candidates = sorted((key for key in await self._online.keys(view) if key not in known), key=str)
        for start in range(0, len(candidates), self._batch_size):
            batch = candidates[start:start + self._batch_size]
            present = {row.key for row in await self._source.rows(view, batch)}
            gone = [key for key in batch if key not in present]
            await self._online.delete(view, gone)
            job.entities_deleted += len(gone)
        if candidates:
            await self._state.update_job(job)

    async def _copy(self, view: FeatureView, job: Job, keys: list[EntityKey]) -> None:
        """Batch by batch from the source into the online store, the job's progress recorded after
        each write. The next batch's rows are read while this one is written: the source and Redis
        work at once, and the order of writes and progress stays the batches' order."""
        batches = [keys[start:start + self._batch_size] for start in range(0, len(keys), self._batch_size)]
        if not batches:
            return
        reading = asyncio.ensure_future(self._read(view, batches[0]))
        try:
            for index, batch in enumerate(batches):
                rows = await reading
                if index + 1 < len(batches):
                    reading = asyncio.ensure_future(self._read(view, batches[index + 1]))
                if rows and isinstance(rows[0], EncodedRow):
                    await self._online.write_encoded(view, rows, self._clock())
                else:
                    await self._online.write(view, rows, self._clock())
                job.entities_written += len(rows)
                job.resume_after = key_text(batch[-1])
                await self._state.update_job(job)
        finally:  # a failed or cancelled run leaves no read behind (nor an unretrieved error)
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    async def close(self) -> None:
        """Cancel the running jobs (they resume at the next run)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _job_error(exc: Exception) -> JobError:
    if isinstance(exc, DomainError):
        code = "UNAVAILABLE" if isinstance(exc, Unavailable) else "FAILED_PRECONDITION"
        return JobError(exc.reason.name, exc.message, code)
    return JobError("INTERNAL", "the materialisation failed unexpectedly (see the server's log)", "INTERNAL")

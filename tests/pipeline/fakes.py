"""In-memory implementations of the feature store's ports, for domain tests."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from ml_serving_server.services.pipeline.domain.feature_views import Entity, Feature, FeatureView, Source, ValueType
from ml_serving_server.services.pipeline.domain.ports import (
    EntityRow,
    Job,
    OnlineStoreUnavailable,
    SourceUnavailable,
    StateStoreUnavailable,
    StoredEntity,
    ViewState,
)

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def view(name: str = "scores", *, ttl: timedelta | None = None, compute_on_miss: bool = True,
         key_type: ValueType = ValueType.INT, query: str = "SELECT user_id, score, tags, t FROM s") -> FeatureView:
    return FeatureView(name=name, entity=Entity("user", "user_id", key_type),
                       features=(Feature("score", ValueType.FLOAT), Feature("tags", ValueType.STRING_LIST)),
                       source=Source(query, "t"), ttl=ttl, compute_on_miss=compute_on_miss)


class FakeSource:
    def __init__(self):
        self.tables: dict[str, dict[object, EntityRow]] = {}
        self.down = False
        self.row_calls: list[list] = []
        self.fail_on_rows: int | None = None  # the n-th rows() call (1-based) fails

    def put(self, view_name: str, key, event_time: datetime, **values) -> None:
        self.tables.setdefault(view_name, {})[key] = EntityRow(key, event_time, values)

    def _check(self):
        if self.down:
            raise SourceUnavailable()

    async def max_event_time(self, view):
        self._check()
        rows = self.tables.get(view.name, {}).values()
        return max((r.event_time for r in rows), default=None)

    async def changed_keys(self, view, *, after, since, until):
        self._check()
        return sorted(k for k, r in self.tables.get(view.name, {}).items()
                      if (after is None or r.event_time > after) and (since is None or r.event_time >= since)
                      and (until is None or r.event_time <= until))

    async def encoded_rows(self, view, keys):
        return None  # the typed path: what these fakes check

    async def rows(self, view, keys, *, timeout_s=None):
        self._check()
        self.row_calls.append(list(keys))
        if self.fail_on_rows is not None and len(self.row_calls) == self.fail_on_rows:
            raise SourceUnavailable()
        table = self.tables.get(view.name, {})
        return [table[k] for k in keys if k in table]


class FakeOnline:
    def __init__(self):
        self.hashes: dict[tuple[str, object], StoredEntity] = {}
        self.writes: list[tuple[str, list]] = []  # (view, keys) per round trip
        self.reads = 0
        self.down = False
        self.fail_on_write: int | None = None  # the n-th write (1-based) raises

    async def write(self, view, rows, computed_at):
        if self.down:
            raise OnlineStoreUnavailable()
        if self.fail_on_write is not None and len(self.writes) + 1 == self.fail_on_write:
            raise RuntimeError("injected writer failure")
        self.writes.append((view.name, [r.key for r in rows]))
        for row in rows:
            self.hashes[(view.name, row.key)] = StoredEntity(dict(row.values), row.event_time, computed_at,
                                                              view.definition_hash)

    async def read_views(self, reads):
        if self.down:
            raise OnlineStoreUnavailable()
        self.reads += 1  # one round trip
        return [self._found(view, keys, features) for view, keys, features in reads]

    def _found(self, view, keys, features):
        found = {}
        for key in keys:
            entity = self.hashes.get((view.name, key))
            if entity is not None:
                found[key] = entity._replace(values={f: entity.values.get(f) for f in features})
        return found

    async def keys(self, view):
        if self.down:
            raise OnlineStoreUnavailable()
        return [key for (name, key) in self.hashes if name == view.name]

    async def delete(self, view, keys):
        if self.down:
            raise OnlineStoreUnavailable()
        for key in keys:
            self.hashes.pop((view.name, key), None)

    def snapshot(self, view_name: str) -> dict:
        return {k: (e.values, e.event_time) for (v, k), e in self.hashes.items() if v == view_name}

    async def ping(self):
        return not self.down

    async def close(self):
        pass


class _Lock:
    def __init__(self, state, name):
        self.state, self.name = state, name

    async def release(self):
        self.state.locked.discard(self.name)


class FakeState:
    def __init__(self):
        self.locked: set[str] = set()
        self.states: dict[str, ViewState] = {}
        self.jobs: list[Job] = []
        self.down = False

    def _check(self):
        if self.down:
            raise StateStoreUnavailable()

    async def try_lock(self, name):
        self._check()
        if name in self.locked:
            return None
        self.locked.add(name)
        return _Lock(self, name)

    async def view_states(self):
        self._check()
        return dict(self.states)

    async def view_state(self, name):
        self._check()
        return self.states.get(name)

    async def create_job(self, job):
        self._check()
        self.jobs.append(replace(job))

    async def update_job(self, job):
        self._check()
        self.jobs = [replace(job) if j.job_id == job.job_id else j for j in self.jobs]

    async def newest_job_time(self, name):
        return max((j.create_time for j in self.jobs if j.feature_view == name), default=None)

    async def get_job(self, job_id):
        found = [j for j in self.jobs if j.job_id == job_id]
        return replace(found[0]) if found else None

    async def last_job(self, name, *, before):
        index = next(i for i, j in enumerate(self.jobs) if j.job_id == before.job_id)
        earlier = [j for j in self.jobs[:index] if j.feature_view == name]
        return replace(earlier[-1]) if earlier else None

    async def finish(self, job, state):
        await self.update_job(job)
        self.states[state.feature_view] = state

    async def ping(self):
        return not self.down

    async def close(self):
        pass

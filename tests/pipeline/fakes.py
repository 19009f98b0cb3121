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

    async def recent_values(self, view, feature, *, start, end, limit):
        self._check()
        rows = sorted((r for r in self.tables.get(view.name, {}).values() if start <= r.event_time <= end),
                      key=lambda r: r.event_time, reverse=True)
        return [float(r.values[feature]) for r in rows if r.values.get(feature) is not None][:limit]

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


# ----- retraining runs -----

class FakeRunStore:
    """The RunStore port in memory, with the PostgreSQL store's rules (tests/pipeline/adapters
    checks the real one against the same ones): claims in creation order, writes fenced by
    (run, worker, attempt, RUNNING)."""

    def __init__(self):
        from ml_serving_server.services.pipeline.domain import retraining as r
        self._r = r
        self.runs: dict[str, object] = {}  # run_id -> Run, in creation order
        self.down = False

    def _check(self):
        if self.down:
            raise StateStoreUnavailable()

    def _fenced(self, attempt):
        run = self.runs.get(attempt.run_id)
        if run is None or run.state is not self._r.RunState.RUNNING or \
                (run.worker_id, run.attempt) != (attempt.worker_id, attempt.attempt):
            return None
        return run

    async def create(self, run):
        self._check()
        for earlier in self.runs.values():
            same_key = run.idempotency_key and earlier.model_name == run.model_name and \
                earlier.idempotency_key == run.idempotency_key
            alert_busy = run.trigger is self._r.Trigger.ALERT and earlier.trigger is self._r.Trigger.ALERT and \
                earlier.model_name == run.model_name and not earlier.state.ended
            if same_key or alert_busy:
                return replace(earlier), True
        self.runs[run.run_id] = replace(run)
        return replace(run), False

    async def get(self, run_id):
        self._check()
        run = self.runs.get(run_id)
        return None if run is None else replace(run)

    async def list(self, *, model_name, states, limit, after_seq):
        self._check()
        ordered = list(enumerate(self.runs.values(), start=1))[::-1]
        chosen = [(seq, run) for seq, run in ordered if (not model_name or run.model_name == model_name)
                  and (not states or run.state in states) and (not after_seq or seq < after_seq)]
        page = chosen[:limit]
        return [replace(run) for _, run in page], page[-1][0] if len(chosen) > limit else None

    async def cancel(self, run_id, now):
        self._check()
        run = self.runs.get(run_id)
        if run is None:
            return None
        if run.state is self._r.RunState.QUEUED:
            run.state, run.end_time, run.cancel_requested = self._r.RunState.CANCELLED, now, True
        elif run.state is self._r.RunState.RUNNING:
            run.cancel_requested = True
        return replace(run)

    async def claim(self, worker_id, now):
        self._check()
        for run in self.runs.values():
            if run.state is self._r.RunState.QUEUED:
                run.state, run.attempt, run.worker_id = self._r.RunState.RUNNING, run.attempt + 1, worker_id
                run.error = None
                run.start_time = run.heartbeat_time = now
                run.progress, run.stage = 0.0, "claimed"
                return replace(run)
        return None

    async def heartbeat(self, attempt, now, progress, stage):
        self._check()
        run = self._fenced(attempt)
        if run is None:
            return self._r.Heartbeat.LOST
        run.heartbeat_time, run.progress, run.stage = now, progress, stage
        return self._r.Heartbeat.CANCEL if run.cancel_requested else self._r.Heartbeat.OWNED

    async def finish(self, attempt, now, state, *, metrics={}, mlflow_run_id="", registered_version="", error=None):
        self._check()
        run = self._fenced(attempt)
        if run is None:
            return False
        run.state, run.end_time, run.metrics, run.error = state, now, dict(metrics), error
        run.mlflow_run_id, run.registered_version = mlflow_run_id, registered_version
        return True

    async def requeue(self, attempt, now, error):
        self._check()
        run = self._fenced(attempt)
        if run is None:
            return None
        if run.cancel_requested:
            run.state, run.end_time = self._r.RunState.CANCELLED, now
        else:
            run.state, run.error = self._r.RunState.QUEUED, error
        return run.state

    async def sweep(self, stale_before, now):
        self._check()
        changed = []
        for run in self.runs.values():
            if run.state is self._r.RunState.RUNNING and run.heartbeat_time < stale_before:
                if run.cancel_requested:
                    run.state, run.end_time = self._r.RunState.CANCELLED, now
                elif run.attempt < run.max_attempts:
                    run.state = self._r.RunState.QUEUED
                    run.error = self._r.RunError("WORKER_LOST", "no heartbeat", "UNAVAILABLE")
                else:
                    run.state, run.end_time = self._r.RunState.FAILED, now
                    run.error = self._r.RunError("WORKER_LOST", "no heartbeat", "UNAVAILABLE")
                changed.append(replace(run))
        return changed


class FakeScheduleStore:
    """The ScheduleStore port in memory (the PostgreSQL one is checked in tests/pipeline/adapters)."""

    def __init__(self):
        self.schedules: dict[str, object] = {}

    async def create(self, schedule):
        self.schedules[schedule.schedule_id] = replace(schedule)

    async def get(self, schedule_id):
        found = self.schedules.get(schedule_id)
        return None if found is None else replace(found)

    async def list(self, *, model_name, limit, after_seq):
        chosen = [(seq, s) for seq, s in enumerate(self.schedules.values(), start=1)
                  if (not model_name or s.model_name == model_name) and seq > after_seq]
        page = chosen[:limit]
        return [replace(s) for _, s in page], page[-1][0] if len(chosen) > limit else None

    async def delete(self, schedule_id):
        return self.schedules.pop(schedule_id, None) is not None

    async def due(self, now):
        return sorted((replace(s) for s in self.schedules.values() if s.enabled and s.next_run_time <= now),
                      key=lambda s: s.next_run_time)

    async def advance(self, schedule, *, last_run_time, last_run_id, next_run_time):
        stored = self.schedules.get(schedule.schedule_id)
        if stored is None or stored.next_run_time != schedule.next_run_time:
            return False
        stored.last_run_time, stored.last_run_id, stored.next_run_time = last_run_time, last_run_id, next_run_time
        return True


class FakeMetricStore:
    """The MetricStore port in memory."""

    def __init__(self):
        self.values_: list = []
        self.down = False

    async def record(self, values):
        if self.down:
            raise StateStoreUnavailable()
        seen = {(v.model_name, v.metric_name, v.event_id) for v in self.values_ if v.event_id}
        new = duplicates = 0
        for value in values:
            key = (value.model_name, value.metric_name, value.event_id)
            if value.event_id and key in seen:
                duplicates += 1
                continue
            seen.add(key)
            self.values_.append(value)
            new += 1
        return new, duplicates

    async def delete_before(self, cutoff):
        kept = [v for v in self.values_ if v.time >= cutoff]
        deleted, self.values_ = len(self.values_) - len(kept), kept
        return deleted

    async def values(self, *, model_name, metric_name, model_version, label_filter, start, end, limit):
        if self.down:
            raise StateStoreUnavailable()
        chosen = [v for v in self.values_ if v.model_name == model_name and v.metric_name == metric_name
                  and (not model_version or v.model_version == model_version) and start <= v.time < end
                  and all(v.labels.get(k) == x for k, x in label_filter.items())]
        chosen.sort(key=lambda v: v.time)
        return [v.value for v in chosen[-limit:]]


class FakeAlertStore:
    """The AlertStore port in memory."""

    def __init__(self):
        self.rules: dict[str, object] = {}
        self.states: dict[str, object] = {}
        self.alerts: list = []

    async def create_rule(self, rule):
        from ml_serving_server.errors import AlreadyExists
        from ml_serving_server.services.pipeline.domain.errors import ErrorReason
        if any(r.name == rule.name for r in self.rules.values()):
            raise AlreadyExists(f"rule {rule.name} exists", reason=ErrorReason.ALERT_RULE_ALREADY_EXISTS)
        self.rules[rule.rule_id] = replace(rule)

    async def get_rule(self, rule_id):
        rule = self.rules.get(rule_id)
        return None if rule is None else replace(rule)

    async def list_rules(self, *, model_name, enabled_only, limit, after_seq):
        chosen = [(seq, r) for seq, r in enumerate(self.rules.values(), start=1)
                  if (not model_name or r.model_name == model_name) and (r.enabled or not enabled_only)
                  and seq > after_seq]
        page = chosen[:limit]
        return [replace(r) for _, r in page], page[-1][0] if len(chosen) > limit else None

    async def update_rule(self, rule):
        if rule.rule_id not in self.rules:
            return False
        self.rules[rule.rule_id] = replace(rule)
        return True

    async def delete_rule(self, rule_id, now):
        from ml_serving_server.services.pipeline.domain.monitoring import AlertState
        if self.rules.pop(rule_id, None) is None:
            return False
        for alert in self.alerts:
            if alert.rule_id == rule_id and alert.state is AlertState.FIRING:
                alert.state, alert.resolve_time = AlertState.RESOLVED, now
        return True

    async def rule_state(self, rule_id):
        from ml_serving_server.services.pipeline.domain.monitoring import RuleState
        return replace(self.states.get(rule_id) or RuleState(rule_id))

    async def save_rule_state(self, state):
        self.states[state.rule_id] = replace(state)

    async def firing_alert(self, rule_id):
        from ml_serving_server.services.pipeline.domain.monitoring import AlertState
        found = [a for a in self.alerts if a.rule_id == rule_id and a.state is AlertState.FIRING]
        return replace(found[0]) if found else None

    async def open_alert(self, alert):
        firing = await self.firing_alert(alert.rule_id)
        if firing is not None:
            return firing
        self.alerts.append(replace(alert))
        return replace(alert)

    async def update_alert(self, alert):
        from ml_serving_server.services.pipeline.domain.monitoring import AlertState
        for index, stored in enumerate(self.alerts):
            if stored.alert_id == alert.alert_id:
                if stored.state is not AlertState.FIRING:
                    return False
                self.alerts[index] = replace(alert)
                return True
        return False

    async def list_alerts(self, *, model_name, states, rule_id, min_severity, limit, after_seq):
        order = ["info", "warning", "critical"]
        chosen = [(seq, a) for seq, a in list(enumerate(self.alerts, start=1))[::-1]
                  if (not model_name or a.model_name == model_name) and a.state in states
                  and (not rule_id or a.rule_id == rule_id)
                  and (min_severity is None or order.index(a.severity.value) >= order.index(min_severity.value))
                  and (not after_seq or seq < after_seq)]
        page = chosen[:limit]
        return [replace(a) for _, a in page], page[-1][0] if len(chosen) > limit else None


class FakeNotifier:
    def __init__(self):
        self.sent: list = []

    async def notify(self, rule, alert):
        self.sent.append((rule.name, alert.alert_id, alert.state))


class FakeDistributions:
    """The TrainingDistributions port in memory: runs' samples in the order they were saved."""

    def __init__(self):
        self.saved: list[tuple] = []  # (model, version, run id, {feature: values}, at)
        self.down = False

    async def save(self, model_name, registered_version, run_id, samples, at):
        if self.down:
            raise StateStoreUnavailable()
        self.saved.append((model_name, registered_version, run_id, {k: list(v) for k, v in samples.items()}, at))

    async def latest(self, model_name, feature):
        if self.down:
            raise StateStoreUnavailable()
        runs = [samples for model, _, _, samples, _ in self.saved if model == model_name]
        return list(runs[-1].get(feature, [])) if runs else []

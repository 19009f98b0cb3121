"""The model monitor over PostgreSQL (asyncpg): the MetricStore and AlertStore ports.

Tables of migration p0005. Metric values are written by binary COPY, the fastest way in: values
without an event id straight into `pipeline_metric_values`; values with one into a temporary
table of the session first, then `INSERT ... SELECT ... ON CONFLICT DO NOTHING` against the
partial unique index on (model, metric, event id), whose row count tells new values from duplicates (also
duplicates within one batch). One transaction per call.

Alerts: the partial unique index `pipeline_alerts_one_firing` allows one FIRING alert per rule,
so concurrent evaluators open one alert, not two. Opening an alert holds its rule's row (FOR KEY
SHARE), so a rule deleted meanwhile either waits for the alert (and resolves it) or gets none.

Every failure to reach PostgreSQL raises StateStoreUnavailable (postgres_store._state_errors).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Sequence

import asyncpg
import orjson
from asyncpg import exceptions as pg_errors

from ...errors import AlreadyExists, quoted
from .domain.errors import ErrorReason
from .domain.monitoring import (
    Aggregation,
    Alert,
    AlertRule,
    AlertState,
    Comparison,
    Condition,
    Degradation,
    Direction,
    Drift,
    DriftReference,
    MetricValue,
    RuleState,
    Severity,
    Threshold,
)
from .domain.ports import StateStoreUnavailable
from .postgres_store import _state_errors

_VALUES = "pipeline_metric_values"
_STAGING = "pipeline_metric_values_staged"
_VALUE_COLUMNS = ("model_name", "metric_name", "model_version", "time", "value", "labels", "event_id")
# Per session, kept across calls (asyncpg's pool reset does not discard temporary tables), emptied
# at every commit; created at the first keyed batch of a connection.
_CREATE_STAGING = f"""CREATE TEMPORARY TABLE IF NOT EXISTS {_STAGING}
                      (LIKE {_VALUES} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"""
# In (model, metric, event id) order: two batches sharing event ids then wait on each other's rows in one order,
# never in a deadlock. Then in batch order (ctid: the staged rows' order of arrival), so the first
# of a batch's copies of one event id is the one kept.
_INSERT_STAGED = f"""
    INSERT INTO {_VALUES} ({", ".join(_VALUE_COLUMNS)})
    SELECT {", ".join(_VALUE_COLUMNS)} FROM {_STAGING} ORDER BY model_name, metric_name, event_id, ctid
    ON CONFLICT (model_name, metric_name, event_id) WHERE event_id IS NOT NULL DO NOTHING"""


def _value_row(value: MetricValue) -> tuple:
    # orjson: json.dumps would take some 17 ms of a labelled 10,000-value batch (about 50 ms in all).
    labels = orjson.dumps(value.labels).decode() if value.labels else "{}"
    return (value.model_name, value.metric_name, value.model_version, value.time, value.value, labels,
            value.event_id or None)


class PostgresMetricStore:
    """The MetricStore port, on the pipeline's state pool."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    @_state_errors
    async def record(self, values: Sequence[MetricValue]) -> tuple[int, int]:
        plain = [_value_row(v) for v in values if not v.event_id]
        keyed = [_value_row(v) for v in values if v.event_id]
        async with self._pool.acquire() as conn, conn.transaction():
            if plain:
                await conn.copy_records_to_table(_VALUES, records=plain, columns=_VALUE_COLUMNS)
            inserted = await _insert_keyed(conn, keyed) if keyed else 0
        return len(plain) + inserted, len(keyed) - inserted

    @_state_errors
    async def values(self, *, model_name: str, metric_name: str, model_version: str, label_filter: dict[str, str],
                     start: datetime, end: datetime, limit: int) -> list[float]:
        """Newest first."""
        where = _Where(model_name=model_name, metric_name=metric_name)
        where.add("time >= {}", start)
        where.add("time < {}", end)
        if model_version:
            where.add("model_version = {}", model_version)
        if label_filter:
            where.add("labels @> {}::jsonb", json.dumps(label_filter))
        records = await self._pool.fetch(
            f"SELECT value FROM {_VALUES} WHERE {where} ORDER BY time DESC LIMIT {where.param(limit)}", *where.params)
        return [record["value"] for record in records]

    @_state_errors
    async def delete_before(self, cutoff: datetime, batch: int = 50_000) -> int:
        """Deletes the values recorded before `cutoff`, `batch` rows per statement (no long lock,
        no huge transaction; the BRIN index on time finds them); how many were deleted."""
        deleted = 0
        while True:
            status = await self._pool.execute(f"""
                DELETE FROM {_VALUES} WHERE ctid = ANY(ARRAY(
                    SELECT ctid FROM {_VALUES} WHERE time < $1 LIMIT $2))""", cutoff, batch)
            count = int(status.rsplit(" ", 1)[1])
            deleted += count
            if count < batch:
                return deleted


async def _insert_keyed(conn: asyncpg.Connection, rows: list[tuple]) -> int:
    """Stages the rows and inserts those whose event id is new; how many were."""
    await conn.execute(_CREATE_STAGING)
    await conn.copy_records_to_table(_STAGING, records=rows, columns=_VALUE_COLUMNS)
    status = await conn.execute(_INSERT_STAGED)  # "INSERT 0 <rows>"
    return int(status.rpartition(" ")[2])


class _Where:
    """A WHERE clause of only the filters given, each value a parameter: no `$n = '' OR ...` for
    the planner to see through, so the indexes serve each shape of query."""

    def __init__(self, **equal: object):
        self.params: list[object] = []
        self._conditions: list[str] = []
        for column, value in equal.items():
            self.add(f"{column} = {{}}", value)

    def param(self, value: object) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def add(self, condition: str, value: object) -> None:
        self._conditions.append(condition.format(self.param(value)))

    def __str__(self) -> str:
        return " AND ".join(self._conditions) or "true"


# ----- rules -----

def _us(duration: timedelta) -> int:
    return duration // timedelta(microseconds=1)


def _condition_json(condition: Condition) -> str:
    match condition:
        case Threshold():
            body = {"kind": "threshold", "comparison": condition.comparison.value, "threshold": condition.threshold}
        case Degradation():
            body = {"kind": "degradation", "baseline_window_us": _us(condition.baseline_window),
                    "max_relative_change": condition.max_relative_change, "direction": condition.direction.value}
        case Drift():
            body = {"kind": "drift", "reference_window_us": _us(condition.reference_window), "bins": condition.bins,
                    "psi_threshold": condition.psi_threshold, "reference": condition.reference.value,
                    "feature": condition.feature}
        case _:
            raise TypeError(f"not a condition: {condition!r}")
    return json.dumps(body)


def _condition(body: dict[str, Any]) -> Condition:
    # float(): jsonb keeps numbers as numerics, so 1e20 reads back as the integer 100000000000000000000.
    match body["kind"]:
        case "threshold":
            return Threshold(Comparison(body["comparison"]), float(body["threshold"]))
        case "degradation":
            return Degradation(timedelta(microseconds=body["baseline_window_us"]),
                               float(body["max_relative_change"]), Direction(body["direction"]))
        case "drift":
            # Rules stored before drift against training have neither field: against a window.
            return Drift(timedelta(microseconds=body["reference_window_us"]), body["bins"],
                         float(body["psi_threshold"]), DriftReference(body.get("reference", "window")),
                         body.get("feature", ""))
    raise ValueError(f"unknown condition kind {body['kind']!r}")


_RULE_COLUMNS = """rule_id::text AS rule_id, seq, name, description, model_name, model_version, metric_name,
                   label_filter, condition, window_us, aggregation, for_duration_us, min_samples, severity,
                   webhook_url, trigger_retraining, retraining_parameters, enabled, create_time, update_time"""
# $1 the rule id, then the columns a rule may change.
_RULE_FIELDS = """$2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10, $11, $12, $13, $14, $15, $16::jsonb, $17, $18"""


def _rule_params(rule: AlertRule) -> tuple:
    return (rule.rule_id, rule.name, rule.description, rule.model_name, rule.model_version, rule.metric_name,
            json.dumps(rule.label_filter), _condition_json(rule.condition), _us(rule.window), rule.aggregation.value,
            _us(rule.for_duration), rule.min_samples, rule.severity.value, rule.webhook_url, rule.trigger_retraining,
            json.dumps(rule.retraining_parameters), rule.enabled, rule.update_time)


def _rule(record) -> AlertRule:
    return AlertRule(
        rule_id=record["rule_id"], name=record["name"], model_name=record["model_name"],
        metric_name=record["metric_name"], condition=_condition(json.loads(record["condition"])),
        create_time=record["create_time"], update_time=record["update_time"], description=record["description"],
        model_version=record["model_version"], label_filter=json.loads(record["label_filter"]),
        window=timedelta(microseconds=record["window_us"]), aggregation=Aggregation(record["aggregation"]),
        for_duration=timedelta(microseconds=record["for_duration_us"]), min_samples=record["min_samples"],
        severity=Severity(record["severity"]), webhook_url=record["webhook_url"],
        trigger_retraining=record["trigger_retraining"],
        retraining_parameters=json.loads(record["retraining_parameters"]), enabled=record["enabled"])


def _name_taken(rule: AlertRule, exc: pg_errors.UniqueViolationError) -> AlreadyExists | None:
    if exc.constraint_name != "pipeline_alert_rules_name":
        return None
    return AlreadyExists(f"alert rule {quoted(rule.name)} exists", reason=ErrorReason.ALERT_RULE_ALREADY_EXISTS,
                         metadata={"name": rule.name})


# ----- alerts -----

_ALERT_COLUMNS = """alert_id::text AS alert_id, seq, rule_id::text AS rule_id, rule_name, model_name, model_version,
                    metric_name, state, severity, value, reference_value, message, fire_time, last_evaluation_time,
                    resolve_time, retraining_run_id"""
_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}
_FIRING = "SELECT {} FROM pipeline_alerts WHERE rule_id = $1::uuid AND state = 'FIRING'".format(_ALERT_COLUMNS)
_OPEN = f"""
    INSERT INTO pipeline_alerts (alert_id, rule_id, rule_name, model_name, model_version, metric_name, state,
        severity, value, reference_value, message, fire_time, last_evaluation_time, resolve_time, retraining_run_id)
    VALUES ($1::uuid, $2::uuid, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
    ON CONFLICT (rule_id) WHERE state = 'FIRING' DO NOTHING
    RETURNING {_ALERT_COLUMNS}"""
_UPDATE_ALERT = """
    UPDATE pipeline_alerts SET rule_id = $2::uuid, rule_name = $3, model_name = $4, model_version = $5,
        metric_name = $6, state = $7, severity = $8, value = $9, reference_value = $10, message = $11,
        fire_time = $12, last_evaluation_time = $13, resolve_time = $14, retraining_run_id = $15
    WHERE alert_id = $1::uuid AND state = 'FIRING'"""
_OPEN_ATTEMPTS = 3  # the firing alert found by the conflict may resolve before it is read


def _alert_params(alert: Alert) -> tuple:
    return (alert.alert_id, alert.rule_id, alert.rule_name, alert.model_name, alert.model_version,
            alert.metric_name, alert.state.value, alert.severity.value, alert.value, alert.reference_value,
            alert.message, alert.fire_time, alert.last_evaluation_time, alert.resolve_time, alert.retraining_run_id)


def _alert(record) -> Alert:
    return Alert(
        alert_id=record["alert_id"], rule_id=record["rule_id"], rule_name=record["rule_name"],
        model_name=record["model_name"], metric_name=record["metric_name"], state=AlertState(record["state"]),
        severity=Severity(record["severity"]), value=record["value"], reference_value=record["reference_value"],
        message=record["message"], fire_time=record["fire_time"],
        last_evaluation_time=record["last_evaluation_time"], model_version=record["model_version"],
        resolve_time=record["resolve_time"], retraining_run_id=record["retraining_run_id"])


def _page(records: list, limit: int) -> tuple[list, int | None]:
    """The page and the cursor of the next one (None: this is the last)."""
    more = len(records) > limit
    records = records[:limit]
    return records, records[-1]["seq"] if more and records else None


class PostgresAlertStore:
    """The AlertStore port, on the pipeline's state pool."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    @_state_errors
    async def create_rule(self, rule: AlertRule) -> None:
        try:
            await self._pool.execute(f"""
                INSERT INTO pipeline_alert_rules (rule_id, name, description, model_name, model_version, metric_name,
                    label_filter, condition, window_us, aggregation, for_duration_us, min_samples, severity,
                    webhook_url, trigger_retraining, retraining_parameters, enabled, update_time, create_time)
                VALUES ($1::uuid, {_RULE_FIELDS}, $19)""", *_rule_params(rule), rule.create_time)
        except pg_errors.UniqueViolationError as exc:
            raise (_name_taken(rule, exc) or exc) from None

    @_state_errors
    async def get_rule(self, rule_id: str) -> AlertRule | None:
        record = await self._pool.fetchrow(
            f"SELECT {_RULE_COLUMNS} FROM pipeline_alert_rules WHERE rule_id = $1::uuid", rule_id)
        return None if record is None else _rule(record)

    @_state_errors
    async def list_rules(self, *, model_name: str, enabled_only: bool, limit: int, after_seq: int
                         ) -> tuple[list[AlertRule], int | None]:
        """In creation order (seq)."""
        where = _Where(**({"model_name": model_name} if model_name else {}))
        where.add("seq > {}", after_seq)
        if enabled_only:
            where.add("enabled = {}", True)
        records = await self._pool.fetch(f"SELECT {_RULE_COLUMNS} FROM pipeline_alert_rules WHERE {where} "
                                         f"ORDER BY seq LIMIT {where.param(limit + 1)}", *where.params)
        page, after = _page(records, limit)
        return [_rule(r) for r in page], after

    @_state_errors
    async def update_rule(self, rule: AlertRule) -> bool:
        """Every field but rule_id and create_time; AlreadyExists when renamed to a taken name."""
        try:
            status = await self._pool.execute(f"""
                UPDATE pipeline_alert_rules SET (name, description, model_name, model_version, metric_name,
                    label_filter, condition, window_us, aggregation, for_duration_us, min_samples, severity,
                    webhook_url, trigger_retraining, retraining_parameters, enabled, update_time)
                    = ({_RULE_FIELDS})
                WHERE rule_id = $1::uuid""", *_rule_params(rule))
        except pg_errors.UniqueViolationError as exc:
            raise (_name_taken(rule, exc) or exc) from None
        return status.endswith(" 1")

    @_state_errors
    async def delete_rule(self, rule_id: str, now: datetime) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            # The delete first: it waits for an open_alert holding the rule, whose alert it then resolves.
            if not await conn.fetchval("DELETE FROM pipeline_alert_rules WHERE rule_id = $1::uuid RETURNING true",
                                       rule_id):
                return False
            await conn.execute("""UPDATE pipeline_alerts SET state = 'RESOLVED', resolve_time = $2
                                  WHERE rule_id = $1::uuid AND state = 'FIRING'""", rule_id, now)
            return True  # its state went with it (ON DELETE CASCADE)

    @_state_errors
    async def rule_state(self, rule_id: str) -> RuleState:
        pending_since = await self._pool.fetchval(
            "SELECT pending_since FROM pipeline_alert_rule_state WHERE rule_id = $1::uuid", rule_id)
        return RuleState(rule_id, pending_since)

    @_state_errors
    async def save_rule_state(self, state: RuleState) -> None:
        try:
            await self._pool.execute("""
                INSERT INTO pipeline_alert_rule_state (rule_id, pending_since) VALUES ($1::uuid, $2)
                ON CONFLICT (rule_id) DO UPDATE SET pending_since = EXCLUDED.pending_since""",
                state.rule_id, state.pending_since)
        except pg_errors.ForeignKeyViolationError:
            pass  # the rule was deleted meanwhile: there is no state to keep

    @_state_errors
    async def firing_alert(self, rule_id: str) -> Alert | None:
        record = await self._pool.fetchrow(_FIRING, rule_id)
        return None if record is None else _alert(record)

    @_state_errors
    async def open_alert(self, alert: Alert) -> Alert:
        """The alert as given, not stored, when its rule no longer exists."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT true FROM pipeline_alert_rules WHERE rule_id = $1::uuid FOR KEY SHARE",
                                       alert.rule_id):
                return alert
            for _ in range(_OPEN_ATTEMPTS):
                record = await conn.fetchrow(_OPEN, *_alert_params(alert))
                if record is None:  # one is firing (a concurrent open waited for): that one
                    record = await conn.fetchrow(_FIRING, alert.rule_id)
                if record is not None:
                    return _alert(record)
        raise StateStoreUnavailable("the alert store (concurrent alerts of one rule; try again)")

    @_state_errors
    async def update_alert(self, alert: Alert) -> bool:
        status = await self._pool.execute(_UPDATE_ALERT, *_alert_params(alert))
        return status.endswith(" 1")

    @_state_errors
    async def list_alerts(self, *, model_name: str, states: Sequence[AlertState], rule_id: str,
                          min_severity: Severity | None, limit: int, after_seq: int) -> tuple[list[Alert], int | None]:
        """Newest first (seq descending); an empty `states` is every state."""
        where = _Where(**({"model_name": model_name} if model_name else {}))
        if rule_id:
            where.add("rule_id = {}::uuid", rule_id)
        if states:
            where.add("state = ANY({}::text[])", [s.value for s in states])
        if min_severity is not None:
            where.add("severity = ANY({}::text[])",
                      [s.value for s, rank in _SEVERITY_RANK.items() if rank >= _SEVERITY_RANK[min_severity]])
        if after_seq:
            where.add("seq < {}", after_seq)
        records = await self._pool.fetch(f"SELECT {_ALERT_COLUMNS} FROM pipeline_alerts WHERE {where} "
                                         f"ORDER BY seq DESC LIMIT {where.param(limit + 1)}", *where.params)
        page, after = _page(records, limit)
        return [_alert(r) for r in page], after

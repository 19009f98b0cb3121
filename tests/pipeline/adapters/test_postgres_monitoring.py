"""The model monitor's stores over a real PostgreSQL: rules and alerts read back as written, one
firing alert per rule (even when evaluators open it at once), deleting a rule resolves its alert,
listing, and metric values: new versus duplicate counts, the read window and its filters. A
database of its own: the session mesh's evaluator must not act on these rules."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from ml_serving_server.errors import AlreadyExists
from ml_serving_server.services.pipeline.domain.errors import ErrorReason
from ml_serving_server.services.pipeline.domain.monitoring import (
    Aggregation,
    Alert,
    AlertRule,
    AlertState,
    Comparison,
    Degradation,
    Direction,
    Drift,
    DriftReference,
    MetricValue,
    RuleState,
    Severity,
    Threshold,
)
from ml_serving_server.services.pipeline.domain.ports import StateStoreUnavailable
from ml_serving_server.services.pipeline.postgres_monitoring import PostgresAlertStore, PostgresMetricStore
from ml_serving_server.services.pipeline.postgres_runs import PostgresRunStore

from ...support import private_database

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
CONDITIONS = [
    Threshold(Comparison.GREATER_OR_EQUAL, 0.1 + 0.2),
    Threshold(Comparison.LESS_THAN, 1e20),  # jsonb gives it back as an integer
    Degradation(timedelta(days=7, microseconds=3), 0.05, Direction.INCREASE),
    Drift(timedelta(hours=25, seconds=1), 12, 0.25),
    Drift(timedelta(days=7), 10, 0.2, DriftReference.TRAINING, "user_profile:activity"),
]


@pytest.fixture(scope="module")
def monitoring_database(postgres_server):
    with private_database(postgres_server) as url:
        yield url


@pytest.fixture
async def pool(monitoring_database):
    runs = await PostgresRunStore.connect(monitoring_database)  # migrates the pipeline's schema
    await runs._pool.execute(
        "TRUNCATE pipeline_metric_values, pipeline_alert_rules, pipeline_alert_rule_state, pipeline_alerts")
    yield runs._pool
    await runs.close()


@pytest.fixture
def rules(pool):
    return PostgresAlertStore(pool)


@pytest.fixture
def metrics(pool):
    return PostgresMetricStore(pool)


def new_rule(name="", *, model="rec", condition=CONDITIONS[0], enabled=True) -> AlertRule:
    return AlertRule(
        rule_id=str(uuid.uuid4()), name=name or f"rule-{uuid.uuid4().hex[:8]}", model_name=model,
        metric_name="accuracy", condition=condition, create_time=T0, update_time=T0 + timedelta(seconds=1),
        description="watch it", model_version="3", label_filter={"segment": "premium", "region": "eu"},
        window=timedelta(minutes=10, microseconds=1), aggregation=Aggregation.P95,
        for_duration=timedelta(seconds=90), min_samples=20, severity=Severity.CRITICAL,
        webhook_url="https://hooks.example/a", trigger_retraining=True,
        retraining_parameters={"epochs": 3, "layers": [8, 4], "lr": 0.001}, enabled=enabled)


def new_alert(rule: AlertRule, *, severity=Severity.WARNING, model="") -> Alert:
    return Alert(alert_id=str(uuid.uuid4()), rule_id=rule.rule_id, rule_name=rule.name,
                 model_name=model or rule.model_name, metric_name=rule.metric_name, state=AlertState.FIRING,
                 severity=severity, value=0.61, reference_value=0.7, message="accuracy fell", fire_time=T0,
                 last_evaluation_time=T0, model_version="3")


# ----- rules -----

@pytest.mark.parametrize("condition", CONDITIONS, ids=lambda c: type(c).__name__)
async def test_a_rule_reads_back_as_written_with_each_condition_kind(rules, condition):
    rule = new_rule(condition=condition)
    await rules.create_rule(rule)
    stored = await rules.get_rule(rule.rule_id)
    assert stored == rule
    assert type(stored.condition) is type(condition) and all(
        type(getattr(stored.condition, f)) is type(getattr(condition, f)) for f in vars(condition))
    assert await rules.get_rule(str(uuid.uuid4())) is None


async def test_a_drift_rule_stored_before_drift_against_training_reads_as_against_a_window(rules, pool):
    rule = new_rule(condition=CONDITIONS[3])
    await rules.create_rule(rule)
    await pool.execute("UPDATE pipeline_alert_rules SET condition = condition - 'reference' - 'feature' "
                       "WHERE rule_id = $1::uuid", rule.rule_id)
    assert set(json.loads(await pool.fetchval("SELECT condition FROM pipeline_alert_rules"))) == {
        "kind", "reference_window_us", "bins", "psi_threshold"}
    stored = await rules.get_rule(rule.rule_id)
    assert stored.condition == CONDITIONS[3] and stored.condition.reference is DriftReference.WINDOW


async def test_a_taken_name_is_already_exists_on_create_and_on_rename(rules):
    first, second = new_rule("latency-high"), new_rule("latency-low")
    await rules.create_rule(first)
    await rules.create_rule(second)
    with pytest.raises(AlreadyExists) as created:
        await rules.create_rule(new_rule("latency-high"))
    assert created.value.reason is ErrorReason.ALERT_RULE_ALREADY_EXISTS
    second.name = "latency-high"
    with pytest.raises(AlreadyExists):
        await rules.update_rule(second)


async def test_an_update_changes_every_field_but_the_id_and_creation_time(rules):
    rule = new_rule()
    await rules.create_rule(rule)
    changed = AlertRule(rule_id=rule.rule_id, name="renamed", model_name="other", metric_name="auc",
                        condition=CONDITIONS[3], create_time=T0 + timedelta(days=9),
                        update_time=T0 + timedelta(hours=2), enabled=False)
    assert await rules.update_rule(changed)
    changed.create_time = T0
    assert await rules.get_rule(rule.rule_id) == changed
    changed.rule_id = str(uuid.uuid4())
    assert not await rules.update_rule(changed)


async def test_rules_are_listed_in_creation_order_filtered_and_paged(rules):
    created = [new_rule(model="a" if i % 2 else "b", enabled=i != 3) for i in range(7)]
    for rule in created:
        await rules.create_rule(rule)
    page, after = await rules.list_rules(model_name="", enabled_only=False, limit=4, after_seq=0)
    rest, end = await rules.list_rules(model_name="", enabled_only=False, limit=4, after_seq=after)
    assert [r.rule_id for r in page + rest] == [r.rule_id for r in created] and end is None
    only_a, _ = await rules.list_rules(model_name="a", enabled_only=True, limit=10, after_seq=0)
    assert [r.rule_id for r in only_a] == [created[1].rule_id, created[5].rule_id]


async def test_a_rule_state_is_kept_until_its_rule_is_deleted(rules):
    rule = new_rule()
    await rules.create_rule(rule)
    assert await rules.rule_state(rule.rule_id) == RuleState(rule.rule_id)
    await rules.save_rule_state(RuleState(rule.rule_id, T0))
    assert await rules.rule_state(rule.rule_id) == RuleState(rule.rule_id, T0)
    await rules.save_rule_state(RuleState(rule.rule_id, None))
    assert await rules.rule_state(rule.rule_id) == RuleState(rule.rule_id)
    await rules.save_rule_state(RuleState(rule.rule_id, T0))
    assert await rules.delete_rule(rule.rule_id, T0)
    assert await rules.rule_state(rule.rule_id) == RuleState(rule.rule_id)
    await rules.save_rule_state(RuleState(rule.rule_id, T0))  # an evaluator late for the delete: ignored
    assert await rules.rule_state(rule.rule_id) == RuleState(rule.rule_id)


# ----- alerts -----

async def test_an_alert_reads_back_as_written_and_resolves(rules):
    rule = new_rule()
    await rules.create_rule(rule)
    alert = new_alert(rule)
    assert await rules.open_alert(alert) == alert
    assert await rules.firing_alert(rule.rule_id) == alert
    alert.value, alert.last_evaluation_time, alert.retraining_run_id = 0.5, T0 + timedelta(minutes=1), "run-1"
    await rules.update_alert(alert)
    assert await rules.firing_alert(rule.rule_id) == alert
    alert.state, alert.resolve_time = AlertState.RESOLVED, T0 + timedelta(minutes=2)
    await rules.update_alert(alert)
    assert await rules.firing_alert(rule.rule_id) is None
    listed, _ = await rules.list_alerts(model_name="", states=[], rule_id=rule.rule_id, min_severity=None,
                                        limit=10, after_seq=0)
    assert listed == [alert]


async def test_opening_an_alert_of_a_firing_rule_returns_the_firing_one(rules):
    rule = new_rule()
    await rules.create_rule(rule)
    first = await rules.open_alert(new_alert(rule))
    assert (await rules.open_alert(new_alert(rule))).alert_id == first.alert_id
    first.state, first.resolve_time = AlertState.RESOLVED, T0
    await rules.update_alert(first)
    second = await rules.open_alert(new_alert(rule))
    assert second.alert_id != first.alert_id and second.state is AlertState.FIRING


async def test_evaluators_opening_one_rule_s_alert_at_once_store_one(rules, pool):
    rule = new_rule()
    await rules.create_rule(rule)
    opened = await asyncio.gather(*(rules.open_alert(new_alert(rule)) for _ in range(8)))
    assert len({alert.alert_id for alert in opened}) == 1
    assert await pool.fetchval("SELECT count(*) FROM pipeline_alerts WHERE rule_id = $1::uuid", rule.rule_id) == 1


async def test_deleting_a_rule_resolves_its_firing_alert_and_later_opens_store_nothing(rules):
    rule, other = new_rule(), new_rule()
    await rules.create_rule(rule)
    await rules.create_rule(other)
    alert = await rules.open_alert(new_alert(rule))
    kept = await rules.open_alert(new_alert(other))
    assert await rules.delete_rule(rule.rule_id, T0 + timedelta(hours=1))
    assert await rules.get_rule(rule.rule_id) is None and await rules.firing_alert(rule.rule_id) is None
    resolved, _ = await rules.list_alerts(model_name="", states=[AlertState.RESOLVED], rule_id="", min_severity=None,
                                          limit=10, after_seq=0)
    assert [(a.alert_id, a.resolve_time) for a in resolved] == [(alert.alert_id, T0 + timedelta(hours=1))]
    assert await rules.firing_alert(other.rule_id) == kept
    assert not await rules.delete_rule(rule.rule_id, T0)
    late = new_alert(rule)
    assert await rules.open_alert(late) == late and await rules.firing_alert(rule.rule_id) is None


async def test_alerts_are_listed_newest_first_filtered_and_paged(rules):
    severities = [Severity.INFO, Severity.WARNING, Severity.CRITICAL]
    made = []
    for i in range(6):
        rule = new_rule(model="a" if i % 2 else "b")
        await rules.create_rule(rule)
        made.append(await rules.open_alert(new_alert(rule, severity=severities[i % 3])))
    made[0].state, made[0].resolve_time = AlertState.RESOLVED, T0
    await rules.update_alert(made[0])

    async def ids(**filters):
        query = {"model_name": "", "states": [], "rule_id": "", "min_severity": None, "limit": 10, "after_seq": 0}
        return [a.alert_id for a in (await rules.list_alerts(**{**query, **filters}))[0]]

    newest_first = [a.alert_id for a in made[::-1]]
    page, after = await rules.list_alerts(model_name="", states=[], rule_id="", min_severity=None, limit=4,
                                          after_seq=0)
    rest, end = await rules.list_alerts(model_name="", states=[], rule_id="", min_severity=None, limit=4,
                                        after_seq=after)
    assert [a.alert_id for a in page + rest] == newest_first and end is None
    assert await ids(model_name="a") == [made[5].alert_id, made[3].alert_id, made[1].alert_id]
    assert await ids(states=[AlertState.FIRING]) == newest_first[:5]
    assert await ids(rule_id=made[2].rule_id) == [made[2].alert_id]
    assert await ids(min_severity=Severity.WARNING) == [made[i].alert_id for i in (5, 4, 2, 1)]
    assert await ids(min_severity=Severity.CRITICAL, model_name="b") == [made[2].alert_id]
    assert await ids(min_severity=Severity.INFO) == newest_first


# ----- metric values -----

def value(v=1.0, *, at=T0, version="3", labels=None, event_id="", metric="latency") -> MetricValue:
    return MetricValue("rec", metric, v, at, version, labels or {}, event_id)


async def test_values_without_event_ids_are_all_new(metrics):
    assert await metrics.record([value(float(i)) for i in range(5)]) == (5, 0)
    assert await metrics.record([value(1.0)]) == (1, 0)
    assert await metrics.record([]) == (0, 0)


async def test_an_event_id_counts_once_within_a_batch_and_across_batches(metrics, pool):
    batch = [value(1.0, event_id="e1"), value(2.0, event_id="e2"), value(3.0, event_id="e1"), value(4.0)]
    assert await metrics.record(batch) == (3, 1)
    assert await metrics.record([value(5.0, event_id="e2"), value(6.0, event_id="e3"), value(7.0)]) == (2, 1)
    assert await pool.fetchval("SELECT count(*) FROM pipeline_metric_values") == 5
    assert await pool.fetchval("SELECT value FROM pipeline_metric_values WHERE event_id = 'e1'") == 1.0  # the first
    # An event id is per model and metric: another metric's value with it is new.
    assert await metrics.record([value(8.0, event_id="e1", metric="accuracy")]) == (1, 0)


async def test_concurrent_batches_sharing_event_ids_count_each_once(metrics):
    ids = [f"e{i}" for i in range(500)]
    results = await asyncio.gather(*(metrics.record([value(event_id=e) for e in (ids if n % 2 else ids[::-1])])
                                     for n in range(6)))
    assert sum(new for new, _ in results) == 500 and sum(dup for _, dup in results) == 2500


async def test_a_value_reads_back_with_its_fields(metrics, pool):
    await metrics.record([MetricValue("rec", "auc", 0.1 + 0.2, T0 + timedelta(microseconds=7), "9",
                                      {"segment": "premium"}, "ev")])
    record = await pool.fetchrow("SELECT * FROM pipeline_metric_values")
    assert dict(record) == {"model_name": "rec", "metric_name": "auc", "model_version": "9",
                            "time": T0 + timedelta(microseconds=7), "value": 0.1 + 0.2,
                            "labels": '{"segment": "premium"}', "event_id": "ev"}


async def read(metrics, *, start=T0, end=T0 + timedelta(hours=1), version="", labels=None, limit=1000,
               metric="latency") -> list[float]:
    return await metrics.values(model_name="rec", metric_name=metric, model_version=version,
                                label_filter=labels or {}, start=start, end=end, limit=limit)


async def test_the_window_includes_its_start_and_excludes_its_end(metrics):
    end = T0 + timedelta(minutes=5)
    await metrics.record([value(1.0, at=T0 - timedelta(microseconds=1)), value(2.0, at=T0),
                          value(3.0, at=end - timedelta(microseconds=1)), value(4.0, at=end),
                          value(5.0, at=T0, metric="other")])
    assert sorted(await read(metrics, end=end)) == [2.0, 3.0]


async def test_reads_filter_by_version_and_labels(metrics):
    await metrics.record([value(1.0, version="1"), value(2.0, version="2", labels={"segment": "premium"}),
                          value(3.0, version="2", labels={"segment": "premium", "region": "eu"}),
                          value(4.0, version="2", labels={"segment": "basic", "region": "eu"})])
    assert sorted(await read(metrics)) == [1.0, 2.0, 3.0, 4.0]
    assert sorted(await read(metrics, version="2")) == [2.0, 3.0, 4.0]
    assert sorted(await read(metrics, labels={"segment": "premium"})) == [2.0, 3.0]
    assert await read(metrics, labels={"segment": "premium", "region": "eu"}) == [3.0]
    assert await read(metrics, version="1", labels={"region": "eu"}) == []


async def test_a_limit_keeps_the_newest_values(metrics):
    await metrics.record([value(float(i), at=T0 + timedelta(seconds=i)) for i in range(10)])
    assert await read(metrics, limit=3) == [9.0, 8.0, 7.0]


# ----- unreachable -----

async def test_an_unreachable_database_is_state_store_unavailable():
    pool = await asyncpg.create_pool("postgresql://postgres@127.0.0.1:1/none", min_size=0, timeout=1)
    try:
        with pytest.raises(StateStoreUnavailable):
            await PostgresMetricStore(pool).record([value()])
        with pytest.raises(StateStoreUnavailable):
            await PostgresMetricStore(pool).values(model_name="rec", metric_name="latency", model_version="",
                                                   label_filter={}, start=T0, end=T0, limit=1)
        with pytest.raises(StateStoreUnavailable):
            await PostgresAlertStore(pool).create_rule(new_rule())
        with pytest.raises(StateStoreUnavailable):
            await PostgresAlertStore(pool).list_alerts(model_name="", states=[], rule_id="", min_severity=None,
                                                       limit=1, after_seq=0)
    finally:
        pool.terminate()


async def test_retention_deletes_values_before_the_cutoff_in_batches(metrics, pool):
    await metrics.record([value(float(i), at=T0 + timedelta(minutes=i)) for i in range(10)])
    assert await metrics.delete_before(T0 + timedelta(minutes=5), batch=2) == 5  # three statements
    left = await metrics.values(model_name="rec", metric_name="latency", model_version="", label_filter={},
                                start=T0, end=T0 + timedelta(hours=1), limit=100)
    assert sorted(left) == [5.0, 6.0, 7.0, 8.0, 9.0]
    assert await metrics.delete_before(T0) == 0

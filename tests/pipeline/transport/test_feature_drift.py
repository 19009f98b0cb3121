"""Feature drift against training, over gRPC against a real PostgreSQL holding the demo tables: a
pipeline server over the repository's own `features/` views and a database of its own (small
demo data), the training sample of `recommendation-model` taken as its trainer takes it (the
point-in-time training set of the demo tables, the latest events held out) and kept as a
successful run's are, then a drift rule on `user_profile:activity` evaluated by the server's own
loop:

- a few hundred users touched with their values as they are: no alert;
- a few hundred more with their activity shifted by +0.4 (clipped to 1): the PSI alert fires;
- the shifted rows leave the window, the unshifted ones stay: it resolves, below the threshold
  (so the unshifted verdict above was a real "no", not "too few values");
- a feature drift cannot be measured on (a vector, a string) is refused, naming it.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone

import asyncpg
import grpc
import numpy as np
import pytest
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb

from ml_serving_server.services.pipeline.declarations import load_directory
from ml_serving_server.services.pipeline.domain.training import TrainingSets
from ml_serving_server.services.pipeline.postgres_distributions import PostgresTrainingDistributions
from ml_serving_server.services.pipeline.postgres_runs import PostgresRunStore
from ml_serving_server.services.pipeline.postgres_store import PostgresFeatureSource
from ml_serving_server.services.pipeline.postgres_training_set import PostgresTrainingSetSource
from ml_serving_tools import demo_data
from ml_serving_tools.demo_model import retrain
from ml_serving_tools.devauth import mint_token
from ml_serving_tools.paths import ROOT

from ...support import error_info, private_database
from .conftest import pipeline_server, stub_to
from .test_dependencies_down import failed
from .test_monitoring import seconds, wait_for

MODEL = "recommendation-model"
FEATURE = "user_profile:activity"
# Users 0..999 are the demo model's own; the events pick users uniformly, so the training sample
# (one value per training event) follows the users' own distribution.
SIZES = {"users": 2_000, "items": 200, "events": 20_000}
EVALUATION_SECONDS = 0.2
TOUCHED = 400  # users per step: well above the rule's min_samples
SHIFT = 0.4


@pytest.fixture(scope="module")
async def demo_dsn(postgres_server):
    with private_database(postgres_server) as url:
        report = await demo_data.load(url, **SIZES)
        assert report.loaded, report.line()
        yield url


@pytest.fixture(scope="module")
async def trained_on(demo_dsn) -> dict[str, list[float]]:
    """The samples a retraining run of the demo model would keep (its training set read through the
    feature store, its split, its sampling), kept as the worker keeps a succeeded run's."""
    runs = await PostgresRunStore.connect(demo_dsn)  # migrates the pipeline's schema
    source = await PostgresFeatureSource.connect(demo_dsn)
    try:
        training = TrainingSets(load_directory(ROOT / "features"),
                                PostgresTrainingSetSource(source.pool, statement_timeout_s=60, timeout_s=120))
        query = retrain.EVENTS_QUERY.format(max_rows=SIZES["events"])
        events = await training.columns(retrain.USER_FEATURES + retrain.ITEM_FEATURES, query, "event_time")
        examples = retrain.build_examples(events)
        train_rows, _ = retrain.split_by_time(examples.time, retrain.PARAMETERS["holdout_fraction"][0])
        samples = retrain.training_samples(examples, train_rows)
        await PostgresTrainingDistributions(runs.pool).save(MODEL, "1", str(uuid.uuid4()), samples,
                                                            datetime.now(timezone.utc))
        return samples
    finally:
        await source.close()
        await runs.close()


@pytest.fixture(scope="module")
async def drift_stub(demo_dsn, trained_on, redis_url, key_prefix, dev_keys):
    """A server over the demo views, evaluating its rules five times a second (no schedules)."""
    async with pipeline_server(ROOT / "features", redis_url, f"{key_prefix}:{uuid.uuid4().hex[:6]}", demo_dsn,
                               dev_keys, monitor_evaluation_seconds=EVALUATION_SECONDS,
                               materialization_scheduler_enabled=False, retraining_scheduler_enabled=False) as server, \
            stub_to(server, mint_token(dev_keys, subject="drift-tests")) as stub:
        yield stub


def drift_rule(feature: str = FEATURE) -> pb.AlertRule:
    return pb.AlertRule(name=f"activity-drift-{uuid.uuid4().hex[:8]}", model_name=MODEL, metric_name=feature,
                        window=seconds(600), min_samples=200, enabled=True,
                        drift=pb.DriftCondition(reference=pb.DRIFT_REFERENCE_TRAINING, feature=feature))


async def alerts_of(stub, rule_id: str, state=pb.ALERT_STATE_FIRING) -> list[pb.Alert]:
    reply = await stub.ListAlerts(pb.ListAlertsRequest(model_name=MODEL, rule_id=rule_id, states=[state]))
    return list(reply.alerts)


async def test_shifting_a_feature_raises_the_psi_alert_and_unshifted_data_does_not(drift_stub, demo_dsn, trained_on):
    assert len(trained_on[FEATURE]) == 10_000  # 16,000 training events, sampled
    rule = (await drift_stub.CreateAlertRule(pb.CreateAlertRuleRequest(rule=drift_rule()))).rule
    assert (rule.drift.reference, rule.drift.feature, rule.drift.psi_threshold) == (
        pb.DRIFT_REFERENCE_TRAINING, FEATURE, 0.2)
    assert (await drift_stub.GetAlertRule(pb.GetAlertRuleRequest(rule_id=rule.rule_id))).rule == rule
    users = np.random.default_rng(5).permutation(SIZES["users"])
    unshifted, shifted = users[:TOUCHED].tolist(), users[TOUCHED:2 * TOUCHED].tolist()
    conn = await asyncpg.connect(demo_dsn)
    try:
        await conn.execute("UPDATE demo_users SET updated_at = now() WHERE user_id = ANY($1::bigint[])", unshifted)
        await asyncio.sleep(10 * EVALUATION_SECONDS)  # rounds enough to have fired
        assert await alerts_of(drift_stub, rule.rule_id) == []

        await conn.execute("UPDATE demo_users SET activity = least(activity + $2, 1.0), updated_at = now() "
                           "WHERE user_id = ANY($1::bigint[])", shifted, SHIFT)
        [alert] = await wait_for(lambda: alerts_of(drift_stub, rule.rule_id))
        assert alert.value > 0.2 and alert.reference_value == 0.2 and alert.severity == pb.ALERT_SEVERITY_WARNING
        assert f"PSI of {FEATURE}" in alert.message and "latest retraining run" in alert.message

        # The shifted rows leave the window; the unshifted ones are what it holds: below the threshold.
        await conn.execute("UPDATE demo_users SET updated_at = now() - interval '1 hour' "
                           "WHERE user_id = ANY($1::bigint[])", shifted)
        [resolved] = await wait_for(lambda: alerts_of(drift_stub, rule.rule_id, pb.ALERT_STATE_RESOLVED))
        assert resolved.alert_id == alert.alert_id and resolved.value < 0.2
        assert await alerts_of(drift_stub, rule.rule_id) == []
    finally:
        await conn.close()
        await drift_stub.DeleteAlertRule(pb.DeleteAlertRuleRequest(rule_id=rule.rule_id))


@pytest.mark.parametrize("feature, words", [
    ("user_profile:taste", "float_list feature"),  # an embedding
    ("user_profile:country", "string feature"),
    ("user_profile:nope", "has no feature"),
    ("nope:activity", "no feature view named"),
])
async def test_a_feature_drift_cannot_be_measured_on_is_refused_naming_it(drift_stub, feature, words):
    error = await failed(drift_stub.CreateAlertRule(pb.CreateAlertRuleRequest(rule=drift_rule(feature))))
    info = error_info(error)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (info.metadata["field"], info.reason) == ("rule.drift.feature", "INVALID_CONDITION")
    assert words in error.details()

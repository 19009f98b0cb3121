"""A real Prometheus (Debian's package, or one on PATH) scrapes the mesh, Envoy's admin
/stats/prometheus and TorchServe's metrics API while an end-to-end load goes through Envoy: every
dashboard query then returns data, and the error-ratio alert of the real rules file fires while
TorchServe fails the predictions of one model.

The load, all through the front door (native gRPC and REST): a model registered and loaded
(two echo versions), predictions, an A/B experiment with predictions, exposures and outcomes, a
canary rolled back, a bandit's selections and rewards, feature reads, a monitor rule whose alert
fires (queueing a retraining run, then cancelled), client errors on every service, and the
injected failure: predictions of a model whose handler raises (TorchServe answers "Prediction
failed", the Inference service a server fault). The session's stack and TorchServe are shared
and left as they were: the models are unloaded afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
import yaml
from google.protobuf import duration_pb2

from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as ppb
from mnbara.mlserving.pipeline.v1 import pipeline_pb2_grpc
from mnbara.mlserving.router.v1 import router_pb2 as rpb
from ml_serving import BanditClient, PipelineClient, RouterClient
from ml_serving_tools import dashboard, demo_data
from ml_serving_tools import stack as stack_module
from ml_serving_tools.devauth import mint_token
from ml_serving_tools.devservices.prometheus import start_prometheus, static_job

from ..inference.torchserve_models import archive
from ..router.transport.conftest import experiment, served_model
from ..support import bearer, call, private_database
from .conftest import RULES

pytestmark = pytest.mark.timeout(240)

RATE_INTERVAL = "30s"  # stands for Grafana's $__rate_interval: longer than the load, 30 scrapes
ALERT_WITHIN_S = 60.0
TARGETS_UP_WITHIN_S = 20.0  # Prometheus syncs its targets about 5 s after it starts
FAILED_PREDICTIONS = 40
ERROR_RATIO_ALERT = "MeshServiceErrorRatioHigh"
INFERENCE = "mnbara.mlserving.inference.v1.InferenceService"
DEMO_MODEL = "recommendation-model"
DEMO_SIZES = {"users": 300, "items": 60, "events": 3_000}
SERIES_WITHIN_S = 15.0
MONITOR_ALERT_WITHIN_S = 15.0


def rules_with_short_for(tmp: Path) -> Path:
    """The real rules file, but every `for:` cut to 1 s: the test cannot wait minutes for an alert
    to leave pending. Expressions, thresholds and windows stay as shipped."""
    groups = yaml.safe_load(RULES.read_text())
    for group in groups["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "1s"
    path = tmp / RULES.name
    path.write_text(yaml.safe_dump(groups, sort_keys=False))
    return path


def wait_targets_up(prometheus, count: int) -> None:
    """Until Prometheus has scraped each of its `count` targets successfully."""
    deadline = time.monotonic() + TARGETS_UP_WITHIN_S
    while time.monotonic() < deadline:
        targets = prometheus.targets()
        if len(targets) == count and all(t["health"] == "up" for t in targets):
            return
        time.sleep(0.5)
    raise AssertionError(f"targets not up within {TARGETS_UP_WITHIN_S} s: {prometheus.targets()}")


@pytest.fixture(scope="module")
def pipeline_pod(tmp_path_factory, stack_env, postgres_server, key_prefix, dev_keys):
    """A second mesh process hosting only the Pipeline, as a Kubernetes pod would, on a database of
    its own holding the demo data (small), one of whose views it has materialised: the session's
    database has no demo source tables, so nothing there can be materialised."""
    with private_database(postgres_server) as dsn:
        report = asyncio.run(demo_data.load(dsn, **DEMO_SIZES))
        assert report.loaded, report.line()
        grpc_addr, metrics_addr = (f"127.0.0.1:{stack_module.free_port()}" for _ in range(2))
        env = {**stack_env, **stack_module.mesh_auth_env(dev_keys), "DATABASE_URL": dsn, "MESH_SERVICES": "pipeline",
               "MESH_KEY_PREFIX": f"{key_prefix}-obs-{uuid.uuid4().hex[:6]}", "MESH_GRPC_ADDR": grpc_addr,
               "MESH_METRICS_ADDR": metrics_addr}
        process = stack_module.start_mesh(env, tmp_path_factory.mktemp("pipeline-pod") / "mesh.log")
        try:
            yield PipelinePod(grpc_addr, metrics_addr, mint_token(dev_keys, subject="observability"))
        finally:
            stack_module.stop(process)


@dataclass(frozen=True)
class PipelinePod:
    grpc_addr: str
    metrics_addr: str
    token: str


@pytest.fixture(scope="module")
def prometheus(prometheus_tools, stack, pipeline_pod, torchserve_endpoints, tmp_path_factory):
    torchserve_metrics = urlsplit(torchserve_endpoints.metrics_url).netloc
    assert torchserve_metrics, "TORCHSERVE_METRICS_URL is not set: TorchServe's metrics cannot be scraped"
    work = tmp_path_factory.mktemp("prometheus")
    mesh = static_job("ml-serving-mesh", stack.metrics_addr)
    mesh["static_configs"][0]["targets"].append(pipeline_pod.metrics_addr)
    jobs = [mesh,
            static_job("ml-serving-gateway", stack.admin_addr, "/stats/prometheus"),
            static_job("torchserve", torchserve_metrics)]
    server = start_prometheus(prometheus_tools, work, jobs, [rules_with_short_for(work)])
    try:
        wait_targets_up(server, sum(len(job["static_configs"][0]["targets"]) for job in jobs))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, bytes]:
    work, out = tmp_path_factory.mktemp("obs-handlers"), tmp_path_factory.mktemp("obs-archives")
    with ThreadPoolExecutor(2) as pool:
        futures = {kind: pool.submit(archive, kind, kind, "1.0", work, out) for kind in ("echo", "error")}
        return {kind: future.result().read_bytes() for kind, future in futures.items()}


@pytest.fixture(scope="module")
async def loaded(prometheus, stack, archives, pipeline_pod):
    """Runs the whole load once (Prometheus already scraping); the failing model's name."""
    addr, token = stack.front_door, stack.token
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as models:
        model, failing = await asyncio.gather(  # loading takes seconds: both models at once
            models.enter_async_context(served_model(addr, token, [archives["echo"], archives["echo"]], prefix="obs")),
            models.enter_async_context(served_model(addr, token, [archives["error"]], prefix="obs-fail")))
        print(f"models loaded after {time.monotonic() - started:.1f} s")
        predict_rest(stack, model, 10)
        async with RouterClient(addr, token=token) as router:
            await experiment_load(router, model)
            canary_id = await start_canary(router, model)
            await bandit_load(addr, token)
            await pipeline_load(stack, pipeline_pod)
            await materialize(pipeline_pod)
            await wait_for_series(prometheus, f'mlserving_router_canary_step{{model="{model}"}}')
            await router.rollback_canary(rpb.RollbackCanaryRequest(canary_id=canary_id, reason="observability e2e"))
        print(f"router, bandit and pipeline done after {time.monotonic() - started:.1f} s")
        client_errors(stack)
        print(f"load done after {time.monotonic() - started:.1f} s")
        # The failure: one failed prediction first, and the rest after a scrape has seen it. A
        # counter's first increments, before Prometheus has its first sample, are invisible to
        # rate() (it starts counting from the first sample).
        failures = predict_rest(stack, failing, 1)
        await asyncio.sleep(2)
        failures += predict_rest(stack, failing, FAILED_PREDICTIONS - 1)
        assert failures == FAILED_PREDICTIONS, "the failing model's predictions should all fail"
        await asyncio.sleep(3)  # a few scrapes before the models' series stop moving
    return failing


def predict_rest(stack, model: str, count: int) -> int:
    """`count` predictions over REST; how many failed with a 5xx."""
    failed = 0
    for index in range(count):
        reply = call(stack.front_door, "POST", f"/api/v1/inference/models/{model}:predict",
                     {"inputs": {"x": index}, "version": "1"}, token=stack.token)
        assert reply.status < 400 or reply.status >= 500, (reply.status, reply.body[:300])
        failed += reply.status >= 500
    return failed


async def experiment_load(router, model: str) -> None:
    """An experiment with predictions, exposures and outcomes, stopped afterwards."""
    name = f"obs-{uuid.uuid4().hex[:8]}"
    await router.create_experiment(experiment(name, model))
    for index in range(10):
        await router.predict(f"user-{index}", {"x": index}, experiment=name)
        await router.assign_variant(f"user-{index}", experiment=name)
        await router.record_outcome(experiment=name, user_id=f"user-{index}", metric="click",
                                    converted=index % 2 == 0, event_id=f"click-{index}")
    await router.stop_experiment(rpb.StopExperimentRequest(name=name))


async def start_canary(router, model: str) -> str:
    """A canary of version 2 that will not advance on its own (it waits for 1,000 requests), with
    some traffic; its id."""
    canary = rpb.Canary(model_name=model, canary_version="2", steps_bps=[2000, 10000],
                        step_interval=duration_pb2.Duration(seconds=60), min_requests_per_step=1000,
                        thresholds=rpb.CanaryThresholds(max_error_rate_increase=0.05))
    started = (await router.start_canary(rpb.StartCanaryRequest(canary=canary))).canary
    for index in range(5):
        await router.predict(f"canary-{index}", {"x": index}, model_name=model)
    return started.canary_id


async def wait_for_series(prometheus, selector: str, timeout: float = SERIES_WITHIN_S) -> None:
    """Until Prometheus has scraped a sample of `selector` (the Router's catalog, which the canary
    gauge reads, is refreshed every 5 s)."""
    deadline = time.monotonic() + timeout
    while not prometheus.query(selector):
        assert time.monotonic() < deadline, f"no {selector} scraped within {timeout} s"
        await asyncio.sleep(0.5)


async def materialize(pod: PipelinePod) -> None:
    async with PipelineClient(pod.grpc_addr, token=pod.token) as pipeline:
        jobs = (await pipeline.materialize_features(["user_profile"], wait=True, timeout=60)).jobs
    assert jobs and all(job.state == ppb.JOB_STATE_SUCCEEDED for job in jobs), jobs


async def bandit_load(addr: str, token: str) -> None:
    name = f"obs-{uuid.uuid4().hex[:8]}"
    async with BanditClient(addr, token=token) as bandit:
        await bandit.create_bandit(name, ["a", "b"])
        for index in range(5):
            decision = await bandit.select(name)
            await bandit.reward(decision_id=decision.decision_id, reward=1.0 if index % 2 else 0.0,
                                event_id=f"reward-{index}")


async def pipeline_load(stack, pod: PipelinePod) -> None:
    """Feature reads; a monitor rule whose alert fires (and queues a retraining run, cancelled)."""
    # Online only: the demo views' source tables are not in the session's database (the
    # materialisation is the pipeline pod's).
    reads = call(stack.front_door, "POST", "/api/v1/ml/features/get", token=stack.token,
                 body={"featureView": "user_profile", "entityIds": ["123456789", "987654321"],
                       "disableReadThrough": True})
    assert reads.status == 200, reads.body[:300]
    await monitor_load(pod)


async def monitor_load(pod: PipelinePod) -> None:
    """On the pipeline pod, alone on its database: every replica of a database evaluates its
    rules and the first to store a change counts it, and the session's database has others
    (an in-process mesh of other tests) whose counts no scrape would see."""
    # A rule needs a model the Pipeline can retrain: the demo's. Its metric is this test's own.
    metric, model = f"ctr_{uuid.uuid4().hex[:8]}", DEMO_MODEL
    async with grpc.aio.insecure_channel(pod.grpc_addr, interceptors=bearer(pod.token)) as channel:
        pipeline = pipeline_pb2_grpc.PipelineServiceStub(channel)
        rule = (await pipeline.CreateAlertRule(ppb.CreateAlertRuleRequest(rule=ppb.AlertRule(
            name=f"obs-{uuid.uuid4().hex[:6]}", model_name=model, metric_name=metric,
            window=duration_pb2.Duration(seconds=2),
            threshold=ppb.ThresholdCondition(comparison=ppb.COMPARISON_LESS_THAN, threshold=0.05),
            severity=ppb.ALERT_SEVERITY_WARNING, trigger_retraining=True, enabled=True)))).rule
        deadline = time.monotonic() + MONITOR_ALERT_WITHIN_S
        firing = ppb.ListAlertsRequest(rule_id=rule.rule_id, states=[ppb.ALERT_STATE_FIRING])
        while not (alerts := (await pipeline.ListAlerts(firing)).alerts):
            assert time.monotonic() < deadline, f"the monitor's alert did not fire within {MONITOR_ALERT_WITHIN_S} s"
            await pipeline.RecordMetric(ppb.RecordMetricRequest(model_name=model, metric_name=metric, value=0.01))
            await asyncio.sleep(0.3)
        # Cancel the retraining runs these alerts queued (and no one else's): their end is counted.
        alert_ids = {alert.alert_id for alert in alerts}
        runs = (await pipeline.ListRetrainingRuns(ppb.ListRetrainingRunsRequest(model_name=model))).runs
        for run in runs:
            if run.alert_id in alert_ids:
                await pipeline.CancelRetrainingRun(ppb.CancelRetrainingRunRequest(run_id=run.run_id))
        await pipeline.DeleteAlertRule(ppb.DeleteAlertRuleRequest(rule_id=rule.rule_id))  # which resolves its alert


def client_errors(stack) -> None:
    """One caller's mistake per service (NOT_FOUND), so that every "errors by code" panel has data."""
    missing = f"obs-missing-{uuid.uuid4().hex[:6]}"
    for method, path, body in (
            ("GET", f"/api/v1/registry/models/{missing}", None),
            ("POST", f"/api/v1/inference/models/{missing}:predict", {"inputs": {"x": 1}}),
            ("GET", f"/api/v1/router/experiments/{missing}", None),
            ("GET", f"/api/v1/bandits/stats?bandit={missing}", None),
            ("POST", "/api/v1/ml/features/get", {"featureView": missing.replace("-", "_"), "entityId": "1"})):
        reply = call(stack.front_door, method, path, body, token=stack.token)
        assert reply.status == 404, (path, reply.status, reply.body[:300])


def firing(prometheus, alertname: str, **labels: str) -> list[dict]:
    return [a for a in prometheus.alerts() if a["labels"].get("alertname") == alertname and a["state"] == "firing"
            and all(a["labels"].get(k) == v for k, v in labels.items())]


async def test_the_error_ratio_alert_fires_while_torchserve_fails_predictions(prometheus, loaded):
    deadline = time.monotonic() + ALERT_WITHIN_S
    while not firing(prometheus, ERROR_RATIO_ALERT, grpc_service=INFERENCE):
        assert time.monotonic() < deadline, (
            f"{ERROR_RATIO_ALERT} not firing for {INFERENCE} within {ALERT_WITHIN_S} s; alerts: {prometheus.alerts()}; "
            f"server faults: {prometheus.query('sum by (grpc_service, grpc_code) (grpc_server_handled_total)')}")
        await asyncio.sleep(0.5)
    (alert,) = firing(prometheus, ERROR_RATIO_ALERT, grpc_service=INFERENCE)
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["summary"].startswith(f"{INFERENCE}: ")


EMPTY_QUERY_PATIENCE_S = 20.0


def test_every_dashboard_query_returns_data(prometheus, loaded):
    """Each query over the test's time range, as its panel asks Grafana's datasource (a canary's
    gauge, for one, has samples only while the canary runs)."""
    board = dashboard.dashboard()
    pending = {f"{row} / {title}": expr.replace("$__rate_interval", RATE_INTERVAL)
               for row, title, expr in dashboard.panel_queries(board)}
    failed: list[str] = []
    # A series counted late in the load (an alert resolved at its end, say) needs two scrapes
    # before increase() or rate() can answer: on a loaded machine, ask again for a while.
    deadline = time.monotonic() + EMPTY_QUERY_PATIENCE_S
    while True:
        for name, query in list(pending.items()):
            try:
                if prometheus.query_range(query, prometheus.started_at, time.time()):
                    del pending[name]
            except RuntimeError as error:
                failed.append(f"{name}: {error}")
                del pending[name]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert failed == [], "queries Prometheus refused:\n" + "\n".join(failed)
    empty = [f"{name}: {query}" for name, query in pending.items()]
    assert empty == [], f"{len(empty)} queries returned no data:\n" + "\n".join(empty)

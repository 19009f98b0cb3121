"""Retraining runs end to end, through the real Envoy (REST), against real PostgreSQL, Redis,
MLflow, S3, the Registry and real worker processes (`python -m
ml_serving_server.services.pipeline.worker_main`) training the demo `recommendation-model` on
the feature store's point-in-time training set of the demo tables:

- a triggered run is answered at once (QUEUED), trained by a worker, logged to MLflow and
  registered in the Registry in Staging with its metrics, and it beats the popularity baseline;
- a worker SIGKILLed mid-run loses its run within the heartbeat bound, and a fresh worker
  finishes it as attempt 2;
- two workers, several runs at once: every run is claimed exactly once (attempt 1, one MLflow
  run, one claim in the workers' logs), and both workers take some;
- a running run cancelled through REST ends CANCELLED and registers nothing;
- bad triggers are refused (404 unknown model, 400 naming `parameters.<name>`), queueing nothing.

The module loads a small demo data set into a database of its own (so no other test's queued
runs meet these workers, and no other mesh sweeps these runs) and runs a mesh process hosting the
pipeline and the Registry, Envoy in front of it, and its own workers, with a short heartbeat
(0.5 s) and worker-lost bound (3 s) in the mesh (its sweeper) and in the workers alike.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from ml_serving_tools import demo_data
from ml_serving_tools import stack as stack_module
from ml_serving_tools.devauth import DevKeys

from ...support import call, private_database

pytestmark = pytest.mark.timeout(240)

MODEL = "recommendation-model"
# The demo model's own world (1,000 users, 200 items) and more: users 0..999 and items 0..199 are
# the model's, events follow the same hidden ground truth. A few seconds of training per run.
SIZES = {"users": 2_000, "items": 200, "events": 40_000}
HEARTBEAT_SECONDS, LOST_SECONDS, POLL_SECONDS = 0.5, 3.0, 0.5
TAKEBACK_MARGIN_SECONDS = 4.0  # beyond the lost bound: the sweeper's period, polling, a loaded machine

# What each test triggers (the trainer's parameter names, as the Struct carries them).
HAPPY = {"epochs": 2, "max_rows": 20_000}  # about 3 s of work: 16,000 rows train, 4,000 held out
SLOW = {"epochs": 30, "max_rows": 40_000, "hidden": [256, 256]}  # about 7 s in the "training" stage
FAST = {"epochs": 1, "max_rows": 5_000}  # under a second of training

RUN_TIMEOUT = 120.0  # a run from its trigger to its end
READY_TIMEOUT = 60.0  # a worker process from its start to its first poll (importing torch and MLflow)

TRIGGER = "/api/v1/ml/retraining/trigger"
STATUS = "/api/v1/ml/retraining/status/{}"
CANCEL = "/api/v1/ml/retraining/runs/{}:cancel"
RUNS = "/api/v1/ml/retraining/runs"
VERSION = "/api/v1/registry/models/{}/versions/{}"
VERSIONS = "/api/v1/registry/models/{}/versions"

QUEUED, RUNNING, SUCCEEDED, CANCELLED = (f"RUN_STATE_{s}" for s in ("QUEUED", "RUNNING", "SUCCEEDED", "CANCELLED"))
ENDED = {SUCCEEDED, CANCELLED, "RUN_STATE_FAILED"}


# ----- the module's stack and workers ----------------------------------------------------------

class Workers:
    """The retraining worker processes of this module: the stack's and those started here. Each
    is found by its pid, which a run's workerId carries (`<host>-<pid>-<suffix>`)."""

    def __init__(self, env: dict[str, str], folder: Path, adopted: list[subprocess.Popen]):
        self.env, self.folder = env, folder
        self.procs: list[subprocess.Popen] = []
        self.logs: dict[int, Path] = {}
        for index, proc in enumerate(adopted):  # start_stack names their logs so
            self._add(proc, folder / f"retraining-worker-{index + 1}.log")

    def _add(self, proc: subprocess.Popen, log: Path) -> subprocess.Popen:
        self.procs.append(proc)
        self.logs[proc.pid] = log
        return proc

    def alive(self) -> list[subprocess.Popen]:
        return [proc for proc in self.procs if proc.poll() is None]

    def start(self) -> subprocess.Popen:
        log = self.folder / f"retraining-worker-extra-{len(self.procs) + 1}.log"
        return self._add(stack_module.start_retraining_worker(self.env, log), log)

    def wait_ready(self, proc: subprocess.Popen, timeout: float = READY_TIMEOUT) -> None:
        """Until the worker logs that it is set up (store, feature source, MLflow client loaded)."""
        deadline = time.monotonic() + timeout
        while not any(msg.startswith("retraining worker ") and ": models " in msg
                      for msg in log_messages(self.logs[proc.pid])):
            assert proc.poll() is None, f"worker {proc.pid} exited ({proc.returncode}): {self.tail(proc)}"
            assert time.monotonic() < deadline, f"worker {proc.pid} not ready in {timeout} s: {self.tail(proc)}"
            time.sleep(0.1)

    def exactly(self, count: int) -> list[subprocess.Popen]:
        """`count` live workers, all ready: extra ones stopped (SIGTERM; they are idle between
        tests), missing ones started."""
        for proc in self.alive()[count:]:
            stack_module.stop(proc)
        while len(self.alive()) < count:
            self.start()
        for proc in self.alive():
            self.wait_ready(proc)
        return self.alive()

    def claims(self) -> dict[str, list[tuple[str, int, str]]]:
        """Every claim the workers logged: run id -> [(worker id, attempt, log file)]."""
        found: dict[str, list[tuple[str, int, str]]] = {}
        for log in self.logs.values():
            for msg in log_messages(log):
                # "retraining run <id> of <model>: attempt <n> on <worker id>" (domain/worker.py)
                head, sep, tail = msg.partition(f" of {MODEL}: attempt ")
                if head.startswith("retraining run ") and sep and " on " in tail:
                    attempt, _, worker_id = tail.partition(" on ")
                    found.setdefault(head.removeprefix("retraining run "), []).append(
                        (worker_id, int(attempt), log.name))
        return found

    def tail(self, proc: subprocess.Popen, lines: int = 15) -> str:
        log = self.logs[proc.pid]
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"

    def stop_all(self) -> None:
        for proc in self.procs:
            stack_module.stop(proc)


class Retraining:
    """The module's stack (mesh with pipeline and Registry, Envoy) and its workers."""

    def __init__(self, stack: stack_module.Stack, workers: Workers):
        self.stack, self.workers = stack, workers
        self.triggered: set[str] = set()  # run ids

    def rest(self, method: str, path: str, body=None):
        return call(self.stack.front_door, method, path, body, token=self.stack.token)

    def trigger(self, parameters: dict, reason: str = "e2e") -> dict:
        reply = self.rest("POST", TRIGGER, {"modelName": MODEL, "reason": reason, "parameters": parameters})
        assert reply.status == 200, reply.body
        self.triggered.add(reply.json()["runId"])
        return reply.json()

    def status(self, run_id: str) -> dict:
        reply = self.rest("GET", STATUS.format(run_id))
        assert reply.status == 200, reply.body
        return reply.json()["run"]

    def wait_for(self, run_id: str, done: Callable[[dict], bool], timeout: float, what: str) -> dict:
        """The run's status once `done` holds; fails after `timeout` with the last status seen."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.status(run_id)
            if done(run):
                return run
            assert run["state"] not in ENDED or what == "ended", f"run ended before it was {what}: {run}"
            assert time.monotonic() < deadline, f"run not {what} within {timeout} s: {run}"
            time.sleep(0.1)

    def wait_ended(self, run_id: str, timeout: float = RUN_TIMEOUT) -> dict:
        return self.wait_for(run_id, lambda run: run["state"] in ENDED, timeout, "ended")

    def settle(self, timeout: float = 30.0) -> None:
        """Cancels the runs an earlier test left queued or running (it failed midway) and waits
        for them to end, so that each test starts with an empty queue."""
        reply = self.rest("GET", f"{RUNS}?pageSize=1000")
        assert reply.status == 200, reply.body
        left = [run["runId"] for run in reply.json()["runs"] if run["state"] not in ENDED]
        for run_id in left:
            self.rest("POST", CANCEL.format(run_id), {})
        for run_id in left:
            self.wait_ended(run_id, timeout)

    def version(self, number: str) -> dict:
        reply = self.rest("GET", VERSION.format(MODEL, number))
        assert reply.status == 200, reply.body
        return reply.json()["modelVersion"]

    def versions_of_runs(self, run_ids: set[str]) -> list[dict]:
        """The Registry's versions of the model tagged with one of these retraining runs (every page)."""
        found, token = [], ""
        for _ in range(100):
            page_token = f"&pageToken={token}" if token else ""
            reply = self.rest("GET", f"{VERSIONS.format(MODEL)}?pageSize=1000{page_token}")
            if reply.status == 404:  # no version of the model registered yet
                return found
            assert reply.status == 200, reply.body
            page = reply.json()
            found += [v for v in page["modelVersions"] if v["tags"].get("retraining.run_id") in run_ids]
            token = page["nextPageToken"]
            if not token:
                return found
        raise AssertionError("more than 100 pages of versions")

    def versions_of_run(self, run_id: str) -> list[dict]:
        return self.versions_of_runs({run_id})

    def delete_registered_versions(self) -> None:
        """Deletes the versions this module's runs registered: the model lives in the session's
        shared MLflow, where they would otherwise pile up run after run. Best effort."""
        try:
            for version in self.versions_of_runs(self.triggered):
                reply = self.rest("DELETE", VERSION.format(MODEL, version["version"]))
                if reply.status != 200:
                    print(f"could not delete version {version['version']}: {reply.status} {reply.body[:200]!r}")
        except (AssertionError, OSError) as error:
            print(f"could not delete the versions registered here: {error}")


def log_messages(log: Path) -> list[str]:
    """The `msg` of every JSON line of a process's log (other lines skipped)."""
    if not log.exists():
        return []
    messages = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("msg"), str):
            messages.append(entry["msg"])
    return messages


def pid_of(worker_id: str) -> int:
    """The pid in a worker id, `<host>-<pid>-<suffix>` (the host may hold dashes)."""
    return int(worker_id.rsplit("-", 2)[1])


def stamp(text: str | None) -> datetime | None:
    if not text:
        return None
    value = Timestamp()
    value.FromJsonString(text)
    return value.ToDatetime()


def reason_of(error_body: dict) -> str:
    (detail,) = error_body["details"]
    return detail["reason"]


@pytest.fixture(scope="module")
def demo_dsn(postgres_server):
    with private_database(postgres_server) as url:
        report = asyncio.run(demo_data.load(url, **SIZES))
        assert report.loaded, report.line()
        yield url


@pytest.fixture(scope="module")
def retraining(tmp_path_factory, demo_dsn, redis_url, s3_endpoint, mlflow_uri, key_prefix,
               dev_keys: DevKeys):
    folder = tmp_path_factory.mktemp("retraining")

    def free() -> str:
        return f"127.0.0.1:{stack_module.free_port()}"

    grpc_addr = free()
    env = {"REDIS_URL": redis_url, "DATABASE_URL": demo_dsn, **s3_endpoint.env(), "MLFLOW_TRACKING_URI": mlflow_uri,
           "MESH_SERVICES": "pipeline,registry", "MESH_KEY_PREFIX": f"{key_prefix}-retrain-{uuid.uuid4().hex[:6]}",
           "MESH_SHUTDOWN_DELAY_SECONDS": "0", "LOG_LEVEL": "INFO",
           # The mesh's sweeper and the workers read the same bounds.
           "PIPELINE_RETRAINING_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
           "PIPELINE_RETRAINING_WORKER_LOST_SECONDS": str(LOST_SECONDS),
           "PIPELINE_RETRAINING_POLL_SECONDS": str(POLL_SECONDS),
           "PIPELINE_RETRAINING_WORKDIR": str(folder)}
    running = stack_module.start_stack(folder, env, grpc_addr=grpc_addr, front_door=free(), admin_addr=free(),
                                       metrics_addr=free(), base_id=stack_module.free_port(), auth=dev_keys,
                                       retraining_workers=1)
    workers = Workers({}, folder, running.processes[2:])
    retraining = Retraining(running, workers)
    try:
        # What start_stack gives its workers, for the ones started here.
        workers.env = {**stack_module.mesh_auth_env(dev_keys), **env, "MESH_GRPC_ADDR": grpc_addr,
                       "MESH_METRICS_ADDR": running.metrics_addr, "PIPELINE_RETRAINING_REGISTRY_ADDR": grpc_addr}
        yield retraining
    finally:
        try:
            workers.stop_all()
            retraining.delete_registered_versions()
        finally:
            running.stop()


@pytest.fixture(autouse=True)
def settled(retraining):
    retraining.settle()


@pytest.fixture(scope="module")
def mlflow(mlflow_uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(mlflow_uri)


def mlflow_runs_of(mlflow, run_id: str) -> list:
    experiment = mlflow.get_experiment_by_name(f"retraining/{MODEL}")
    if experiment is None:
        return []
    return mlflow.search_runs([experiment.experiment_id], filter_string=f"tags.`retraining.run_id` = '{run_id}'",
                              order_by=["attributes.start_time ASC"])


# ----- the tests -------------------------------------------------------------------------------

def test_a_triggered_run_is_trained_logged_and_registered_in_staging(retraining, mlflow):
    (worker,) = retraining.workers.exactly(1)
    asked = time.monotonic()
    answer = retraining.trigger(HAPPY, reason="e2e")
    assert time.monotonic() - asked < 5.0  # answered at once: training happens later, in a worker
    run_id, queued = answer["runId"], answer["run"]
    assert (queued["runId"], queued["state"], queued["modelName"], queued["reason"], answer["duplicate"]) == (
        run_id, QUEUED, MODEL, "e2e", False)
    assert queued["trigger"] == "RUN_TRIGGER_MANUAL" and queued["attempt"] == 0
    # The parameters as given, completed with the trainer's defaults.
    assert queued["parameters"]["epochs"] == HAPPY["epochs"] and queued["parameters"]["max_rows"] == HAPPY["max_rows"]
    assert queued["parameters"]["hidden"] == [64, 32] and queued["parameters"]["holdout_fraction"] == 0.2

    run = retraining.wait_ended(run_id)
    print(f"succeeded {time.monotonic() - asked:.2f} s after the trigger: {run.get('metrics')}")
    assert run["state"] == SUCCEEDED, run
    assert (run["attempt"], run["progress"], run["stage"], run.get("error")) == (1, 1, "succeeded", None)
    assert run["maxAttempts"] >= 1 and not run["cancelRequested"]
    assert pid_of(run["workerId"]) == worker.pid
    assert stamp(run["createTime"]) <= stamp(run["startTime"]) <= stamp(run["heartbeatTime"]) <= stamp(run["endTime"])

    # The trainer's held-out metrics: it learnt, and beats ranking by popularity alone.
    metrics = run["metrics"]
    assert metrics["holdout_auc"] > 0.5 and metrics["holdout_auc"] > metrics["baseline_auc"], metrics
    assert metrics["train_rows"] + metrics["holdout_rows"] == HAPPY["max_rows"] and metrics["rows_dropped_null"] == 0
    assert (metrics["serving_users"], metrics["serving_items"]) == (SIZES["users"], SIZES["items"])

    # MLflow holds the run: finished, tagged with the retraining run, with the same metrics.
    assert run["mlflowRunId"]
    logged = mlflow.get_run(run["mlflowRunId"])
    assert logged.info.status == "FINISHED"
    assert (logged.data.tags["retraining.run_id"], logged.data.tags["retraining.attempt"]) == (run_id, "1")
    assert logged.data.metrics == pytest.approx(metrics)
    assert logged.data.params["epochs"] == "2" and logged.data.params["max_rows"] == "20000"
    assert [r.info.run_id for r in mlflow_runs_of(mlflow, run_id)] == [run["mlflowRunId"]]

    # The Registry has the new version, in Staging, with the run's metrics and its id.
    assert run["registeredVersion"]
    version = retraining.version(run["registeredVersion"])
    assert (version["modelName"], version["version"], version["stage"]) == (
        MODEL, run["registeredVersion"], "STAGE_STAGING")
    assert version["metrics"] == pytest.approx(metrics)
    assert version["tags"]["retraining.run_id"] == run_id
    assert version["sourceRunId"] == run["mlflowRunId"]
    assert version["artifactFormat"] == "ARTIFACT_FORMAT_TORCHSERVE_MAR"
    assert [v["version"] for v in retraining.versions_of_run(run_id)] == [run["registeredVersion"]]

    # Listed, newest first; and an ended run cannot be cancelled.
    listed = retraining.rest("GET", f"{RUNS}?modelName={MODEL}&pageSize=10")
    assert listed.status == 200, listed.body
    assert listed.json()["runs"][0]["runId"] == run_id and listed.json()["runs"][0]["state"] == SUCCEEDED
    ended = retraining.rest("POST", CANCEL.format(run_id), {})
    assert ended.status == 400 and reason_of(ended.json()) == "RUN_ALREADY_ENDED", ended.body


def test_a_worker_killed_mid_run_loses_it_and_a_fresh_worker_finishes_it(retraining, mlflow):
    (victim,) = retraining.workers.exactly(1)  # the only worker: attempt 2 can only be the fresh one's
    run_id = retraining.trigger(SLOW, reason="e2e: worker killed")["runId"]
    running = retraining.wait_for(
        run_id, lambda run: run["state"] == RUNNING and run["stage"] == "training"
        and stamp(run.get("heartbeatTime")) > stamp(run.get("startTime")), RUN_TIMEOUT, "training with a heartbeat")
    assert running["attempt"] == 1 and pid_of(running["workerId"]) == victim.pid

    last_heartbeat = retraining.status(run_id)["heartbeatTime"]  # the worker may beat once more before dying
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    killed_at = time.monotonic()
    fresh = retraining.workers.start()

    # Taken back by the heartbeat bound (the mesh's sweeper, or the fresh worker's): queued again,
    # or already claimed as attempt 2; not before the bound passed since a heartbeat seen.
    taken_back = retraining.wait_for(
        run_id, lambda run: run["state"] == QUEUED or run["attempt"] >= 2,
        LOST_SECONDS + TAKEBACK_MARGIN_SECONDS, "taken back from the killed worker")
    took = time.monotonic() - killed_at
    silent = (datetime.now(timezone.utc).replace(tzinfo=None) - stamp(last_heartbeat)).total_seconds()
    print(f"taken back {took:.2f} s after the kill, {silent:.2f} s after a heartbeat seen: "
          f"{taken_back['state']}, attempt {taken_back['attempt']}")
    assert silent >= LOST_SECONDS - 0.2, f"taken back {silent:.2f} s after a heartbeat: before the bound"
    if taken_back["state"] == QUEUED:
        assert taken_back["attempt"] == 1 and reason_of(taken_back["error"]) == "WORKER_LOST", taken_back
        assert str(victim.pid) in taken_back["error"]["message"]

    run = retraining.wait_ended(run_id)
    assert run["state"] == SUCCEEDED, run
    assert (run["attempt"], run["progress"], run.get("error")) == (2, 1, None)
    assert pid_of(run["workerId"]) == fresh.pid
    assert run["registeredVersion"] and run["metrics"]["holdout_auc"] > run["metrics"]["baseline_auc"]
    assert retraining.version(run["registeredVersion"])["tags"]["retraining.run_id"] == run_id
    # The killed attempt never reached publishing: one MLflow run, attempt 2's.
    (logged,) = mlflow_runs_of(mlflow, run_id)
    assert (logged.info.run_id, logged.info.status, logged.data.tags["retraining.attempt"]) == (
        run["mlflowRunId"], "FINISHED", "2")
    claims = retraining.workers.claims()[run_id]
    assert sorted((attempt, pid_of(worker_id)) for worker_id, attempt, _ in claims) == [
        (1, victim.pid), (2, fresh.pid)]


def test_two_workers_never_run_one_run(retraining, mlflow):
    live = retraining.workers.exactly(2)
    run_ids = [retraining.trigger(FAST, reason=f"e2e: concurrent {n}")["runId"] for n in range(4)]
    deadline = time.monotonic() + RUN_TIMEOUT
    runs = {run_id: retraining.wait_ended(run_id, max(1.0, deadline - time.monotonic())) for run_id in run_ids}

    for run_id, run in runs.items():
        assert (run["state"], run["attempt"], run["progress"]) == (SUCCEEDED, 1, 1), run
        assert pid_of(run["workerId"]) in {proc.pid for proc in live}
    assert len({run["workerId"] for run in runs.values()}) == 2  # both took some: they really ran side by side
    assert len({run["registeredVersion"] for run in runs.values()}) == len(run_ids)

    # Each run was claimed once, by one worker: one claim in all the workers' logs, one MLflow run.
    claims = retraining.workers.claims()
    for run_id, run in runs.items():
        assert [(worker_id, attempt) for worker_id, attempt, _ in claims[run_id]] == [(run["workerId"], 1)]
        (logged,) = mlflow_runs_of(mlflow, run_id)
        assert (logged.info.run_id, logged.data.tags["retraining.attempt"]) == (run["mlflowRunId"], "1")
        assert [v["version"] for v in retraining.versions_of_run(run_id)] == [run["registeredVersion"]]


def test_a_running_run_cancelled_through_rest_ends_cancelled_and_registers_nothing(retraining, mlflow):
    retraining.workers.exactly(1)
    run_id = retraining.trigger(SLOW, reason="e2e: cancelled")["runId"]
    retraining.wait_for(run_id, lambda run: run["state"] == RUNNING and run["stage"] == "training",
                        RUN_TIMEOUT, "training")

    asked = time.monotonic()
    reply = retraining.rest("POST", CANCEL.format(run_id), {})
    assert reply.status == 200, reply.body
    answer = reply.json()["run"]
    assert answer["runId"] == run_id and answer["cancelRequested"] is True
    assert answer["state"] in (RUNNING, CANCELLED)  # stopped at the trainer's next step

    run = retraining.wait_ended(run_id, 30.0)
    took = time.monotonic() - asked
    print(f"cancelled {took:.2f} s after the call, at progress {run['progress']}")
    assert run["state"] == CANCELLED, run
    assert took < 10.0, f"cancelled {took:.1f} s after the call"
    assert (run["registeredVersion"], run["mlflowRunId"], run["attempt"], run.get("error")) == ("", "", 1, None)
    assert run["stage"] == "cancelled" and run["progress"] < 0.85 and run["endTime"]
    assert mlflow_runs_of(mlflow, run_id) == []
    assert retraining.versions_of_run(run_id) == []
    again = retraining.rest("POST", CANCEL.format(run_id), {})  # cancelling a cancelled run changes nothing
    assert again.status == 200 and again.json()["run"]["state"] == CANCELLED, again.body


def test_bad_triggers_are_refused_through_rest_and_queue_nothing(retraining):
    before = retraining.rest("GET", f"{RUNS}?pageSize=1000")
    assert before.status == 200, before.body

    unknown = retraining.rest("POST", TRIGGER, {"modelName": "no-such-model", "parameters": {"epochs": 2}})
    assert unknown.status == 404, unknown.body
    assert unknown.json()["code"] == 5 and reason_of(unknown.json()) == "NO_TRAINER_FOR_MODEL"
    assert "no-such-model" in unknown.json()["message"]

    for parameters, field in [({"epochs": 0}, "parameters.epochs"), ({"max_rows": 10}, "parameters.max_rows"),
                              ({"learning_rate": "fast"}, "parameters.learning_rate"),
                              ({"hidden": [64, 10_000]}, "parameters.hidden"),
                              ({"colour": "red"}, "parameters.colour")]:
        bad = retraining.rest("POST", TRIGGER, {"modelName": MODEL, "parameters": parameters})
        assert bad.status == 400, (parameters, bad.body)
        error = bad.json()
        assert error["code"] == 3 and error["details"][0]["metadata"]["field"] == field, (parameters, error)
        assert error["message"].startswith(field), (parameters, error)

    missing = retraining.rest("GET", STATUS.format(uuid.uuid4()))
    assert missing.status == 404 and reason_of(missing.json()) == "RUN_NOT_FOUND", missing.body
    malformed = retraining.rest("GET", STATUS.format("run-1"))
    assert malformed.status == 400 and malformed.json()["details"][0]["metadata"]["field"] == "run_id", malformed.body

    after = retraining.rest("GET", f"{RUNS}?pageSize=1000")
    assert [run["runId"] for run in after.json()["runs"]] == [run["runId"] for run in before.json()["runs"]]

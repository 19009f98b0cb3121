"""The model monitor: metric ingestion (in-process and through gRPC) and alert-to-claim latency.

The issue's targets: 50,000 values/s in one server process for batches of 10,000 values
(BatchRecordMetrics), and under 2 s from an alert firing to its retraining run being claimed by a
worker. Everything runs in a PostgreSQL database of its own (created here, migrated to the
pipeline's schema, dropped at the end, also on failure), so nothing else is touched.

Ingestion: subjects alternating per repetition, each sending --batches batches of --batch-size
values (values/s of the whole send, medians over repetitions):

  record          PostgresMetricStore.record in this process, of values without event ids:
                  MetricValue to rows, binary COPY into pipeline_metric_values (its indexes), one
                  transaction per batch; --in-flight batches at a time
  copy            the floor: asyncpg copy_records_to_table of the same rows, already tuples, into
                  a plain table of the same columns without any index
  record_dedupe   record of values each with a new event id: COPY into the session's staging
                  table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING (the unique event index)
  servicer        the server's work without gRPC, in this process: the serialised requests of grpc@K
                  parsed, then the servicer's BatchRecordMetrics (values to dicts, the Monitor's checks,
                  MetricValues, the store); --in-flight at a time (for the record: where the time goes)
  record@K        record as above with K batches in flight (for each K of --grpc-in-flight that is
                  not --in-flight): the in-process baseline of grpc@K
  grpc@K          BatchRecordMetrics over grpc.aio, K callers at once (--grpc-in-flight, default 1
                  and 4), into a mesh server hosting only the pipeline service (its evaluator and
                  schedulers off), requests built and serialised once (raw bytes in, the reply
                  checked: every value applied); with the server's CPU per value (/proc)

Values: 4 models x 3 metrics x 2 versions, times increasing, half of them with two labels (in the
past: the service refuses values stamped in the future).

Alert to claim: a mesh server hosting the pipeline and the Registry, its evaluator every
--evaluation-seconds, and one retraining worker process (`worker_main`) polling every
PIPELINE_RETRAINING_POLL_SECONDS (its default, 1 s). Per repetition (after one uncounted
warm-up): a threshold rule (mean > 0.5 over 2 s, trigger_retraining, recommendation-model, a
metric of its own) is created, a random pause of 0 to one poll period (so the run is queued at a
random phase of the worker's polling, not locked to the previous repetition's end), one value of
1.0 recorded, ListAlerts polled for the alert's retraining_run_id, GetRetrainingStatus polled
until the run's start_time is set; the figure is run.start_time - alert.fire_time (both server
timestamps, one host). The run is then cancelled, followed until it has ended (a model has one run
from alerts queued or running at a time), and the rule deleted. Baseline: the worker's poll
period. MLflow and S3 point at closed loopback ports: the worker never gets to publish (the demo
trainer finds no demo data in this database, or is cancelled first).

    python bench/bench_monitoring.py [--quick] [--reps N] [--batches N] [--batch-size N] [--in-flight N]
                                     [--grpc-in-flight 1,4] [--alert-reps N] [--evaluation-seconds S]
                                     [--skip ingestion|alerts]
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import grpc

sys.path.insert(0, str(Path(__file__).parent))
import _harness as h  # noqa: E402

from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb  # noqa: E402

from ml_serving_server.services.pipeline.domain.monitor import Monitor  # noqa: E402
from ml_serving_server.services.pipeline.domain.monitoring import MetricValue  # noqa: E402
from ml_serving_server.services.pipeline.monitoring_rpcs import MonitoringRpcs  # noqa: E402
from ml_serving_server.services.pipeline.postgres_monitoring import PostgresMetricStore  # noqa: E402
from ml_serving_server.services.pipeline.postgres_monitoring import _value_row  # noqa: E402
from ml_serving_server.services.pipeline.postgres_runs import PostgresRunStore  # noqa: E402
from ml_serving_server.services.pipeline.settings import PipelineSettings  # noqa: E402
from ml_serving_tools import devservices, stack  # noqa: E402
from ml_serving_tools.paths import STATE_DIR  # noqa: E402

TARGET = 50_000.0  # values/s
LATENCY_TARGET_S = 2.0  # alert fired -> run claimed
FLOOR_TABLE = "bench_metric_values_floor"
T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
PIPELINE = "/mnbara.mlserving.pipeline.v1.PipelineService/"
MODEL = "recommendation-model"  # the demo trainer's model (PIPELINE_TRAINERS' default)
ENDED = {pb.RUN_STATE_SUCCEEDED, pb.RUN_STATE_FAILED, pb.RUN_STATE_CANCELLED}
WORKER_READY_TIMEOUT = 90.0  # a worker process from its start to its first poll (imports MLflow)
RUN_END_TIMEOUT = 60.0  # a cancelled run until it has ended (the trainer stops at its next step)


def _default(field: str):
    return PipelineSettings.model_fields[field].default


def batches(count: int, size: int, keyed: bool, start: int) -> list[list[MetricValue]]:
    out = []
    for b in range(count):
        batch = []
        for i in range(size):
            n = start + b * size + i
            labels = {"segment": f"s{n % 5}", "region": "eu"} if n % 2 else {}
            batch.append(MetricValue(f"model-{n % 4}", ("accuracy", "latency_ms", "score")[n % 3], (n % 1000) / 7,
                                     T0 + timedelta(milliseconds=n), str(1 + n % 2), labels,
                                     uuid.uuid4().hex if keyed else ""))
        out.append(batch)
    return out


def grpc_requests(count: int, size: int) -> list[bytes]:
    """The same shape of values as `batches` (no event ids), as serialised BatchRecordMetricsRequests,
    stamped in the last hour (the service refuses values more than 5 minutes in the future)."""
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    out = []
    for b in range(count):
        request = pb.BatchRecordMetricsRequest()
        for i in range(size):
            n = b * size + i
            item = request.metrics.add(model_name=f"model-{n % 4}",
                                       metric_name=("accuracy", "latency_ms", "score")[n % 3],
                                       value=(n % 1000) / 7, model_version=str(1 + n % 2))
            item.time.FromDatetime(start + timedelta(milliseconds=n))
            if n % 2:
                item.labels["segment"] = f"s{n % 5}"
                item.labels["region"] = "eu"
        out.append(request.SerializeToString())
    return out


async def timed(send, items: list, in_flight: int) -> float:
    """Sends every item, `in_flight` at a time; seconds taken."""
    queue = list(reversed(items))

    async def worker():
        while queue:
            await send(queue.pop())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - started


# ----- ingestion -----

class _Servicer(MonitoringRpcs):
    """The servicer's monitoring RPCs over a Monitor of the metric store alone (recording uses nothing else)."""

    def __init__(self, monitor: Monitor):
        self._monitor = monitor


class Ingestion:
    """Every subject returns (values per second, CPU microseconds per value of the process doing the
    work: this one for the in-process subjects, the mesh server's for gRPC)."""

    def __init__(self, pool: asyncpg.Pool, args):
        self.pool, self.args = pool, args
        self.store = PostgresMetricStore(pool)
        self.servicer = _Servicer(Monitor(self.store, None, None, None))
        self.sent = 0  # values made so far: keeps times increasing across repetitions
        self.server_pid = 0
        self.channel = None
        self.requests: list[bytes] = []

    def _batches(self, keyed: bool) -> list[list[MetricValue]]:
        made = batches(self.args.batches, self.args.batch_size, keyed, self.sent)
        self.sent += self.args.batches * self.args.batch_size
        return made

    async def record(self, keyed: bool, in_flight: int | None = None) -> tuple[float, float]:
        made = self._batches(keyed)

        async def send(batch):
            new, duplicates = await self.store.record(batch)
            assert (new, duplicates) == (len(batch), 0), (new, duplicates)

        values = sum(map(len, made))
        cpu0 = time.process_time()
        seconds = await timed(send, made, in_flight or self.args.in_flight)
        return values / seconds, (time.process_time() - cpu0) / values * 1e6

    async def copy(self) -> tuple[float, float]:
        rows = [[_value_row(v) for v in batch] for batch in self._batches(False)]

        async def send(batch):
            async with self.pool.acquire() as conn:
                await conn.copy_records_to_table(FLOOR_TABLE, records=batch)

        values = sum(map(len, rows))
        cpu0 = time.process_time()
        seconds = await timed(send, rows, self.args.in_flight)
        return values / seconds, (time.process_time() - cpu0) / values * 1e6

    async def servicer_path(self) -> tuple[float, float]:
        """The server's work without gRPC: the same serialised requests parsed, then the servicer's
        BatchRecordMetrics (values to dicts, Monitor's checks, MetricValues, the store), in this process."""
        size = self.args.batch_size

        async def send(request: bytes):
            reply = await self.servicer.BatchRecordMetrics(pb.BatchRecordMetricsRequest.FromString(request), None)
            assert (reply.applied_count, reply.duplicate_count) == (size, 0), reply
            reply.SerializeToString()

        values = size * len(self.requests)
        cpu0 = time.process_time()
        seconds = await timed(send, self.requests, self.args.in_flight)
        return values / seconds, (time.process_time() - cpu0) / values * 1e6

    async def open_grpc(self, addr: str, server_pid: int) -> None:
        self.server_pid = server_pid
        self.channel = grpc.aio.insecure_channel(addr, options=[("grpc.max_send_message_length", -1)])
        await asyncio.wait_for(self.channel.channel_ready(), 10)
        self.call = self.channel.unary_unary(PIPELINE + "BatchRecordMetrics", request_serializer=None,
                                             response_deserializer=None)

    async def grpc(self, in_flight: int) -> tuple[float, float]:
        size = self.args.batch_size

        async def send(request: bytes):
            reply = pb.BatchRecordMetricsResponse.FromString(await self.call(request, timeout=60))
            assert (reply.applied_count, reply.duplicate_count) == (size, 0), reply

        values = size * len(self.requests)
        cpu0 = h.cpu_seconds(self.server_pid)
        seconds = await timed(send, self.requests, in_flight)
        return values / seconds, (h.cpu_seconds(self.server_pid) - cpu0) / values * 1e6


async def open_pool(url: str) -> asyncpg.Pool:
    runs = await PostgresRunStore.connect(url, timeout_seconds=60)  # migrates: pipeline_metric_values
    await runs._pool.execute(f"""CREATE TABLE {FLOOR_TABLE} AS SELECT model_name, metric_name, model_version, time,
                                     value, labels, event_id FROM pipeline_metric_values LIMIT 0""")
    return runs._pool


def ingestion(url: str, args) -> dict[str, list[tuple[float, float]]]:
    loop = asyncio.new_event_loop()
    pool = loop.run_until_complete(open_pool(url))  # migrated before the server starts: no race
    bench = Ingestion(pool, args)
    try:
        h.progress(f"building {args.batches} BatchRecordMetricsRequests of {args.batch_size} values")
        bench.requests = grpc_requests(args.batches, args.batch_size)
        h.progress(f"  {sum(map(len, bench.requests)) / len(bench.requests) / 1e6:.2f} MB each")
        env = {"DATABASE_URL": url, "PIPELINE_MONITOR_ENABLED": "false",
               "PIPELINE_MATERIALIZATION_SCHEDULER_ENABLED": "false",
               "PIPELINE_RETRAINING_SCHEDULER_ENABLED": "false"}
        h.progress("starting a mesh server hosting the pipeline service")
        with h.Mesh("monitoring", services="pipeline", access_log=args.access_log == "on",
                    keep_logs=args.keep_logs, env=env) as mesh:
            loop.run_until_complete(bench.open_grpc(mesh.grpc_addr, mesh.pid))
            try:
                widest = max([args.in_flight, *args.grpc_in_flight])
                # Warm-up: connections (both pools), prepared statements, staging tables.
                loop.run_until_complete(bench.record(False, widest))
                loop.run_until_complete(bench.record(True))
                loop.run_until_complete(bench.grpc(widest))
                subjects = {"record": lambda: bench.record(False), "copy": bench.copy,
                            "record_dedupe": lambda: bench.record(True), "servicer": bench.servicer_path}
                for k in args.grpc_in_flight:
                    if k != args.in_flight:
                        subjects[f"record@{k}"] = lambda k=k: bench.record(False, k)
                    subjects[f"grpc@{k}"] = lambda k=k: bench.grpc(k)
                h.progress(f"{args.batches} batches of {args.batch_size} values per subject x {h.reps_of(args)} "
                           f"repetitions: {', '.join(subjects)}")
                return h.alternating(h.reps_of(args), {name: (lambda f=f: loop.run_until_complete(f()))
                                                       for name, f in subjects.items()})
            finally:
                loop.run_until_complete(bench.channel.close())
    finally:
        loop.run_until_complete(pool.close())
        loop.close()


def report_ingestion(runs: dict[str, list[tuple[float, float]]], args) -> None:
    rate = {name: [r for r, _ in values] for name, values in runs.items()}
    cpu = {name: [c for _, c in values] for name, values in runs.items()}
    reps = len(rate["record"])

    def baseline(k: int) -> str:
        return "record" if k == args.in_flight else f"record@{k}"

    h.result(f"# bench_monitoring ingestion: {args.batches} batches of {args.batch_size} values per subject, "
             f"{reps} reps; in-process PostgresMetricStore.record ({args.in_flight} in flight) and gRPC "
             f"BatchRecordMetrics "
             f"({', '.join(map(str, args.grpc_in_flight))} in flight) into one mesh server (pipeline only, "
             f"access log {args.access_log}, auth off)")
    for i in range(reps):
        h.result(f"#   rep {i + 1}: values/s: " + ", ".join(f"{name} {h.fmt(rate[name][i])}" for name in rate))
    for name, what in (("record", "record, no event ids"), ("record_dedupe", "record, event ids (dedupe)")):
        h.result(h.ratio_line(what, rate[name], rate["copy"], "values/s", "plain COPY (no indexes)",
                              higher_is_better=True))
        median = h.median(rate[name])
        h.result(f"{what}: {h.fmt(median)} values/s (range {h.fmt(min(rate[name]))}-{h.fmt(max(rate[name]))}) "
                 f"[target >= {TARGET:,.0f}/s: {'met' if median >= TARGET else 'MISSED'}] (in-process, not gRPC)")
    for k in args.grpc_in_flight:
        name, base = f"grpc@{k}", baseline(k)
        h.result(h.ratio_line(f"BatchRecordMetrics gRPC, {k} in flight", rate[name], rate[base], "values/s",
                              f"in-process record ({k} in flight)", higher_is_better=True))
        h.result(h.ratio_line(f"BatchRecordMetrics gRPC, {k} in flight", rate[name], rate["copy"], "values/s",
                              "plain COPY (no indexes)", higher_is_better=True))
        median = h.median(rate[name])
        h.result(f"BatchRecordMetrics gRPC, {k} in flight: {h.fmt(median)} values/s "
                 f"(range {h.fmt(min(rate[name]))}-{h.fmt(max(rate[name]))}), server cpu "
                 f"{h.fmt(h.median(cpu[name]))} us/value [target >= {TARGET:,.0f}/s: "
                 f"{'met' if median >= TARGET else 'MISSED'}]")
    h.result("# for the record: where the time goes; CPU per value of the process doing the work (the server's "
             "for gRPC, this one's in-process)")
    h.result("# " + h.ratio_line(f"servicer path in-process ({args.in_flight} in flight)", rate["servicer"],
                                 rate["record"], "values/s", "in-process record", higher_is_better=True))
    for k in args.grpc_in_flight:
        h.result("# " + h.ratio_line(f"cpu/value, gRPC server ({k} in flight)", cpu[f"grpc@{k}"], cpu[baseline(k)],
                                     "us", "in-process record"))
        h.result("# " + h.ratio_line(f"cpu/value, gRPC server ({k} in flight)", cpu[f"grpc@{k}"], cpu["servicer"],
                                     "us", "servicer path in-process"))
    h.result("# " + h.ratio_line("cpu/value, servicer path in-process", cpu["servicer"], cpu["record"], "us",
                                 "in-process record"))
    h.result("# " + h.ratio_line("cpu/value, in-process record", cpu["record"], cpu["copy"], "us",
                                 "plain COPY (client)"))


# ----- alert to claim -----

def log_messages(path: Path) -> list[str]:
    """The `msg` of every JSON line of a process's log."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("msg"), str):
            out.append(entry["msg"])
    return out


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def wait_worker_ready(proc, log: Path, timeout: float) -> float:
    """Until the worker logs that it is set up ("retraining worker <id>: models ..."); seconds taken."""
    started = time.monotonic()
    while not any(m.startswith("retraining worker ") and ": models " in m for m in log_messages(log)):
        if proc.poll() is not None:
            raise RuntimeError(f"the retraining worker exited ({proc.returncode}):\n{tail(log)}")
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"the retraining worker was not ready in {timeout:.0f} s:\n{tail(log)}")
        time.sleep(0.1)
    return time.monotonic() - started


def _seconds(later, earlier) -> float:
    return (later.ToNanoseconds() - earlier.ToNanoseconds()) / 1e9


class AlertToClaim:
    def __init__(self, channel: grpc.Channel, poll_s: float, evaluation_s: float, worker_log: Path,
                 mesh_log: Path):
        def call(name: str, response):
            return channel.unary_unary(PIPELINE + name, request_serializer=lambda m: m.SerializeToString(),
                                       response_deserializer=response.FromString)

        self.create = call("CreateAlertRule", pb.CreateAlertRuleResponse)
        self.delete = call("DeleteAlertRule", pb.DeleteAlertRuleResponse)
        self.record = call("RecordMetric", pb.RecordMetricResponse)
        self.alerts = call("ListAlerts", pb.ListAlertsResponse)
        self.status = call("GetRetrainingStatus", pb.GetRetrainingStatusResponse)
        self.cancel = call("CancelRetrainingRun", pb.CancelRetrainingRunResponse)
        self.poll_s, self.evaluation_s = poll_s, evaluation_s
        self.worker_log, self.mesh_log = worker_log, mesh_log
        self.tag = uuid.uuid4().hex[:8]
        self.count = 0
        self.rng = random.Random()

    def _until(self, what: str, probe, timeout: float, every: float = 0.01):
        deadline = time.monotonic() + timeout
        while True:
            found = probe()
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: not within {timeout:.1f} s\n--- worker log:\n{tail(self.worker_log)}"
                                   f"\n--- mesh log:\n{tail(self.mesh_log)}")
            time.sleep(every)

    def _alert(self, rule_id: str):
        reply = self.alerts(pb.ListAlertsRequest(rule_id=rule_id), timeout=10)
        return next((a for a in reply.alerts if a.retraining_run_id), None)

    def _run(self, run_id: str, ready):
        run = self.status(pb.GetRetrainingStatusRequest(run_id=run_id), timeout=10).run
        return run if ready(run) else None

    def once(self) -> dict:
        self.count += 1
        name = f"bench-{self.tag}-{self.count}"
        rule = pb.AlertRule(name=name, description="bench_monitoring.py: alert to claim", model_name=MODEL,
                            metric_name=f"bench_metric_{self.tag}_{self.count}",
                            threshold=pb.ThresholdCondition(comparison=pb.COMPARISON_GREATER_THAN, threshold=0.5),
                            aggregation=pb.AGGREGATION_MEAN, trigger_retraining=True, enabled=True)
        rule.window.FromTimedelta(timedelta(seconds=2))
        rule_id = self.create(pb.CreateAlertRuleRequest(rule=rule), timeout=10).rule.rule_id
        run_id, run = "", None
        try:
            time.sleep(self.rng.uniform(0, self.poll_s))  # a random phase against the worker's polling
            recorded = time.time()
            self.record(pb.RecordMetricRequest(model_name=MODEL, metric_name=rule.metric_name, value=1.0),
                        timeout=10)
            alert = self._until("the alert with its retraining run", lambda: self._alert(rule_id),
                                5 + 20 * self.evaluation_s)
            run_id = alert.retraining_run_id
            run = self._until("the run claimed", lambda: self._run(run_id, lambda r: r.HasField("start_time")),
                              10 + 10 * self.poll_s)
            claimed = {"latency": _seconds(run.start_time, alert.fire_time),
                       "queued": _seconds(run.create_time, alert.fire_time),
                       "waited": _seconds(run.start_time, run.create_time),
                       "record_to_claim": run.start_time.ToNanoseconds() / 1e9 - recorded,
                       "attempt": run.attempt}
            try:
                self.cancel(pb.CancelRetrainingRunRequest(run_id=run_id), timeout=10)
            except grpc.RpcError as error:  # it failed already (no demo data here): nothing to cancel
                if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
                    raise
            run = self._until("the run ended", lambda: self._run(run_id, lambda r: r.state in ENDED),
                              RUN_END_TIMEOUT, every=0.05)
            claimed["end"] = pb.RunState.Name(run.state).removeprefix("RUN_STATE_")
            if run.state == pb.RUN_STATE_FAILED:
                claimed["end"] += f" ({run.error.message[:80]})"
            return claimed
        finally:
            if run_id and (run is None or run.state not in ENDED):
                try:  # failing on the way: leave no run for the worker to train
                    self.cancel(pb.CancelRetrainingRunRequest(run_id=run_id), timeout=10)
                except grpc.RpcError:
                    pass
            self.delete(pb.DeleteAlertRuleRequest(rule_id=rule_id), timeout=10)


def alert_to_claim(url: str, args) -> tuple[list[dict], dict]:
    poll_s = float(_default("retraining_poll_seconds"))
    closed = f"http://127.0.0.1:{stack.free_port()}"  # nothing listens: MLflow and S3 are never reached
    env = {"DATABASE_URL": url, "PIPELINE_MONITOR_EVALUATION_SECONDS": str(args.evaluation_seconds),
           "PIPELINE_TRAINERS": _default("trainers"), "PIPELINE_MATERIALIZATION_SCHEDULER_ENABLED": "false",
           "PIPELINE_RETRAINING_SCHEDULER_ENABLED": "false",
           "MLFLOW_TRACKING_URI": closed, "REGISTRY_MLFLOW_TRACKING_URI": closed,
           "PIPELINE_RETRAINING_MLFLOW_TRACKING_URI": closed, "REGISTRY_S3_ENDPOINT_URL": closed,
           "REGISTRY_S3_ACCESS_KEY_ID": "bench", "REGISTRY_S3_SECRET_ACCESS_KEY": "bench"}
    settings = {"evaluation_s": args.evaluation_seconds, "poll_s": poll_s}
    h.progress("starting a mesh server hosting the pipeline and the Registry")
    with h.Mesh("monitoring-alerts", services="pipeline,registry", access_log=args.access_log == "on",
                keep_logs=args.keep_logs, env=env) as mesh:
        worker_log = mesh.state_dir / "retraining-worker.log"
        worker = stack.start_retraining_worker(
            {**env, "PIPELINE_RETRAINING_REGISTRY_ADDR": mesh.grpc_addr,
             "PIPELINE_RETRAINING_POLL_SECONDS": str(poll_s), "LOG_LEVEL": "INFO"}, worker_log)
        try:
            h.progress(f"retraining worker {worker.pid} starting")
            h.progress(f"  ready in {wait_worker_ready(worker, worker_log, WORKER_READY_TIMEOUT):.1f} s")
            with grpc.insecure_channel(mesh.grpc_addr) as channel:
                bench = AlertToClaim(channel, poll_s, args.evaluation_seconds, worker_log, mesh.state_dir / "mesh.log")
                warm = bench.once()  # the worker's first claim: its trainer loads
                h.progress(f"warm-up: fire to claim {warm['latency']:.3f} s, run {warm['end']}")
                out = h.alternating(args.alert_reps, {"alert_to_claim": bench.once})["alert_to_claim"]
            if worker.poll() is not None:
                raise RuntimeError(f"the retraining worker exited ({worker.returncode}):\n{tail(worker_log)}")
            return out, settings
        finally:
            stack.stop(worker)


def report_alerts(reps: list[dict], settings: dict, args) -> None:
    latency = [r["latency"] for r in reps]
    poll_s = settings["poll_s"]
    h.result(f"# bench_monitoring alert to claim: mesh server (pipeline + registry, auth off), "
             f"PIPELINE_MONITOR_EVALUATION_SECONDS={settings['evaluation_s']:g} (the evaluator's period), one worker "
             f"with PIPELINE_RETRAINING_POLL_SECONDS={poll_s:g} (its default); {len(reps)} reps after 1 warm-up, "
             f"each queued after a random 0-{poll_s:g} s pause")
    for i, r in enumerate(reps):
        h.result(f"#   rep {i + 1}: fire->claim {r['latency']:.3f} s (fire->queued {r['queued']:.3f}, queued->claimed "
                 f"{r['waited']:.3f}), record->claim {r['record_to_claim']:.3f} s, attempt {r['attempt']}, "
                 f"run ended {r['end']}")
    h.result(h.ratio_line("alert fired -> run claimed", latency, [poll_s] * len(latency), "s",
                          "worker poll period"))
    median = h.median(latency)
    h.result(f"alert fired -> run claimed: median {median:.3f} s (range {min(latency):.3f}-{max(latency):.3f}, "
             f"evaluation every {settings['evaluation_s']:g} s, worker poll {poll_s:g} s) "
             f"[target < {LATENCY_TARGET_S:g} s: {'met' if median < LATENCY_TARGET_S else 'MISSED'}]")
    h.result("# for the record: " + h.ratio_line(
        "value recorded -> run claimed (client clock to worker clock, one host)", [r["record_to_claim"] for r in reps],
        [poll_s + settings["evaluation_s"]] * len(reps), "s", "poll period + evaluation period"))


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=None, help="batches per subject and repetition "
                                                            "(default 10, 8 with --quick)")
    p.add_argument("--batch-size", type=int, default=10_000, help="values per batch (default 10,000)")
    p.add_argument("--in-flight", type=int, default=1, help="batches sent at once in-process (default 1)")
    p.add_argument("--grpc-in-flight", default="1,4",
                   help="comma-separated numbers of concurrent BatchRecordMetrics callers (default 1,4)")
    p.add_argument("--alert-reps", type=int, default=None,
                   help="alert-to-claim repetitions (default 10, 3 with --quick)")
    p.add_argument("--evaluation-seconds", type=float, default=0.2,
                   help="PIPELINE_MONITOR_EVALUATION_SECONDS of the alert-to-claim server (default 0.2)")
    p.add_argument("--skip", choices=("ingestion", "alerts"), action="append", default=[],
                   help="leave a part out (repeatable)")
    args = p.parse_args()
    args.batches = args.batches or (8 if args.quick else 10)
    args.grpc_in_flight = sorted({int(k) for k in args.grpc_in_flight.split(",") if k.strip()})
    args.alert_reps = args.alert_reps or (3 if args.quick else 10)
    h._stop_on_sigterm()  # the database is dropped on SIGTERM too
    h.progress("finding or starting PostgreSQL")
    server = devservices.ensure_postgres(STATE_DIR)
    dbname = f"bench_monitoring_{uuid.uuid4().hex[:8]}"
    url = devservices.create_database_if_missing(server, dbname)
    try:
        if "ingestion" not in args.skip:
            report_ingestion(ingestion(url, args), args)
        if "alerts" not in args.skip:
            reps, settings = alert_to_claim(url, args)
            report_alerts(reps, settings, args)
    finally:
        devservices.drop_database(server, dbname)
    return 0


if __name__ == "__main__":
    sys.exit(main())

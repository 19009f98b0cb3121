"""Capacity: what one request of each hot RPC costs Redis, PostgreSQL and CPU, and two replicas against one.

Subjects (the hot RPCs), each served by a mesh server process hosting only its service:

  Select            BanditService/Select (10 arms, decision log on)           mesh: bandit
  SelectContextual  BanditService/SelectContextual (10 arms, context of 10)   mesh: bandit
  Reward            BanditService/Reward by decision id, a unique event id    mesh: bandit
  GetFeatures       PipelineService/GetFeatures, one entity of 5 features     mesh: pipeline
  Predict           RouterService/Predict through a running 50/50 experiment  mesh: router
                    (the demo recommendation-model in TorchServe, batch_size 1)
  Resolve           RegistryService/ResolveModelVersion (model@production)    mesh: registry,inference
  GetModelVersion   RegistryService/GetModelVersion (MLflow and PostgreSQL)   mesh: registry,inference

Where the figures come from:
- Redis: a private redis-server started for this run (nothing else talks to it), `INFO
  commandstats` before and after each measured window: calls per command, divided by the
  requests the server answered in the window. Commands a Lua script runs are counted too
  (Redis counts them), so "scripts" gives the EVALSHA round trips and "commands" everything.
- PostgreSQL: the mesh uses a database of its own (`bench_capacity_<run>`, MLflow too:
  `bench_capacity_mlflow_<run>`); `pg_stat_database` deltas (xact_commit, tup_returned,
  tup_fetched, tup_inserted, tup_updated). A backend reports its counters when it goes idle,
  but at most once a second, and a backend that reported less than a second ago waits up to
  10 s (PGSTAT_IDLE_INTERVAL; pg_stat_force_next_flush() only affects the calling backend),
  so each window ends with a settle wait (--pg-settle, 11 s; 1.5 s with --quick, then the
  PostgreSQL figures may be short).
- Background work (polls, ticks, leases) is measured in an idle window of each mesh group and
  subtracted at its rate times the window's length.
- Throughput and CPU: a separate load process (this script with --load-worker) keeps
  --in-flight requests going over grpc.aio (64 for Predict: TorchServe queues 100, 32 for
  GetModelVersion: MLflow has one worker); completions per second in the window, and the CPU
  seconds of the server, the load process, Redis and (Predict, GetModelVersion) TorchServe or
  MLflow per request, from /proc. One core divided by the server's CPU per request is the
  replica's capacity, which a shared 2-core machine measures better than a saturation rate.
- Time-based costs are amortised: Select and SelectContextual tally pulls in memory and write
  them every 50 ms (BANDIT_PULL_FLUSH_INTERVAL_MS) and re-read a bandit's state at most every
  BANDIT_STATE_MAX_AGE_MS (100 ms), per replica; the router flushes exposures and samples every
  50 ms; the decision log writes every second. The per-request figures are at saturation, where
  that is spread thin; "Select paced" repeats Select at about 200 requests/s to show the
  same per-second cost spread over fewer requests.
- Two replicas: the Select load spread round robin over two server processes (two channels)
  on the same Redis against one process, alternating, with the throughput the CPU model
  predicts: 2 cores / (CPU seconds per request of server + load process + Redis), capped by
  replicas / server CPU per request.

Output: one line per figure, then markdown tables. Everything this run started (Redis, S3,
MLflow, TorchServe, the mesh servers, the load processes) is stopped and its databases dropped.

    python bench/bench_capacity.py [--quick] [--reps N] [--window S] [--only select,features,model]
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import pickle
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import _harness as h

HERE = Path(__file__).resolve()
BANDIT = "/mnbara.mlserving.bandit.v1.BanditService/"
PIPELINE = "/mnbara.mlserving.pipeline.v1.PipelineService/"
REGISTRY = "/mnbara.mlserving.registry.v1.RegistryService/"
INFERENCE = "/mnbara.mlserving.inference.v1.InferenceService/"
ROUTER = "/mnbara.mlserving.router.v1.RouterService/"
PG_FIELDS = ("xact_commit", "tup_returned", "tup_fetched", "tup_inserted", "tup_updated")
SCRIPT_COMMANDS = ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro")
OWN_COMMANDS = ("info", "ping", "hello", "client|setinfo", "client|setname")  # this script's and connections'
TARGET_UTILISATION = 0.6


# ----- the load process -----

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def with_event_id(template: bytes, event_id: str) -> bytes:
    """A serialised RewardRequest plus field 5 (event_id): protobuf accepts fields in any order."""
    raw = event_id.encode()
    return template + b"\x2a" + _varint(len(raw)) + raw


async def _load(spec: dict) -> dict:
    import grpc

    with open(spec["pool_file"], "rb") as f:
        pool: list[bytes] = pickle.load(f)
    tag = spec.get("event_tag")
    channels = [grpc.aio.insecure_channel(t) for t in spec["targets"]]
    calls = [c.unary_unary(spec["method"], request_serializer=None, response_deserializer=None) for c in channels]
    for c in channels:
        await asyncio.wait_for(c.channel_ready(), 10)
    state = {"n": 0, "total": 0, "window": 0, "counting": False, "stop": False, "errors": 0, "first_error": ""}
    size, ways = len(pool), len(calls)

    async def worker() -> None:
        while not state["stop"]:
            i = state["n"]
            state["n"] = i + 1
            request = pool[i % size]
            if tag:
                request = with_event_id(request, f"{tag}-{i}")
            try:
                await calls[i % ways](request, timeout=30)
            except grpc.aio.AioRpcError as exc:
                state["errors"] += 1
                state["first_error"] = state["first_error"] or f"{exc.code().name}: {exc.details()}"
                await asyncio.sleep(0.01)
                continue
            state["total"] += 1
            if state["counting"]:
                state["window"] += 1

    loop = asyncio.get_running_loop()
    tasks = [asyncio.ensure_future(worker()) for _ in range(spec["in_flight"])]
    await asyncio.sleep(spec["warmup"])
    print("start", flush=True)
    cpu0, t0 = time.process_time(), loop.time()
    state["counting"] = True
    await asyncio.sleep(spec["window"])
    state["counting"] = False
    elapsed, cpu = loop.time() - t0, time.process_time() - cpu0
    print("end", flush=True)
    state["stop"] = True
    await asyncio.gather(*tasks)
    for c in channels:
        await c.close()
    return {"total": state["total"], "window": state["window"], "elapsed": elapsed, "cpu": cpu,
            "errors": state["errors"], "first_error": state["first_error"]}


def load_worker_main() -> int:
    spec = json.loads(sys.stdin.readline())
    print(json.dumps(asyncio.run(_load(spec))), flush=True)
    return 0


@dataclass
class LoadResult:
    total: int          # requests answered, warm-up and tail included (the ops window)
    rate: float         # completions per second in the measuring window
    server_cpu: float   # seconds per request, the mesh server(s)
    client_cpu: float   # seconds per request, the load process
    redis_cpu: float    # seconds per request, redis-server
    backend_cpu: float  # seconds per request, TorchServe or MLflow (nan when none)
    errors: int
    busy_cores: float   # the whole machine's busy CPUs during the window (all processes)
    own_cores: float    # of which server + load process + Redis + backend


def run_load(targets: list[str], method: str, pool_file: Path, in_flight: int, warmup: float, window: float,
             server_pids: list[int], redis_pid: int, backend_pids: list[int], event_tag: str | None = None
             ) -> LoadResult:
    spec = {"targets": targets, "method": method, "pool_file": str(pool_file), "in_flight": in_flight,
            "warmup": warmup, "window": window, "event_tag": event_tag}
    proc = subprocess.Popen([sys.executable, str(HERE), "--load-worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        proc.stdin.write(json.dumps(spec) + "\n")
        proc.stdin.flush()
        marks = {}
        for name in ("start", "end"):
            line = proc.stdout.readline().strip()
            if line != name:
                raise RuntimeError(f"load process said {line!r} instead of {name!r}")
            marks[name] = (sum(h.cpu_seconds(p) for p in server_pids), h.cpu_seconds(redis_pid),
                           sum(tree_cpu_seconds(p) for p in backend_pids), machine_busy_seconds())
        out = json.loads(proc.stdout.readline())
        if proc.wait(timeout=60) != 0:
            raise RuntimeError(f"load process exited {proc.returncode}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if out["window"] == 0:
        raise RuntimeError(f"no request completed in the window ({out['errors']} errors: {out['first_error']})")
    if out["errors"] > 0.01 * max(out["total"], 1):
        raise RuntimeError(f"{out['errors']} errors against {out['total']} answers: {out['first_error']}")
    n, seconds = out["window"], out["elapsed"]
    (s0, r0, b0, m0), (s1, r1, b1, m1) = marks["start"], marks["end"]
    own = (s1 - s0) + out["cpu"] + (r1 - r0) + (b1 - b0)
    return LoadResult(out["total"], n / seconds, (s1 - s0) / n, out["cpu"] / n, (r1 - r0) / n,
                      (b1 - b0) / n if backend_pids else float("nan"), out["errors"], (m1 - m0) / seconds,
                      own / seconds)


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used so far (all CPUs; /proc/stat minus idle and iowait)."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of a process and all its descendants (TorchServe: launcher, Java front end, workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    ppid = int(stat.read().rpartition(")")[2].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        try:
            total += h.cpu_seconds(pid)
        except OSError:
            pass
        todo.extend(children.get(pid, []))
    return total


# ----- counters -----

class Counters:
    """Redis commandstats of the private Redis and pg_stat_database of the run's databases."""

    def __init__(self, redis_url: str, admin_dsn: str, databases: list[str]):
        import redis
        self.redis = redis.Redis.from_url(redis_url)
        self.admin_dsn = admin_dsn
        self.databases = databases

    def redis_calls(self) -> dict[str, int]:
        stats = self.redis.info("commandstats")
        return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}

    def pg(self) -> dict[str, dict[str, int]]:
        async def read():
            import asyncpg
            conn = await asyncpg.connect(self.admin_dsn)
            try:
                await conn.execute("SELECT pg_stat_clear_snapshot()")
                rows = await conn.fetch(f"SELECT datname, {', '.join(PG_FIELDS)} FROM pg_stat_database "
                                        "WHERE datname = ANY($1::text[])", self.databases)
                return {r["datname"]: {f: int(r[f]) for f in PG_FIELDS} for r in rows}
            finally:
                await conn.close()
        return asyncio.run(read())

    def snapshot(self) -> tuple[float, dict, dict]:
        return time.monotonic(), self.redis_calls(), self.pg()

    def close(self) -> None:
        self.redis.close()


def delta(before: tuple, after: tuple) -> tuple[float, dict[str, float], dict[str, dict[str, float]]]:
    (t0, r0, p0), (t1, r1, p1) = before, after
    redis = {k: v - r0.get(k, 0) for k, v in r1.items() if k not in OWN_COMMANDS and v - r0.get(k, 0)}
    pg = {db: {f: p1[db][f] - p0.get(db, {}).get(f, 0) for f in PG_FIELDS} for db in p1}
    return t1 - t0, redis, pg


@dataclass
class Ops:
    """Per-request Redis commands and PostgreSQL counters of one window, background subtracted."""
    redis: dict[str, float]
    pg: dict[str, dict[str, float]]

    @property
    def commands(self) -> float:
        return sum(self.redis.values())

    @property
    def scripts(self) -> float:
        return sum(v for k, v in self.redis.items() if k in SCRIPT_COMMANDS)


def per_request(window: tuple, idle_rate: tuple, requests: int) -> Ops:
    seconds, redis, pg = window
    _, idle_redis, idle_pg = idle_rate
    keys = set(redis) | set(idle_redis)
    r = {k: max(0.0, redis.get(k, 0) - idle_redis.get(k, 0) * seconds) / requests for k in keys}
    p = {db: {f: max(0.0, pg[db][f] - idle_pg.get(db, {}).get(f, 0) * seconds) / requests for f in PG_FIELDS}
         for db in pg}
    return Ops({k: v for k, v in r.items() if v >= 0.0005}, p)


def idle_rates(counters: Counters, seconds: float) -> tuple:
    """Background commands and counters per second of the running mesh servers, doing nothing."""
    before = counters.snapshot()
    time.sleep(seconds)
    span, redis, pg = delta(before, counters.snapshot())
    return span, {k: v / span for k, v in redis.items()}, \
        {db: {f: v / span for f, v in fields.items()} for db, fields in pg.items()}


# ----- the subjects -----

@dataclass
class Subject:
    name: str
    method: str
    pool: list[bytes]
    targets: list[str]
    server_pids: list[int]
    in_flight: int
    backend_pids: list[int] = field(default_factory=list)
    rewards: bool = False  # append a unique event id per request
    hosting: str = ""


@dataclass
class Figures:
    ops: list[Ops] = field(default_factory=list)
    loads: list[LoadResult] = field(default_factory=list)


def measure(subject: Subject, counters: Counters, idle: tuple, pool_dir: Path, redis_pid: int, warmup: float,
            window: float, settle: float, tag: str) -> tuple[Ops, LoadResult]:
    pool_file = pool_dir / f"{subject.name}.pool"
    if not pool_file.exists():
        with open(pool_file, "wb") as f:
            pickle.dump(subject.pool, f)
    before = counters.snapshot()
    load = run_load(subject.targets, subject.method, pool_file, subject.in_flight, warmup, window,
                    subject.server_pids, redis_pid, subject.backend_pids, event_tag=tag if subject.rewards else None)
    time.sleep(settle)
    ops = per_request(delta(before, counters.snapshot()), idle, load.total)
    h.progress(f"{subject.name}: {load.rate:.0f} req/s, server {load.server_cpu * 1e6:.0f} us/req, "
               f"{ops.commands:.2f} Redis commands/req, "
               f"{sum(p['xact_commit'] for p in ops.pg.values()):.3f} PG commits/req")
    return ops, load


def paced_select(subject: Subject, counters: Counters, idle: tuple, rate: float, seconds: float, settle: float
                 ) -> Ops:
    """Select at about `rate` per second from this process: the time-based Redis work per request."""
    import grpc
    with grpc.insecure_channel(subject.targets[0]) as channel:
        call = h.raw_unary(channel, subject.method)
        call(subject.pool[0], timeout=10)
        before = counters.snapshot()
        n, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            call(subject.pool[0], timeout=10)
            n += 1
            pause = start + n / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    time.sleep(settle)
    return per_request(delta(before, counters.snapshot()), idle, n)


# ----- the mesh groups: set-up -----

def bandit_subjects(mesh: h.Mesh, rng: random.Random) -> list[Subject]:
    import grpc
    from mnbara.mlserving.bandit.v1 import bandit_pb2 as pb

    with grpc.insecure_channel(mesh.grpc_addr) as channel:
        h.create_bandit(channel, "cap-bandit", 10)
        h.create_bandit(channel, "cap-contextual", 10, context_dimension=10)
        select = h.raw_unary(channel, BANDIT + "Select")
        templates = []
        for _ in range(500):  # decisions to reward, each one many times with unique event ids
            reply = pb.SelectResponse.FromString(select(h.select_request_bytes("cap-bandit"), timeout=10))
            templates.append(pb.RewardRequest(decision_id=reply.decision_id, reward=float(rng.random() < 0.3))
                             .SerializeToString())
    contexts = [pb.SelectContextualRequest(bandit="cap-contextual", user_id=f"user-{i}",
                                           context=[rng.random() for _ in range(10)]).SerializeToString()
                for i in range(200)]
    common = {"targets": [mesh.grpc_addr], "server_pids": [mesh.pid], "hosting": "bandit"}
    return [Subject("Select", BANDIT + "Select", [h.select_request_bytes("cap-bandit")], in_flight=256, **common),
            Subject("SelectContextual", BANDIT + "SelectContextual", contexts, in_flight=256, **common),
            Subject("Reward", BANDIT + "Reward", templates, in_flight=256, rewards=True, **common)]


FEATURES_VIEW = "cap_users"


def features_yaml(table: str) -> str:
    return "\n".join([
        "views:",
        f"  - name: {FEATURES_VIEW}",
        "    description: bench_capacity.py's view",
        "    entity: {name: cap_user, join_key: user_id, key_type: int}",
        "    features:",
        "      - {name: visits, type: int}",
        "      - {name: spend, type: float}",
        "      - {name: country, type: string}",
        "      - {name: premium, type: bool}",
        "      - {name: taste, type: embedding, dimension: 8}",
        "    source:",
        f"      query: SELECT user_id, visits, spend, country, premium, taste, updated_at FROM {table}",
        "      event_time_column: updated_at",
        "    ttl: 7d",
        "    compute_on_miss: true",
    ]) + "\n"


async def create_feature_table(dsn: str, table: str, rows: int) -> None:
    import asyncpg
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"""
            CREATE TABLE {table} (user_id bigint PRIMARY KEY, visits bigint, spend double precision,
                                  country text, premium boolean, taste real[], updated_at timestamptz NOT NULL);
            INSERT INTO {table}
              SELECT g, g % 50, random() * 200, (ARRAY['US','DE','FR','JP'])[1 + g % 4], g % 5 = 0,
                     ARRAY[random(), random(), random(), random(), random(), random(), random(), random()]::real[],
                     now() - interval '1 hour'
              FROM generate_series(1, {rows}) AS g;
            ANALYZE {table};""")
    finally:
        await conn.close()


def features_subjects(mesh: h.Mesh, rows: int, rng: random.Random) -> list[Subject]:
    import grpc
    from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb

    with grpc.insecure_channel(mesh.grpc_addr) as channel:
        reply = channel.unary_unary(PIPELINE + "MaterializeFeatures", request_serializer=None,
                                    response_deserializer=pb.MaterializeFeaturesResponse.FromString)(
            pb.MaterializeFeaturesRequest(feature_views=[FEATURES_VIEW], mode=pb.MATERIALIZATION_MODE_FULL,
                                          wait=True).SerializeToString(), timeout=300)
        (job,) = reply.jobs
        assert job.state == pb.JOB_STATE_SUCCEEDED and job.entities_written == rows, job
        pool = [pb.GetFeaturesRequest(feature_view=FEATURES_VIEW, entity_id=str(rng.randint(1, rows)),
                                      layout=pb.FEATURES_LAYOUT_COLUMNS).SerializeToString() for _ in range(1000)]
        answer = pb.GetFeaturesResponse.FromString(h.raw_unary(channel, PIPELINE + "GetFeatures")(pool[0], timeout=10))
        assert answer.read_through_count == 0 and not answer.online_store_unavailable, answer
    return [Subject("GetFeatures", PIPELINE + "GetFeatures", pool, [mesh.grpc_addr], [mesh.pid], in_flight=256,
                    hosting="pipeline")]


def model_backends(state_dir: Path, dsn: str, mlflow_db: str) -> tuple[dict[str, str], int, int]:
    """Private S3, MLflow (its own database) and TorchServe: (env, MLflow pid, TorchServe pid)."""
    from ml_serving_tools import devservices
    s3 = devservices.ensure_s3(state_dir, force_embedded=True)
    devservices.ensure_buckets(s3, devservices.MODELS_BUCKET, devservices.MLFLOW_BUCKET)
    mlflow = devservices.ensure_mlflow(state_dir, dsn, s3, force_embedded=True, dbname=mlflow_db)
    torchserve = devservices.ensure_torchserve(state_dir, force_embedded=True)
    recorded = devservices.load_state(state_dir)
    env = {**s3.env(), "MLFLOW_TRACKING_URI": mlflow, **torchserve.env(), "INFERENCE_DEPLOYER_ENABLED": "false"}
    return env, recorded["mlflow"].pid, recorded["torchserve"].pid


def model_subjects(registry: h.Mesh, router: h.Mesh, model: str, mlflow_pid: int, torchserve_pid: int
                   ) -> list[Subject]:
    import grpc
    from mnbara.mlserving.inference.v1 import inference_pb2 as ipb
    from mnbara.mlserving.registry.v1 import registry_pb2 as rpb
    from mnbara.mlserving.router.v1 import router_pb2 as pb

    from ml_serving_tools.demo_model import build_demo_models
    from ml_serving_tools.paths import BUILD

    artifact = build_demo_models(BUILD / "demo-models")["v1"].path.read_bytes()

    def call(channel, method, request, response, timeout=60):
        return channel.unary_unary(method, request_serializer=None, response_deserializer=response.FromString)(
            request.SerializeToString(), timeout=timeout)

    with grpc.insecure_channel(registry.grpc_addr) as channel:
        for version in ("1", "2"):
            call(channel, REGISTRY + "CreateModelVersion", rpb.CreateModelVersionRequest(
                model_name=model, artifact=artifact, artifact_file_name="model.mar", create_model_if_missing=True),
                rpb.CreateModelVersionResponse, 120)
            h.progress(f"loading {model} version {version} into TorchServe")
            call(channel, INFERENCE + "LoadModel", ipb.LoadModelRequest(
                model_name=model, version=version, batch_size=1, min_workers=1, wait_until_ready=True),
                ipb.LoadModelResponse, 300)
        for stage in (rpb.STAGE_STAGING, rpb.STAGE_PRODUCTION):
            call(channel, REGISTRY + "TransitionStage", rpb.TransitionStageRequest(
                model_name=model, version="1", to_stage=stage), rpb.TransitionStageResponse)
        resolve = rpb.ResolveModelVersionRequest(model_name=model)
        assert call(channel, REGISTRY + "ResolveModelVersion", resolve,
                    rpb.ResolveModelVersionResponse).model_version.version == "1"
        get_version = rpb.GetModelVersionRequest(model_name=model, version="1")
        call(channel, REGISTRY + "GetModelVersion", get_version, rpb.GetModelVersionResponse)
    payload = json.dumps({"user_id": 123, "top_k": 5}, separators=(",", ":")).encode()
    with grpc.insecure_channel(router.grpc_addr) as channel:
        call(channel, ROUTER + "CreateExperiment", pb.CreateExperimentRequest(experiment=pb.Experiment(
            name=model, variants=[
                pb.Variant(name="control", model_name=model, model_version="1", weight_bps=5000, control=True),
                pb.Variant(name="treatment", model_name=model, model_version="2", weight_bps=5000)],
            metrics=[pb.OutcomeMetric(name="click", kind=pb.OUTCOME_KIND_BINARY)])), pb.CreateExperimentResponse)
        predictions = [pb.PredictRequest(user_id=f"user-{i}", experiment=model, raw_input=payload)
                       .SerializeToString() for i in range(1000)]
        reply = pb.PredictResponse.FromString(h.raw_unary(channel, ROUTER + "Predict")(predictions[0], timeout=30))
        assert reply.assignment.experiment == model and reply.prediction.struct_value["scores"], reply
    registry_common = {"targets": [registry.grpc_addr], "server_pids": [registry.pid], "hosting": "registry,inference"}
    return [
        Subject("Predict", ROUTER + "Predict", predictions, [router.grpc_addr], [router.pid], in_flight=64,
                backend_pids=[torchserve_pid], hosting="router"),
        Subject("Resolve", REGISTRY + "ResolveModelVersion", [resolve.SerializeToString()], in_flight=256,
                **registry_common),
        Subject("GetModelVersion", REGISTRY + "GetModelVersion", [get_version.SerializeToString()], in_flight=32,
                backend_pids=[mlflow_pid], **registry_common),
    ]


def model_clean_up(registry: h.Mesh, router: h.Mesh, model: str) -> None:
    import grpc
    from google.protobuf import duration_pb2
    from mnbara.mlserving.inference.v1 import inference_pb2 as ipb
    from mnbara.mlserving.router.v1 import router_pb2 as pb

    steps = [(router.grpc_addr, ROUTER + "StopExperiment", pb.StopExperimentRequest(name=model))]
    steps += [(registry.grpc_addr, INFERENCE + "UnloadModel", ipb.UnloadModelRequest(
        model_name=model, version=v, drain_timeout=duration_pb2.Duration(seconds=5))) for v in ("1", "2")]
    for addr, method, request in steps:
        with grpc.insecure_channel(addr) as channel:
            try:
                h.raw_unary(channel, method)(request.SerializeToString(), timeout=60)
            except grpc.RpcError as exc:
                h.progress(f"clean-up {method.rsplit('/', 1)[1]}: {exc.code()} {exc.details()}")


# ----- reporting -----

def med(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return h.median(values) if values else float("nan")


def cell(value: float, scale: float = 1.0) -> str:
    return "-" if math.isnan(value) else h.fmt(value * scale)


def report(figures: dict[str, Figures], subjects: dict[str, Subject], paced: list[Ops], replicas: dict, reps: int,
           databases: dict[str, str], args) -> None:
    h.result(f"# bench_capacity: medians of {reps} repetitions, {args.window} s windows after {args.warmup} s warm-up, "
             f"PostgreSQL settle {args.pg_settle} s, access log {args.access_log}, {os.cpu_count()} CPUs")
    rows = {}
    for name, fig in figures.items():
        if not fig.ops:
            continue
        s = subjects[name]
        commands = med([o.commands for o in fig.ops])
        scripts = med([o.scripts for o in fig.ops])
        per_command = {}
        for o in fig.ops:
            for k in o.redis:
                per_command.setdefault(k, [])
        breakdown = ", ".join(f"{k} {h.fmt(med([o.redis.get(k, 0.0) for o in fig.ops]))}"
                              for k in sorted(per_command, key=lambda k: -med([o.redis.get(k, 0.0) for o in fig.ops]))
                              if med([o.redis.get(k, 0.0) for o in fig.ops]) >= 0.001)
        pg = {role: {f: med([o.pg.get(db, {}).get(f, 0.0) for o in fig.ops]) for f in PG_FIELDS}
              for role, db in databases.items()}
        load = {k: med([getattr(l, k) for l in fig.loads]) for k in
                ("rate", "server_cpu", "client_cpu", "redis_cpu", "backend_cpu")}
        rows[name] = (s, commands, scripts, pg, load)
        h.result(f"{name} redis: {h.fmt(commands)} commands/req ({h.fmt(scripts)} scripts; {breakdown or 'none'})")
        for role, fields in pg.items():
            if any(fields.values()) or role == "mesh":
                h.result(f"{name} postgres ({role} db): " + ", ".join(f"{f} {h.fmt(v)}/req" for f, v in fields.items()))
        h.result(f"{name} one replica ({s.hosting}, {s.in_flight} in flight): {h.fmt(load['rate'])} req/s; CPU per "
                 f"request: server {cell(load['server_cpu'], 1e6)} us, load process {cell(load['client_cpu'], 1e6)} us, "
                 f"redis {cell(load['redis_cpu'], 1e6)} us, backend {cell(load['backend_cpu'], 1e6)} us; "
                 f"capacity 1 core / server CPU = {h.fmt(1 / load['server_cpu'])} req/s; machine busy "
                 f"{med([l.busy_cores for l in fig.loads]):.2f} CPUs, this run's processes "
                 f"{med([l.own_cores for l in fig.loads]):.2f}")
    if paced:
        h.result(f"Select paced at ~{args.paced_rate:.0f}/s: {h.fmt(med([o.commands for o in paced]))} Redis "
                 f"commands/req ({', '.join(f'{k} {h.fmt(v)}' for k, v in sorted(paced[0].redis.items()))} in rep 1): "
                 f"the 50 ms pull flush and the {100} ms snapshot re-read are per second, not per request")
    if replicas:
        one, two = replicas["one"], replicas["two"]
        ratios = [b.rate / a.rate for a, b in zip(one, two)]
        h.result(h.ratio_line("Select two replicas", [r.rate for r in two], [r.rate for r in one], "req/s",
                              "one replica", higher_is_better=True))
        total_cpu = med([r.server_cpu + r.client_cpu + r.redis_cpu for r in one])
        server = med([r.server_cpu for r in one])
        cores = os.cpu_count() or 1
        others = med([max(0.0, r.busy_cores - r.own_cores) for r in one + two])
        free = max(0.1, cores - others)
        predicted_one = min(1 / server, free / total_cpu)
        predicted_two = min(2 / server, free / total_cpu)
        h.result(f"Select CPU model: server {h.fmt(server * 1e6)} + load {h.fmt(med([r.client_cpu for r in one]) * 1e6)} "
                 f"+ redis {h.fmt(med([r.redis_cpu for r in one]) * 1e6)} us/req; other processes on the machine used "
                 f"{others:.2f} of its {cores} CPUs during the windows, leaving {free:.2f}; predicted "
                 f"{h.fmt(predicted_one)} req/s with one replica, {h.fmt(predicted_two)} with two "
                 f"({predicted_two / predicted_one:.2f}x); measured {h.fmt(med([r.rate for r in one]))} and "
                 f"{h.fmt(med([r.rate for r in two]))} ({med(ratios):.2f}x); machine busy "
                 f"{med([r.busy_cores for r in one]):.2f} / {med([r.busy_cores for r in two]):.2f} CPUs; server CPU "
                 f"{h.fmt(med([r.server_cpu for r in two]) * 1e6)} us/req with two")
    h.result("")
    h.result("| RPC | Redis commands/req (scripts) | PG commits/req | PG tuples read/req | PG tuples written/req "
             "| MLflow PG commits/req |")
    h.result("|---|---|---|---|---|---|")
    for name, (s, commands, scripts, pg, load) in rows.items():
        mesh, mlflow = pg.get("mesh", {}), pg.get("mlflow", {})
        read = mesh.get("tup_returned", 0) + mesh.get("tup_fetched", 0)
        written = mesh.get("tup_inserted", 0) + mesh.get("tup_updated", 0)
        h.result(f"| {name} | {h.fmt(commands)} ({h.fmt(scripts)}) | {h.fmt(mesh.get('xact_commit', 0))} | "
                 f"{h.fmt(read)} | {h.fmt(written)} | {h.fmt(mlflow.get('xact_commit', 0)) if mlflow else '-'} |")
    h.result("")
    h.result("| RPC | server CPU us/req | one replica req/s at saturation | 1 core / CPU (req/s) "
             "| load process us/req | Redis CPU us/req | backend CPU us/req |")
    h.result("|---|---|---|---|---|---|---|")
    for name, (s, commands, scripts, pg, load) in rows.items():
        h.result(f"| {name} | {cell(load['server_cpu'], 1e6)} | {h.fmt(load['rate'])} | {h.fmt(1 / load['server_cpu'])} "
                 f"| {cell(load['client_cpu'], 1e6)} | {cell(load['redis_cpu'], 1e6)} | {cell(load['backend_cpu'], 1e6)} |")
    h.result("")
    h.result(f"replicas for R req/s = ceil(R x server CPU s/req / {TARGET_UTILISATION}); e.g. "
             + "; ".join(f"{name} 1000/s: {math.ceil(1000 * row[4]['server_cpu'] / TARGET_UTILISATION)}"
                         for name, row in rows.items()))


# ----- main -----

def main() -> int:
    if "--load-worker" in sys.argv:
        return load_worker_main()
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--window", type=float, default=None, help="measuring window in seconds (default 3, 1.5 quick)")
    p.add_argument("--warmup", type=float, default=None, help="load before the window, seconds (default 0.5)")
    p.add_argument("--pg-settle", type=float, default=None,
                   help="wait after each window for PostgreSQL's counters (default 11 s, 1.5 s with --quick)")
    p.add_argument("--idle", type=float, default=None, help="idle window per mesh group (default 12 s, 4 quick)")
    p.add_argument("--paced-rate", type=float, default=200.0)
    p.add_argument("--only", default="bandit,features,model", help="mesh groups: bandit, features, model")
    args = p.parse_args()
    args.reps = args.reps or (1 if args.quick else 3)
    reps = args.reps
    args.window = args.window or (1.5 if args.quick else 3.0)
    args.warmup = args.warmup if args.warmup is not None else (0.3 if args.quick else 0.5)
    args.pg_settle = args.pg_settle if args.pg_settle is not None else (1.5 if args.quick else 11.0)
    idle_seconds = args.idle or (4.0 if args.quick else 12.0)
    groups = [g.strip() for g in args.only.split(",") if g.strip()]

    from ml_serving_tools import devservices
    from ml_serving_tools.paths import STATE_DIR

    h._stop_on_sigterm()
    run = uuid.uuid4().hex[:8]
    state_dir = Path(tempfile.mkdtemp(prefix="bench-capacity-"))
    pool_dir = state_dir / "pools"
    pool_dir.mkdir()
    access_log = args.access_log == "on"
    mesh_db, mlflow_db = f"bench_capacity_{run}", f"bench_capacity_mlflow_{run}"
    created: list[str] = []
    figures: dict[str, Figures] = {}
    subjects: dict[str, Subject] = {}
    paced: list[Ops] = []
    replicas: dict[str, list[LoadResult]] = {}
    rng = random.Random(11)
    admin_dsn = ""
    try:
        h.progress("starting a private Redis; finding PostgreSQL")
        redis_url = devservices.start_embedded_redis(state_dir)
        redis_pid = devservices.load_state(state_dir)["redis"].pid
        h.REDIS_URL = redis_url  # the harness's meshes and key clean-up use it
        dsn = devservices.ensure_postgres(STATE_DIR)
        admin_dsn = devservices.with_dbname(dsn, "postgres")
        devservices.create_database_if_missing(admin_dsn, mesh_db)
        created.append(mesh_db)
        database_url = devservices.with_dbname(dsn, mesh_db)
        counters = Counters(redis_url, admin_dsn, [mesh_db, mlflow_db])

        def run_group(group_subjects: list[Subject], label: str) -> tuple:
            time.sleep(max(args.pg_settle, 1.5))  # the set-up's writes reach the counters first
            h.progress(f"{label}: idle window of {idle_seconds} s (background work, subtracted)")
            idle = idle_rates(counters, idle_seconds)
            for s in group_subjects:
                subjects[s.name] = s
                figures[s.name] = Figures()
            for rep in range(reps):
                order = group_subjects[rep % len(group_subjects):] + group_subjects[:rep % len(group_subjects)]
                for s in order:
                    ops, load = measure(s, counters, idle, pool_dir, redis_pid, args.warmup, args.window,
                                        args.pg_settle, tag=f"r{rep}")
                    figures[s.name].ops.append(ops)
                    figures[s.name].loads.append(load)
                h.progress(f"{label}: repetition {rep + 1}/{reps} done")
            return idle

        if "bandit" in groups:
            env = {"DATABASE_URL": database_url}
            with h.Mesh("capacity", services="bandit", access_log=access_log, keep_logs=args.keep_logs,
                        env=env) as mesh:
                group = bandit_subjects(mesh, rng)
                idle = run_group(group, "bandit")
                select = group[0]
                h.progress(f"Select paced at {args.paced_rate:.0f}/s")
                paced = [paced_select(select, counters, idle, args.paced_rate, args.window, 0.3)
                         for _ in range(reps)]
                with h.Mesh("capacity-2", services="bandit", access_log=access_log, keep_logs=args.keep_logs,
                            env={**env, "MESH_KEY_PREFIX": mesh.prefix}) as second:
                    h.progress("Select on one replica vs two (round robin over two channels)")
                    two = Subject("Select x2", select.method, select.pool, [mesh.grpc_addr, second.grpc_addr],
                                  [mesh.pid, second.pid], in_flight=256)
                    one_file = pool_dir / "Select.pool"
                    replicas = h.alternating(reps, {
                        "one": lambda: run_load(select.targets, select.method, one_file, 256, args.warmup,
                                                args.window, [mesh.pid], redis_pid, []),
                        "two": lambda: run_load(two.targets, two.method, one_file, 256, args.warmup, args.window,
                                                two.server_pids, redis_pid, []),
                    })

        if "features" in groups:
            table, rows = f"cap_features_{run}", 2000
            asyncio.run(create_feature_table(database_url, table, rows))
            views = state_dir / "views"
            views.mkdir()
            (views / "capacity.yaml").write_text(features_yaml(table))
            env = {"DATABASE_URL": database_url, "PIPELINE_FEATURE_VIEWS_DIR": str(views)}
            with h.Mesh("capacity-features", services="pipeline", access_log=access_log, keep_logs=args.keep_logs,
                        env=env) as mesh:
                run_group(features_subjects(mesh, rows, rng), "features")

        if "model" in groups:
            h.progress("starting a private S3, MLflow and TorchServe")
            created.append(mlflow_db)  # created by MLflow's start
            backend_env, mlflow_pid, torchserve_pid = model_backends(state_dir, dsn, mlflow_db)
            env = {"DATABASE_URL": database_url, **backend_env}
            model = f"cap-model-{run}"
            with h.Mesh("capacity-registry", services="registry,inference", access_log=access_log,
                        keep_logs=args.keep_logs, env=env) as registry:
                with h.Mesh("capacity-router", services="router", access_log=access_log, keep_logs=args.keep_logs,
                            env={**env, "ROUTER_REGISTRY_ADDR": registry.grpc_addr,
                                 "ROUTER_MONITOR_FEED_SECONDS": "0"}) as router:
                    try:
                        run_group(model_subjects(registry, router, model, mlflow_pid, torchserve_pid), "model")
                    finally:
                        model_clean_up(registry, router, model)
        counters.close()
    finally:
        devservices.stop_all()
        for db in created:
            try:
                devservices.drop_database(admin_dsn, db)
            except Exception as exc:  # noqa: BLE001 - clean-up must not hide the outcome
                h.progress(f"could not drop database {db}: {exc}")
        if args.keep_logs:
            h.progress(f"state kept in {state_dir}")
        else:
            shutil.rmtree(state_dir, ignore_errors=True)

    report(figures, subjects, paced, replicas, reps, {"mesh": mesh_db, "mlflow": mlflow_db}, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

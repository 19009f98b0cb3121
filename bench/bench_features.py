"""The Feature Store's online reads and materialisation against baselines measured in the same run.

Set-up: a source table of its own in PostgreSQL (`bench_features_src_<run>`: a bigint key, 20
features of mixed types, an event time; 50,000 rows by generate_series, 20,000 with --quick), one
feature view over it declared in a YAML file of a temporary folder (PIPELINE_FEATURE_VIEWS_DIR),
a mesh server hosting only the pipeline service, and a FULL materialisation before anything is
timed. Every read is checked to come from the online store (source ONLINE_STORE, no read-through),
before and after the timed loops. Subjects, in alternating order per repetition:

  floor        `grpc.health.v1.Health/Check` on the same server: the empty-RPC floor
  one          `GetFeatures` of one entity, all 20 features (cycling over 1,000 entities)
  hundred      `GetFeatures` of 100 entities in one call, all 20 features (50 different sets)
  materialize  `MaterializeFeatures` FULL with wait=true: entities written per second of the call
  pipeline     the baseline: redis-py asyncio pipelines writing the same records (the very keys and
               values the materialisation wrote, read back once), a SET per entity,
               same batch size (PIPELINE_MATERIALIZATION_BATCH_ENTRIES), one round trip per batch
  source       (for the record) the materialisation's PostgreSQL queries alone, from this process
               over asyncpg: the changed keys, then each batch's rows

Sequential latencies are blocking calls on one reused channel, raw bytes in and out, requests
built once. Targets: one entity p50 <= 1.3x and p99 <= 2x the floor; 100 entities p50 < 3x the
one-entity p50; materialisation >= 0.5x the pipeline's entities per second.

As the other benchmarks, the server runs with auth off unless `--auth on` (then the calls carry
a token with every scope, pipeline.read and pipeline.write among them, and the mesh checks it).
The table, the view's rows in the pipeline's state tables and the Redis keys are removed at the end.

    python bench/bench_features.py [--quick] [--reps N] [--rows N] [--access-log on|off] [--auth on|off]
"""

from __future__ import annotations

import asyncio
import random
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import _harness as h
import asyncpg
import grpc
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb

from ml_serving_tools import devservices
from ml_serving_tools.paths import STATE_DIR

PIPELINE = "/mnbara.mlserving.pipeline.v1.PipelineService/"
DEFAULT_BATCH = 1000  # PIPELINE_MATERIALIZATION_BATCH_ENTRIES' default

# The 20 features: name, declared type (and dimension), SQL type, SQL expression over g (the key).
FEATURES = [
    *[(f"int_{i}", "int", "bigint", f"(random() * 1000000)::bigint") for i in range(5)],
    *[(f"float_{i}", "float", "double precision", "random() * 100") for i in range(5)],
    ("country", "string", "text", "(ARRAY['US','DE','FR','JP','BR','IN','GB','ES'])[1 + g % 8]"),
    ("device", "string", "text", "CASE WHEN g % 3 = 0 THEN 'desktop' ELSE 'mobile' END"),
    ("segment", "string", "text", "'segment-' || (g % 97)"),
    ("fingerprint", "string", "text", "md5(g::text)"),
    ("is_premium", "bool", "boolean", "random() < 0.2"),
    ("is_active", "bool", "boolean", "random() < 0.7"),
    ("recent_item_ids", "int_list", "bigint[]",
     "ARRAY[g % 1000, (g * 7) % 1000, (g * 13) % 1000, (g * 17) % 1000, (g * 31) % 1000]"),
    ("recent_categories", "string_list", "text[]", "ARRAY['c' || g % 11, 'c' || g % 13, 'c' || g % 17]"),
    ("taste", "embedding:8", "real[]",
     "ARRAY[random(), random(), random(), random(), random(), random(), random(), random()]::real[]"),
    ("scores", "float_list", "double precision[]", "ARRAY[random(), random(), random()]"),
]
assert len(FEATURES) == 20


def view_yaml(view: str, table: str) -> str:
    lines = ["views:", f"  - name: {view}", "    description: bench_features.py's view (20 features).",
             "    entity: {name: bench_entity, join_key: entity_id, key_type: int}", "    features:"]
    for name, kind, _, _ in FEATURES:
        if kind.startswith("embedding:"):
            lines.append(f"      - {{name: {name}, type: embedding, dimension: {kind.split(':')[1]}}}")
        else:
            lines.append(f"      - {{name: {name}, type: {kind}}}")
    columns = ", ".join(name for name, *_ in FEATURES)
    lines += ["    source:", f"      query: SELECT entity_id, {columns}, updated_at FROM {table}",
              "      event_time_column: updated_at", "    ttl: 7d", "    compute_on_miss: true"]
    return "\n".join(lines) + "\n"


async def create_source(dsn: str, table: str, rows: int) -> float:
    columns = ", ".join(f"{name} {sql_type}" for name, _, sql_type, _ in FEATURES)
    values = ", ".join(expression for *_, expression in FEATURES)
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await conn.execute(f"""
            SELECT setseed(0.42);
            CREATE TABLE {table} (entity_id bigint PRIMARY KEY, {columns}, updated_at timestamptz NOT NULL);
            INSERT INTO {table}
              SELECT g, {values}, now() - interval '1 hour' - random() * interval '30 days'
              FROM generate_series(1, {rows}) AS g;
            ANALYZE {table};""")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def drop_source(dsn: str, table: str, view: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {table}")
        for state_table in ("pipeline_materialization_jobs", "pipeline_feature_view_state"):
            try:
                await conn.execute(f"DELETE FROM {state_table} WHERE feature_view = $1", view)
            except asyncpg.UndefinedTableError:
                pass
    finally:
        await conn.close()


# ----- the baselines -----

def online_prefix(mesh: h.Mesh, view: str) -> str:
    """The online store's key prefix of the view (redis_online_store.py: P:pipeline:fv:VIEW:{ID})."""
    return f"{mesh.prefix}:pipeline:fv:{view}:"


async def read_records(url: str, prefix: str, ids: list[int]) -> list[bytes]:
    """The records (one string key per entity) the materialisation wrote, whole, in key order."""
    import redis.asyncio as aioredis
    client = aioredis.Redis.from_url(url)
    try:
        out: list[bytes] = []
        for start in range(0, len(ids), 2000):
            out.extend(await client.mget([f"{prefix}{{{key}}}" for key in ids[start:start + 2000]]))
        assert None not in out, "an entity the materialisation did not write"
        return out
    finally:
        await client.aclose()


async def pipeline_writes(url: str, prefix: str, ids: list[int], records: list[bytes], batch: int
                          ) -> tuple[float, float]:
    """Plain pipelines (a SET per entity) writing `records`, batch by batch: (entities per second,
    this process's CPU microseconds per entity)."""
    import redis.asyncio as aioredis
    client = aioredis.Redis.from_url(url)
    try:
        await client.ping()  # connected before the clock starts, as the server's pool is
        cpu0 = time.process_time()
        started = time.perf_counter()
        for start in range(0, len(ids), batch):
            pipe = client.pipeline(transaction=False)
            for key, record in zip(ids[start:start + batch], records[start:start + batch]):
                pipe.set(f"{prefix}{{{key}}}", record)
            await pipe.execute()
        elapsed = time.perf_counter() - started
        return len(ids) / elapsed, (time.process_time() - cpu0) / len(ids) * 1e6
    finally:
        await client.aclose()


async def source_queries(dsn: str, table: str, batch: int) -> float:
    """Entities per second of the materialisation's own source queries (postgres_store.py), alone."""
    columns = ", ".join(name for name, *_ in FEATURES)
    query = f"SELECT entity_id, {columns}, updated_at FROM {table}"
    conn = await asyncpg.connect(dsn, server_settings={"TimeZone": "UTC"})
    try:
        started = time.perf_counter()
        await conn.fetchval(f'SELECT max(q."updated_at") FROM ({query}) AS q')
        keys = [r["k"] for r in await conn.fetch(
            f'SELECT DISTINCT q."entity_id" AS k FROM ({query}) AS q WHERE q."entity_id" IS NOT NULL ORDER BY 1')]
        rows_sql = (f'SELECT DISTINCT ON (q."entity_id") * FROM ({query}) AS q WHERE q."entity_id" = ANY($1::bigint[]) '
                    f'ORDER BY q."entity_id", q."updated_at" DESC NULLS LAST')
        for start in range(0, len(keys), batch):
            await conn.fetch(rows_sql, keys[start:start + batch])
        return len(keys) / (time.perf_counter() - started)
    finally:
        await conn.close()


# ----- the subjects over gRPC -----

def cycling_latencies(call, requests: list[bytes], n: int, warmup: int, metadata, pid: int
                      ) -> tuple[list[float], float]:
    """`n` blocking calls one after another, cycling over `requests`: (sorted milliseconds, the
    server's CPU microseconds per call, which a busy machine disturbs less than latency)."""
    count = len(requests)
    for i in range(warmup):
        call(requests[i % count], metadata=metadata)
    clock = time.perf_counter_ns
    out = [0.0] * n
    cpu0 = h.cpu_seconds(pid)
    for i in range(n):
        request = requests[i % count]
        t0 = clock()
        call(request, metadata=metadata)
        out[i] = (clock() - t0) / 1e6
    cpu = (h.cpu_seconds(pid) - cpu0) / n * 1e6
    out.sort()
    return out, cpu


def check_online(get, request: bytes, expected: int, metadata) -> None:
    """The answer holds `expected` found entities, 20 features each, all from the online store."""
    reply = pb.GetFeaturesResponse.FromString(get(request, timeout=30, metadata=metadata))
    assert reply.read_through_count == 0 and not reply.online_store_unavailable, \
        (reply.read_through_count, reply.online_store_unavailable)
    if reply.view_statuses:  # the columns layout
        [status] = reply.view_statuses
        assert len(reply.entity_ids) == expected and len(reply.columns) == len(FEATURES), reply
        assert all(status.found) and not any(status.stale), reply
        assert set(status.sources) == {pb.FEATURE_VALUE_SOURCE_ONLINE_STORE}, reply
        return
    assert len(reply.entities) == expected, reply
    for entity in reply.entities:
        assert entity.found and len(entity.features) == len(FEATURES), entity
        sources = {feature.source for feature in entity.features.values()}
        assert sources == {pb.FEATURE_VALUE_SOURCE_ONLINE_STORE}, (entity.entity_id, sources)
        assert not any(feature.stale for feature in entity.features.values()), entity.entity_id


def materialize(channel, view: str, rows: int, metadata, pid: int) -> tuple[float, float, float]:
    """One FULL materialisation with wait=true: (entities per second of the call, of the job itself,
    the server's CPU microseconds per entity)."""
    call = channel.unary_unary(PIPELINE + "MaterializeFeatures", request_serializer=None,
                               response_deserializer=pb.MaterializeFeaturesResponse.FromString)
    request = pb.MaterializeFeaturesRequest(feature_views=[view], mode=pb.MATERIALIZATION_MODE_FULL,
                                            wait=True).SerializeToString()
    cpu0 = h.cpu_seconds(pid)
    started = time.perf_counter()
    reply = call(request, timeout=600, metadata=metadata)
    elapsed = time.perf_counter() - started
    cpu = (h.cpu_seconds(pid) - cpu0) / rows * 1e6
    (job,) = reply.jobs
    if job.state != pb.JOB_STATE_SUCCEEDED or job.entities_written != rows:
        raise RuntimeError(f"materialisation did not write every entity: {job}")
    job_seconds = (job.end_time.ToNanoseconds() - job.start_time.ToNanoseconds()) / 1e9
    return rows / elapsed, rows / job_seconds, cpu


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=None, help="source rows = entities (default 50000, 20000 with --quick)")
    p.add_argument("--calls", type=int, default=None,
                   help="sequential one-entity and floor calls per repetition (default 2000, 300 with --quick)")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                   help="PIPELINE_MATERIALIZATION_BATCH_ENTRIES, and the baseline pipeline's batch (default 1000)")
    p.add_argument("--auth", choices=("on", "off"), default="off",
                   help="check tokens in the mesh (the calls carry one with every scope); default off, as the "
                        "other benchmarks (bench_auth.py measures what auth adds)")
    p.add_argument("--layout", choices=("columns", "entities"), default="columns",
                   help="GetFeatures' answer layout: columns (the default here: what the Python client asks "
                        "for) or entities (the map per entity that REST callers get by default)")
    args = p.parse_args()
    layout = pb.FEATURES_LAYOUT_COLUMNS if args.layout == "columns" else pb.FEATURES_LAYOUT_ENTITIES
    reps = h.reps_of(args)
    rows = args.rows or (20_000 if args.quick else 50_000)
    calls = args.calls or (300 if args.quick else 2000)
    hundred_calls = max(50, calls // 4)
    warmup = 50 if args.quick else 200

    h._stop_on_sigterm()  # the table is dropped on SIGTERM too, not only once the mesh runs
    run = uuid.uuid4().hex[:8]
    table, view = f"bench_features_src_{run}", f"bench_features_{run}"
    h.progress("finding or starting PostgreSQL")
    dsn = devservices.ensure_postgres(STATE_DIR)
    h.progress(f"creating {table} ({rows} rows)")
    took = asyncio.run(create_source(dsn, table, rows))
    h.progress(f"  {took:.1f} s")
    views_dir = None
    try:
        views_dir = Path(tempfile.mkdtemp(prefix="bench-features-views-"))
        (views_dir / "bench.yaml").write_text(view_yaml(view, table))
        env = {"DATABASE_URL": dsn, "PIPELINE_FEATURE_VIEWS_DIR": str(views_dir),
               "PIPELINE_MATERIALIZATION_BATCH_ENTRIES": str(args.batch)}
        with h.Mesh("features", services="pipeline", access_log=args.access_log == "on", keep_logs=args.keep_logs,
                    auth=args.auth == "on", env=env) as mesh, \
                grpc.insecure_channel(mesh.grpc_addr) as channel:
            metadata = (("authorization", f"Bearer {mesh.token}"),) if mesh.token else None
            h.progress("first materialisation (FULL)")
            first = materialize(channel, view, rows, metadata, mesh.pid)
            h.progress(f"  {first[0]:.0f} entities/s")

            rng = random.Random(7)
            get = h.raw_unary(channel, PIPELINE + "GetFeatures")
            health = h.raw_unary(channel, h.HEALTH_CHECK)
            one_reqs = [pb.GetFeaturesRequest(feature_view=view, entity_id=str(rng.randint(1, rows)), layout=layout)
                        .SerializeToString() for _ in range(1000)]
            hundred_reqs = [pb.GetFeaturesRequest(feature_view=view, layout=layout, entity_ids=[
                str(k) for k in rng.sample(range(1, rows + 1), 100)]).SerializeToString() for _ in range(50)]
            floor_reqs = [h.health_request_bytes()]
            for request in one_reqs[:20]:
                check_online(get, request, 1, metadata)
            for request in hundred_reqs[:5]:
                check_online(get, request, 100, metadata)

            h.progress(f"reads: {calls} floor and one-entity calls, {hundred_calls} 100-entity calls x {reps} "
                       f"repetitions (after {warmup} warm-up calls)")
            seq = h.alternating(reps, {
                "floor": lambda: cycling_latencies(health, floor_reqs, calls, warmup, metadata, mesh.pid),
                "one": lambda: cycling_latencies(get, one_reqs, calls, warmup, metadata, mesh.pid),
                "hundred": lambda: cycling_latencies(get, hundred_reqs, hundred_calls, warmup // 4, metadata,
                                                     mesh.pid),
            })
            for request in one_reqs[-20:]:
                check_online(get, request, 1, metadata)
            for request in hundred_reqs[-5:]:
                check_online(get, request, 100, metadata)

            ids = list(range(1, rows + 1))
            records = asyncio.run(read_records(h.REDIS_URL, online_prefix(mesh, view), ids))
            assert len(records) == rows, "the online store lacks records"
            value_bytes = sum(len(r) for r in records) / rows
            baseline_prefix = f"{mesh.prefix}:baseline:fv:{view}:"
            asyncio.run(pipeline_writes(h.REDIS_URL, baseline_prefix, ids, records, args.batch))  # keys exist after
            h.progress(f"materialisation: {rows} entities ({value_bytes:.0f} bytes each), "
                       f"batches of {args.batch} x {reps} repetitions")
            mat = h.alternating(reps, {
                "materialize": lambda: materialize(channel, view, rows, metadata, mesh.pid),
                "pipeline": lambda: asyncio.run(pipeline_writes(h.REDIS_URL, baseline_prefix, ids, records,
                                                                args.batch)),
                "source": lambda: asyncio.run(source_queries(dsn, table, args.batch)),
            })
            check_online(get, one_reqs[0], 1, metadata)
    finally:
        if views_dir is not None:
            shutil.rmtree(views_dir, ignore_errors=True)
        asyncio.run(drop_source(dsn, table, view))

    p50 = {k: [h.percentile(v, 50) for v, _ in runs] for k, runs in seq.items()}
    p99 = {k: [h.percentile(v, 99) for v, _ in runs] for k, runs in seq.items()}
    cpu = {k: [c for _, c in runs] for k, runs in seq.items()}
    rate = {"materialize": [r for r, _, _ in mat["materialize"]], "job": [j for _, j, _ in mat["materialize"]],
            "pipeline": [r for r, _ in mat["pipeline"]], "source": mat["source"]}
    cpu["materialize"] = [c for _, _, c in mat["materialize"]]
    cpu["pipeline"] = [c for _, c in mat["pipeline"]]
    h.result(f"# bench_features: one view of 20 features over {rows} entities, pipeline service only, direct gRPC, {args.layout} layout, "
             f"{calls} sequential calls ({hundred_calls} of 100 entities), batches of {args.batch}, {reps} reps, "
             f"access log {args.access_log}, auth {args.auth}")
    for i in range(reps):
        h.result(f"#   rep {i + 1}: p50/p99 ms: floor {h.fmt(p50['floor'][i])}/{h.fmt(p99['floor'][i])}, "
                 f"one {h.fmt(p50['one'][i])}/{h.fmt(p99['one'][i])}, "
                 f"hundred {h.fmt(p50['hundred'][i])}/{h.fmt(p99['hundred'][i])} | entities/s: "
                 f"materialize {h.fmt(rate['materialize'][i])} (job {h.fmt(rate['job'][i])}), "
                 f"pipeline {h.fmt(rate['pipeline'][i])}, source queries {h.fmt(rate['source'][i])}")
    h.result(h.ratio_line("GetFeatures 1 entity p50", p50["one"], p50["floor"], "ms", "empty-RPC floor", target=1.3))
    h.result(h.ratio_line("GetFeatures 1 entity p99", p99["one"], p99["floor"], "ms", "empty-RPC floor", target=2.0))
    h.result(h.ratio_line("GetFeatures 100 entities p50", p50["hundred"], p50["one"], "ms", "1 entity", target=3.0))
    h.result(h.ratio_line("MaterializeFeatures FULL", rate["materialize"], rate["pipeline"], "entities/s",
                          "plain Redis pipeline", target=0.5, higher_is_better=True))
    h.result("# for the record (no targets): where the time goes")
    h.result("# " + h.ratio_line("server cpu/call, 1 entity", cpu["one"], cpu["floor"], "us", "empty-RPC floor"))
    h.result("# " + h.ratio_line("server cpu/call, 100 entities", cpu["hundred"], cpu["one"], "us", "1 entity"))
    h.result("# " + h.ratio_line("cpu/entity, materialize (server)", cpu["materialize"], cpu["pipeline"], "us",
                                 "plain pipeline (client)"))
    h.result("# " + h.ratio_line("materialization job alone (start to end)", rate["job"], rate["pipeline"],
                                 "entities/s", "plain Redis pipeline", higher_is_better=True))
    h.result("# " + h.ratio_line("its source queries alone (asyncpg)", rate["source"], rate["pipeline"], "entities/s",
                                 "plain Redis pipeline", higher_is_better=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

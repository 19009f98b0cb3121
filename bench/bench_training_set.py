"""Point-in-time retrieval (GetTrainingSet) of 1,000,000 entity rows from a query, end to end over gRPC.

Set-up, in PostgreSQL (by generate_series, in seconds): an entity table of --rows rows (user_id,
item_id, ts spread over a year, clicked), an append-only history of user features (--users users x
--versions versions: score, level, segment, valid_from) and of item prices (1,000 items x 10
versions), each indexed on (key, event time); two feature views over the histories declared in a
YAML file of a temporary folder (PIPELINE_FEATURE_VIEWS_DIR); a mesh server hosting only the
pipeline service. Then one call:

    GetTrainingSet(entity_query="SELECT user_id, item_id, ts, clicked FROM <entities>",
                   features=["bench_users", "bench_items"])

streamed to the end through a gRPC channel; the client counts rows and checks that no value's
event time is after its row's timestamp. Printed: seconds, rows/s, messages and bytes; the target
is 1,000,000 rows in under a minute. The tables are dropped at the end.

    python bench/bench_training_set.py [--rows N] [--users N] [--versions N]
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import grpc
from mnbara.mlserving.pipeline.v1 import pipeline_pb2 as pb
from mnbara.mlserving.pipeline.v1 import pipeline_pb2_grpc

sys.path.insert(0, str(Path(__file__).parent))
import _harness as h  # noqa: E402

from ml_serving_tools import devservices  # noqa: E402
from ml_serving_tools.paths import STATE_DIR  # noqa: E402

VIEWS = """views:
  - name: bench_users
    entity: {{name: bench_user, join_key: user_id, key_type: int}}
    features:
      - {{name: score, type: float}}
      - {{name: level, type: int}}
      - {{name: segment, type: string}}
    source:
      query: SELECT user_id, score, level, segment, valid_from FROM {users}
      event_time_column: valid_from
  - name: bench_items
    entity: {{name: bench_item, join_key: item_id, key_type: int}}
    features:
      - {{name: price, type: float}}
      - {{name: category, type: int}}
    source:
      query: SELECT item_id, price, category, valid_from FROM {items}
      event_time_column: valid_from
"""


async def create_tables(dsn: str, names: dict[str, str], rows: int, users: int, versions: int) -> float:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        await conn.execute(f"""
            SELECT setseed(0.42);
            CREATE TABLE {names['entities']} AS
              SELECT 1 + (g::bigint * 7919) % {users} AS user_id, 1 + g % 1000 AS item_id,
                     TIMESTAMPTZ '2026-01-01 00:00+00' + random() * interval '365 days' AS ts,
                     random() < 0.1 AS clicked
              FROM generate_series(1, {rows}) AS g;
            CREATE TABLE {names['users']} AS
              SELECT u AS user_id, random() AS score, (random() * 10)::int AS level, 'seg-' || (u % 50) AS segment,
                     TIMESTAMPTZ '2026-01-01 00:00+00' + (v * 365.0 / {versions}) * interval '1 day'
                       + random() * interval '30 days' AS valid_from
              FROM generate_series(1, {users}) AS u, generate_series(0, {versions - 1}) AS v;
            CREATE INDEX ON {names['users']} (user_id, valid_from);
            CREATE TABLE {names['items']} AS
              SELECT i AS item_id, random() * 100 AS price, i % 12 AS category,
                     TIMESTAMPTZ '2026-01-01 00:00+00' + v * interval '36 days' AS valid_from
              FROM generate_series(1, 1000) AS i, generate_series(0, 9) AS v;
            CREATE INDEX ON {names['items']} (item_id, valid_from);
            ANALYZE {names['entities']}; ANALYZE {names['users']}; ANALYZE {names['items']};""")
        return time.perf_counter() - started
    finally:
        await conn.close()


async def drop_tables(dsn: str, names: dict[str, str]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("; ".join(f"DROP TABLE IF EXISTS {t}" for t in names.values()))
    finally:
        await conn.close()


def stream(channel, request, metadata) -> dict:
    stub = pipeline_pb2_grpc.PipelineServiceStub(channel)
    started = time.perf_counter()
    first_at = None
    rows = messages = size = with_user = leaks = 0
    for message in stub.GetTrainingSet(request, metadata=metadata, timeout=600):
        if first_at is None:
            first_at = time.perf_counter() - started
        messages += 1
        size += message.ByteSize()
        rows += message.row_count
        stamps = message.timestamps.timestamp_micros
        for column in message.event_times:
            nulls = set(column.null_rows)
            times = column.timestamp_micros
            with_user += len(times) - len(nulls)
            leaks += sum(1 for i, (t, at) in enumerate(zip(times, stamps)) if t > at and i not in nulls)
    return {"seconds": time.perf_counter() - started, "first": first_at or 0.0, "rows": rows,
            "messages": messages, "bytes": size, "values": with_user, "leaks": leaks}


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="entity rows (default 1,000,000)")
    p.add_argument("--users", type=int, default=100_000, help="users in the history (default 100,000)")
    p.add_argument("--versions", type=int, default=5, help="history rows per user (default 5)")
    p.add_argument("--batch", type=int, default=5000, help="PIPELINE_TRAINING_SET_BATCH_ENTRIES (default 5000)")
    args = p.parse_args()

    run = uuid.uuid4().hex[:8]
    names = {"entities": f"bench_pts_entities_{run}", "users": f"bench_pts_users_{run}",
             "items": f"bench_pts_items_{run}"}
    h.progress("finding or starting PostgreSQL")
    dsn = devservices.ensure_postgres(STATE_DIR)
    views_dir = Path(tempfile.mkdtemp(prefix="bench-training-set-views-"))
    try:
        h.progress(f"creating {args.rows} entity rows and {args.users} x {args.versions} history rows")
        h.progress(f"  {asyncio.run(create_tables(dsn, names, args.rows, args.users, args.versions)):.1f} s")
        (views_dir / "bench.yaml").write_text(VIEWS.format(**names))
        env = {"DATABASE_URL": dsn, "PIPELINE_FEATURE_VIEWS_DIR": str(views_dir),
               "PIPELINE_TRAINING_SET_BATCH_ENTRIES": str(args.batch)}
        with h.Mesh("training-set", services="pipeline", access_log=args.access_log == "on",
                    keep_logs=args.keep_logs, env=env) as mesh, \
                grpc.insecure_channel(mesh.grpc_addr, options=[("grpc.max_receive_message_length", 64 << 20)]
                                      ) as channel:
            request = pb.GetTrainingSetRequest(
                entity_query=f"SELECT user_id, item_id, ts, clicked FROM {names['entities']}",
                features=["bench_users", "bench_items"])
            h.progress(f"GetTrainingSet of {args.rows} rows x {(args.reps or (1 if args.quick else 3))} repetitions")
            for _ in range((args.reps or (1 if args.quick else 3))):
                got = stream(channel, request, None)
                assert got["rows"] == args.rows, got
                assert got["leaks"] == 0, got
                h.result(f"training set: {got['rows']} rows in {got['seconds']:.1f} s = "
                         f"{got['rows'] / got['seconds']:,.0f} rows/s (first message after {got['first']:.2f} s; "
                         f"{got['messages']} messages, {got['bytes'] / 1e6:.0f} MB; {got['values']} view values, "
                         f"none after its row's timestamp); target: 1,000,000 rows < 60 s")
    finally:
        shutil.rmtree(views_dir, ignore_errors=True)
        asyncio.run(drop_tables(dsn, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Metric ingestion of the model monitor: PostgresMetricStore.record of 10,000-value batches, values/s.

The issue's target is 50,000 values/s in one process for batches of 10,000 (measured later through
the gRPC BatchRecordMetrics; here through the store directly). In a PostgreSQL database of its
own (created here, dropped at the end, so nothing else is touched), migrated to the pipeline's
schema, subjects alternating per repetition, each sending --batches batches one after another
(--in-flight at a time):

  record          PostgresMetricStore.record of values without event ids: MetricValue to rows,
                  binary COPY into pipeline_metric_values (its indexes), one transaction
  copy            the floor: asyncpg copy_records_to_table of the same rows, already tuples, into
                  a plain table of the same columns without any index
  record_dedupe   record of values each with a new event id: COPY into the session's staging
                  table, then INSERT ... SELECT ... ON CONFLICT DO NOTHING (the unique event index)

Values: 4 models x 3 metrics x 2 versions, times increasing, half of them with two labels.

    python bench/bench_monitoring.py [--quick] [--reps N] [--batches N] [--batch-size N] [--in-flight N]
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).parent))
import _harness as h  # noqa: E402

from ml_serving_server.services.pipeline.domain.monitoring import MetricValue  # noqa: E402
from ml_serving_server.services.pipeline.postgres_monitoring import PostgresMetricStore  # noqa: E402
from ml_serving_server.services.pipeline.postgres_monitoring import _value_row  # noqa: E402
from ml_serving_server.services.pipeline.postgres_runs import PostgresRunStore  # noqa: E402
from ml_serving_tools import devservices  # noqa: E402
from ml_serving_tools.paths import STATE_DIR  # noqa: E402

TARGET = 50_000.0  # values/s
SUBJECTS = ("record", "copy", "record_dedupe")
FLOOR_TABLE = "bench_metric_values_floor"
T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)


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


async def timed(send, items: list, in_flight: int) -> float:
    """Sends every item, `in_flight` at a time; seconds taken."""
    queue = list(reversed(items))

    async def worker():
        while queue:
            await send(queue.pop())

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - started


class Bench:
    def __init__(self, pool: asyncpg.Pool, args):
        self.pool, self.args = pool, args
        self.store = PostgresMetricStore(pool)
        self.sent = 0  # values made so far: keeps times increasing across repetitions

    def _batches(self, keyed: bool) -> list[list[MetricValue]]:
        made = batches(self.args.batches, self.args.batch_size, keyed, self.sent)
        self.sent += self.args.batches * self.args.batch_size
        return made

    async def record(self, keyed: bool) -> float:
        made = self._batches(keyed)

        async def send(batch):
            new, duplicates = await self.store.record(batch)
            assert (new, duplicates) == (len(batch), 0), (new, duplicates)

        return sum(map(len, made)) / await timed(send, made, self.args.in_flight)

    async def copy(self) -> float:
        rows = [[_value_row(v) for v in batch] for batch in self._batches(False)]

        async def send(batch):
            async with self.pool.acquire() as conn:
                await conn.copy_records_to_table(FLOOR_TABLE, records=batch)

        return sum(map(len, rows)) / await timed(send, rows, self.args.in_flight)


async def open_pool(url: str) -> asyncpg.Pool:
    runs = await PostgresRunStore.connect(url, timeout_seconds=60)  # migrates: pipeline_metric_values
    await runs._pool.execute(f"""CREATE TABLE {FLOOR_TABLE} AS SELECT model_name, metric_name, model_version, time,
                                     value, labels, event_id FROM pipeline_metric_values LIMIT 0""")
    return runs._pool


def run(url: str, args) -> dict[str, list[float]]:
    loop = asyncio.new_event_loop()
    pool = loop.run_until_complete(open_pool(url))
    try:
        bench = Bench(pool, args)
        loop.run_until_complete(bench.record(False))  # warm-up: connections, prepared statements, staging
        loop.run_until_complete(bench.record(True))
        subjects = {"record": lambda: bench.record(False), "copy": bench.copy,
                    "record_dedupe": lambda: bench.record(True)}
        h.progress(f"{args.batches} batches of {args.batch_size} values per subject x {h.reps_of(args)} repetitions")
        return h.alternating(h.reps_of(args), {name: (lambda f=f: loop.run_until_complete(f()))
                                               for name, f in subjects.items()})
    finally:
        loop.run_until_complete(pool.close())
        loop.close()


def report(runs: dict[str, list[float]], args) -> None:
    h.result(f"# bench_monitoring: {args.batches} batches of {args.batch_size} values, {args.in_flight} in flight, "
             f"{len(runs['record'])} reps; through PostgresMetricStore directly (not gRPC)")
    for name, what in (("record", "record, no event ids"), ("record_dedupe", "record, event ids (dedupe)")):
        h.result(h.ratio_line(what, runs[name], runs["copy"], "values/s", "plain COPY (no indexes)",
                              higher_is_better=True))
        rate = h.median(runs[name])
        h.result(f"{what}: {h.fmt(rate)} values/s (range {h.fmt(min(runs[name]))}-{h.fmt(max(runs[name]))}) "
                 f"[target >= {TARGET:,.0f}/s: {'met' if rate >= TARGET else 'MISSED'}]")


def main() -> int:
    p = h.parser(__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=None, help="batches per subject and repetition "
                                                            "(default 10, 3 with --quick)")
    p.add_argument("--batch-size", type=int, default=10_000, help="values per batch (default 10,000)")
    p.add_argument("--in-flight", type=int, default=1, help="batches sent at once (default 1)")
    args = p.parse_args()
    args.batches = args.batches or (3 if args.quick else 10)
    h.progress("finding or starting PostgreSQL")
    server = devservices.ensure_postgres(STATE_DIR)
    dbname = f"bench_monitoring_{uuid.uuid4().hex[:8]}"
    url = devservices.create_database_if_missing(server, dbname)
    try:
        runs = run(url, args)
    finally:
        devservices.drop_database(server, dbname)
    report(runs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

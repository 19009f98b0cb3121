"""The Feature Store's demo data: users, items and interaction events in PostgreSQL.

`make up` loads it into the mesh's database (`demo_setup.load_demo_data`); anywhere else:

    python -m ml_serving_tools.demo_data [--dsn URL] [--users N] [--items N] [--events N] [--seed S]

The tables are what the feature views in `features/*.yaml` select from (their DDL is `TABLES`
below, the one place it is written):

    demo_users         user_id bigint, age_bucket int, activity float8, is_premium bool,
                       country text, device text, taste float8[4], updated_at timestamptz
    demo_items         item_id bigint, category int, price_tier int, price float8,
                       popularity float8, embedding float8[4], updated_at timestamptz
    demo_interactions  id bigint, user_id bigint, item_id bigint, device text, clicked bool,
                       event_time timestamptz
    demo_data_info     one row: what is loaded (seed, sizes, generator version, anchor, load time)

It is the demo `recommendation-model`'s world (`demo_model.data`), scaled up:

- users 0..999 and items 0..199 are the model's own, `data.world(seed)`: the same age buckets,
  activity, premium flags, taste vectors, categories, price tiers, popularity and embeddings;
- further users and items come in blocks drawn by that same generator under derived seeds
  (user 1000*k + n is user n of `world((seed, k))`, item 200*k + n its item n), so they
  follow the model's distributions exactly;
- events 0..49,999 are the model's own labelled interactions, `data.interactions(seed)` (same
  user, item, device and click, row n as event id n) when the sizes hold the model's users and
  items; further events pick a user and an item uniformly and a device as the model's do, and
  click with the probability of the same hidden ground truth (`data.true_logit`, the model's
  age x category affinity) over the scaled world;
- event times spread uniformly over the 30 days before the *anchor* (the load time); users'
  and items' `updated_at` lie in the 30 days before that window, so every event finds its
  user's and item's row as of its own time (a point-in-time join loses no event);
- demo dressing that the model does not use, from streams of its own: a country per user, the
  user's usual device (the one most of their events came from), a price in euros within the
  item's tier.

Everything is a function of (seed, sizes, anchor): the same arguments give the same rows, and
the same seed and sizes at another anchor give the same rows shifted in time.

`load` is idempotent: a database whose `demo_data_info` names the same seed, sizes and generator
is left alone (unless its anchor is older than `max_age`, when the 30-day window would have
gone stale); anything else is replaced in one transaction (readers see the old data or the new,
never a mix), under an advisory lock so concurrent loaders do the work once. Generation is numpy
throughout; the rows travel as PostgreSQL's binary COPY format, built by numpy too.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import AsyncIterator, Iterator

import numpy as np

from .demo_model import data

DEFAULT_USERS = 100_000
DEFAULT_ITEMS = 1_000
DEFAULT_EVENTS = 1_000_000
EVENT_WINDOW = timedelta(days=30)
"""Events lie in the window this long before the anchor."""
PROFILE_SPREAD = timedelta(days=30)
"""Users' and items' `updated_at` lie in this span before the event window."""
MAX_AGE = timedelta(days=1)
"""`load` reloads data whose anchor is older than this (the `*_7d` features would thin out)."""
GENERATOR_VERSION = 1
"""Bump when what `generate` makes of a seed, or the tables' layout, changes: `load` then replaces
data an older version loaded."""
MOBILE_SHARE = 0.6
"""Share of events from mobile devices, as `data.interactions` draws them."""
COUNTRIES = (("DE", 0.22), ("FR", 0.16), ("GB", 0.14), ("ES", 0.10), ("IT", 0.10), ("NL", 0.08),
             ("PL", 0.07), ("SE", 0.05), ("PT", 0.04), ("US", 0.04))
PRICE_RANGES = ((4.0, 20.0), (20.0, 80.0), (80.0, 400.0))
"""Euros, per price tier (0 cheap .. 2 expensive); prices are log-uniform within their tier."""
MAX_ROWS = 50_000_000
_LOCK_KEY = 0x6D65736864656D6F  # pg_advisory_xact_lock key of loaders ("meshdemo")
_CHUNK_ROWS = 131_072
# Random streams of this module, apart from the model's (seed, seed+1, seed+2) and from the
# blocks of users and items ((seed, k) for k >= 1).
_EVENTS, _TIMES, _USER_DRESSING, _ITEM_DRESSING = (0, 1), (0, 2), (0, 3), (0, 4)

# ----------------------------------------------------------------------------- the tables

TABLES: dict[str, dict] = {
    "demo_users": {
        "columns": (
            ("user_id", "bigint NOT NULL"),
            ("age_bucket", "integer NOT NULL"),
            ("activity", "double precision NOT NULL"),
            ("is_premium", "boolean NOT NULL"),
            ("country", "text NOT NULL"),
            ("device", "text NOT NULL"),
            ("taste", f"double precision[] NOT NULL CHECK (cardinality(taste) = {data.TASTE_DIMS})"),
            ("updated_at", "timestamptz NOT NULL"),
        ),
        "primary_key": "user_id",
        "indexes": ("updated_at",),
    },
    "demo_items": {
        "columns": (
            ("item_id", "bigint NOT NULL"),
            ("category", "integer NOT NULL"),
            ("price_tier", "integer NOT NULL"),
            ("price", "double precision NOT NULL"),
            ("popularity", "double precision NOT NULL"),
            ("embedding", f"double precision[] NOT NULL CHECK (cardinality(embedding) = {data.TASTE_DIMS})"),
            ("updated_at", "timestamptz NOT NULL"),
        ),
        "primary_key": "item_id",
        "indexes": ("updated_at",),
    },
    "demo_interactions": {
        "columns": (
            ("id", "bigint NOT NULL"),
            ("user_id", "bigint NOT NULL"),
            ("item_id", "bigint NOT NULL"),
            ("device", "text NOT NULL"),
            ("clicked", "boolean NOT NULL"),
            ("event_time", "timestamptz NOT NULL"),
        ),
        "primary_key": "id",
        # The engagement views aggregate per user and per item over time windows.
        "indexes": ("user_id, event_time", "item_id, event_time"),
        # Rows are written in this order: a user's events lie together (and that index builds
        # from presorted input).
        "order": ("user_id", "event_time"),
    },
}
INFO_TABLE = "demo_data_info"
_INFO_DDL = f"""CREATE TABLE IF NOT EXISTS {INFO_TABLE} (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seed bigint NOT NULL,
    users bigint NOT NULL,
    items bigint NOT NULL,
    events bigint NOT NULL,
    generator integer NOT NULL,
    anchor timestamptz NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    load_seconds double precision NOT NULL
)"""


def _index_name(table: str, columns: str) -> str:
    return f"{table}_{'_'.join(c.strip() for c in columns.split(','))}_idx"


def _create_table_sql(table: str, *, keyed: bool, if_not_exists: bool) -> str:
    spec = TABLES[table]
    lines = [f"    {name} {ddl}" for name, ddl in spec["columns"]]
    if keyed:
        lines.append(f"    PRIMARY KEY ({spec['primary_key']})")
    exists = "IF NOT EXISTS " if if_not_exists else ""
    return f"CREATE TABLE {exists}{table} (\n" + ",\n".join(lines) + "\n)"


def _index_sqls(table: str, *, with_key: bool, if_not_exists: bool) -> list[str]:
    spec, exists = TABLES[table], "IF NOT EXISTS " if if_not_exists else ""
    sqls = [f"ALTER TABLE {table} ADD PRIMARY KEY ({spec['primary_key']})"] if with_key else []
    return sqls + [f"CREATE INDEX {exists}{_index_name(table, cols)} ON {table} ({cols})" for cols in spec["indexes"]]


async def create_schema(conn) -> None:
    """The demo tables (empty when new), their keys and indexes, and the info table; existing
    ones are kept as they are."""
    await conn.execute(_INFO_DDL)
    for table in TABLES:
        await conn.execute(_create_table_sql(table, keyed=True, if_not_exists=True))
        for sql in _index_sqls(table, with_key=False, if_not_exists=True):
            await conn.execute(sql)


# ----------------------------------------------------------------------------- generation


@dataclass(frozen=True)
class Text:
    """A text column as codes into a few labels."""

    codes: np.ndarray
    labels: tuple[str, ...]

    def values(self) -> np.ndarray:
        return np.asarray(self.labels, dtype=object)[self.codes]

    def __len__(self) -> int:
        return len(self.codes)


Column = np.ndarray | Text


@dataclass(frozen=True)
class DemoData:
    """Columns by table, in the tables' column order; row n of `users` is user n, and so on."""

    seed: int
    anchor: datetime
    users: dict[str, Column]
    items: dict[str, Column]
    events: dict[str, Column]

    @property
    def tables(self) -> dict[str, dict[str, Column]]:
        return {"demo_users": self.users, "demo_items": self.items, "demo_interactions": self.events}


def _world_of(seed) -> data.World:
    """`data.world` without its cache (the blocks are used once)."""
    return getattr(data.world, "__wrapped__", data.world)(seed)


def scaled_world(n_users: int, n_items: int, seed: int = data.SEED) -> data.World:
    """The model's world grown (or cut) to `n_users` users and `n_items` items: the model's own
    first, then blocks of the same generator under seeds (seed, 1), (seed, 2), ..."""
    base = data.world(seed)
    blocks = max(math.ceil((n_users - data.N_USERS) / data.N_USERS),
                 math.ceil((n_items - data.N_ITEMS) / data.N_ITEMS), 0)
    worlds = [base] + [_world_of((seed, k)) for k in range(1, blocks + 1)]
    users = {name: np.concatenate([w.users[name] for w in worlds])[:n_users] for name in base.users}
    items = {name: np.concatenate([w.items[name] for w in worlds])[:n_items] for name in base.items}
    return data.World(users, items, base.affinity)


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _micros(span: timedelta) -> int:
    return span // timedelta(microseconds=1)


def generate(users: int = DEFAULT_USERS, items: int = DEFAULT_ITEMS, events: int = DEFAULT_EVENTS,
             seed: int = data.SEED, now: datetime | None = None) -> DemoData:
    """The demo's rows (see the module's docstring); `now` is the anchor (default: this second)."""
    for name, value, least in (("users", users, 1), ("items", items, 1), ("events", events, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= MAX_ROWS:
            raise ValueError(f"{name} must be an integer from {least} to {MAX_ROWS:,}, not {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be a non-negative 64-bit integer, not {seed!r}")
    anchor = _as_utc(now) if now is not None else datetime.now(timezone.utc).replace(microsecond=0)
    anchor_us = np.datetime64(anchor.replace(tzinfo=None), "us")
    world = scaled_world(users, items, seed)
    u, i = world.users, world.items

    # Events: the model's own labelled interactions first, then more from the same ground truth.
    own = data.interactions(seed) if users >= data.N_USERS and items >= data.N_ITEMS else None
    n_own = min(events, data.N_INTERACTIONS) if own is not None else 0
    rng = np.random.default_rng((seed, *_EVENTS))
    n_new = events - n_own
    new_users = rng.integers(0, users, n_new)
    new_items = rng.integers(0, items, n_new)
    new_device = (rng.random(n_new) < MOBILE_SHARE).astype(np.int64)
    p_click = 1.0 / (1.0 + np.exp(-data.true_logit(world, new_users, new_items, new_device)))
    new_clicked = rng.random(n_new) < p_click
    if own is not None:
        user_id = np.concatenate([own.user_id[:n_own], new_users])
        item_id = np.concatenate([own.item_id[:n_own], new_items])
        device = np.concatenate([own.device[:n_own], new_device])
        clicked = np.concatenate([own.label[:n_own] == 1, new_clicked])
    else:
        user_id, item_id, device, clicked = new_users, new_items, new_device, new_clicked
    window_us = _micros(EVENT_WINDOW)
    offsets = np.random.default_rng((seed, *_TIMES)).integers(0, window_us, events)
    event_time = anchor_us - offsets.astype("timedelta64[us]")

    # Users: the model's columns, then the dressing.
    dressing = np.random.default_rng((seed, *_USER_DRESSING))
    weights = np.array([w for _, w in COUNTRIES])
    country = dressing.choice(len(COUNTRIES), users, p=weights / weights.sum())
    tie_break = (dressing.random(users) < MOBILE_SHARE).astype(np.int64)
    user_updated = anchor_us - np.timedelta64(window_us, "us") - \
        dressing.integers(1, _micros(PROFILE_SPREAD), users).astype("timedelta64[us]")
    on_mobile = np.bincount(user_id, weights=device, minlength=users)
    seen = np.bincount(user_id, minlength=users)
    usual_device = np.where(2 * on_mobile > seen, 1, np.where(2 * on_mobile < seen, 0, tie_break))

    # Items: the model's columns, then a price within the tier.
    dressing = np.random.default_rng((seed, *_ITEM_DRESSING))
    bounds = np.log(np.array(PRICE_RANGES))[i["price_tier"]]
    price = np.round(np.exp(dressing.uniform(bounds[:, 0], bounds[:, 1])), 2)
    item_updated = anchor_us - np.timedelta64(window_us, "us") - \
        dressing.integers(1, _micros(PROFILE_SPREAD), items).astype("timedelta64[us]")

    return DemoData(
        seed=seed, anchor=anchor,
        users={
            "user_id": np.arange(users, dtype=np.int64),
            "age_bucket": u["age_bucket"].astype(np.int32),
            "activity": u["activity"].astype(np.float64),
            "is_premium": u["is_premium"].astype(bool),
            "country": Text(country, tuple(c for c, _ in COUNTRIES)),
            "device": Text(usual_device, data.DEVICES),
            "taste": u["pref"].astype(np.float64),
            "updated_at": user_updated,
        },
        items={
            "item_id": np.arange(items, dtype=np.int64),
            "category": i["category"].astype(np.int32),
            "price_tier": i["price_tier"].astype(np.int32),
            "price": price,
            "popularity": i["popularity"].astype(np.float64),
            "embedding": i["emb"].astype(np.float64),
            "updated_at": item_updated,
        },
        events={
            "id": np.arange(events, dtype=np.int64),
            "user_id": user_id.astype(np.int64),
            "item_id": item_id.astype(np.int64),
            "device": Text(device, data.DEVICES),
            "clicked": clicked.astype(bool),
            "event_time": event_time,
        },
    )


# ----------------------------------------------------------------------------- binary COPY

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
_PG_EPOCH = np.datetime64("2000-01-01T00:00:00", "us")
_FLOAT8_OID = 701


def _field(name: str, column: Column, rows: np.ndarray) -> tuple[list[tuple], dict[str, object]]:
    """(dtype fields, values to set) of one column for the rows `rows`, in binary COPY form:
    each value is preceded by its length (int4, big-endian). Text takes the width of its
    longest label; `_kept_bytes` drops the padding of shorter ones."""
    if isinstance(column, Text):
        encoded = [label.encode() for label in column.labels]
        width, lengths = max(map(len, encoded)), np.array([len(b) for b in encoded], dtype=np.int32)
        codes = column.codes[rows]
        return [(f"{name}.n", ">i4"), (f"{name}.v", f"S{width}")], \
            {f"{name}.n": lengths[codes], f"{name}.v": np.array(encoded, dtype=f"S{width}")[codes]}
    values = column[rows]
    kind = values.dtype
    if values.ndim == 2:  # float8[]: ndim, has-nulls, element type, length, lower bound; elements
        dims = values.shape[1]
        return ([(f"{name}.n", ">i4"), (f"{name}.h", ">i4", (5,)),
                 (f"{name}.e", [("n", ">i4"), ("v", ">f8")], (dims,))],
                {f"{name}.n": 20 + 12 * dims, f"{name}.h": np.array([1, 0, _FLOAT8_OID, dims, 1]),
                 f"{name}.e.n": 8, f"{name}.e.v": values})
    if np.issubdtype(kind, np.datetime64):  # timestamptz: microseconds since 2000-01-01 UTC
        return [(f"{name}.n", ">i4"), (f"{name}.v", ">i8")], \
            {f"{name}.n": 8, f"{name}.v": (values.astype("datetime64[us]") - _PG_EPOCH).astype(np.int64)}
    code = {np.dtype(np.int64): ">i8", np.dtype(np.int32): ">i4", np.dtype(np.float64): ">f8",
            np.dtype(bool): "?"}.get(kind)
    if code is None:
        raise TypeError(f"column {name}: no binary COPY form for {kind}")
    return [(f"{name}.n", ">i4"), (f"{name}.v", code)], {f"{name}.n": np.dtype(code).itemsize, f"{name}.v": values}


def _kept_bytes(record: np.ndarray, columns: dict[str, Column]) -> bytes:
    """The records' bytes without the padding of text values shorter than their field."""
    raw = record.view(np.uint8).reshape(len(record), record.dtype.itemsize)
    keep = None
    for name, column in columns.items():
        if not isinstance(column, Text):
            continue
        start, width = record.dtype.fields[f"{name}.v"][1], record.dtype[f"{name}.v"].itemsize
        lengths = record[f"{name}.n"].astype(np.int32)
        if (lengths == width).all():
            continue
        if keep is None:
            keep = np.ones(raw.shape, dtype=bool)
        keep[:, start:start + width] = np.arange(width) < lengths[:, None]
    return raw.tobytes() if keep is None else raw[keep].tobytes()


def copy_chunks(columns: dict[str, Column], order: np.ndarray | None = None,
                chunk_rows: int = _CHUNK_ROWS) -> Iterator[bytes]:
    """The rows of `columns` (in `order`, default as they are) as PostgreSQL's binary COPY
    stream, in pieces of `chunk_rows` rows (the first piece is the header, the last the trailer)."""
    n = len(next(iter(columns.values())))
    order = np.arange(n) if order is None else order
    yield _COPY_HEADER
    for start in range(0, n, chunk_rows):
        rows = order[start:start + chunk_rows]
        fields: list[tuple] = [("count", ">i2")]
        values: dict[str, object] = {"count": len(columns)}
        for name, column in columns.items():
            f, v = _field(name, column, rows)
            fields += f
            values.update(v)
        record = np.zeros(len(rows), dtype=np.dtype(fields))
        for key, value in values.items():
            if key.count(".") == 2:  # a sub-field of an array's elements
                top, sub = key.rsplit(".", 1)
                record[top][sub] = value
            else:
                record[key] = value
        yield _kept_bytes(record, columns)
    yield _COPY_TRAILER


async def _stream(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


# ----------------------------------------------------------------------------- loading


@dataclass
class LoadReport:
    """What `load` found or did. `loaded`: whether it wrote the tables (False: already there)."""

    loaded: bool
    reason: str
    seed: int
    users: int
    items: int
    events: int
    anchor: datetime
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)  # generate, copy, index, ... -> seconds

    def line(self) -> str:
        sizes = f"{self.users:,} users, {self.items:,} items, {self.events:,} events (seed {self.seed})"
        if not self.loaded:
            return (f"{sizes} already loaded at {self.anchor:%Y-%m-%d %H:%M:%S} UTC; "
                    f"nothing to do ({self.seconds:.2f} s)")
        steps = ", ".join(f"{name} {secs:.2f} s" for name, secs in self.steps.items())
        return f"{sizes} loaded in {self.seconds:.1f} s ({self.reason}; {steps})"


async def _current(conn) -> dict | None:
    """The info row when it and every demo table exist, else None."""
    present = await conn.fetchval(
        "SELECT count(*) FROM unnest($1::text[]) AS t(name) WHERE to_regclass(name) IS NOT NULL",
        [INFO_TABLE, *TABLES])
    if present != len(TABLES) + 1:
        return None
    row = await conn.fetchrow(f"SELECT *, now() - anchor AS age FROM {INFO_TABLE}")
    return dict(row) if row else None


def _verdict(current: dict | None, wanted: tuple[int, int, int, int], max_age: timedelta | None) -> str | None:
    """Why the data must be (re)loaded, or None when what is there is what is wanted."""
    if current is None:
        return "no demo data yet"
    if current["generator"] != GENERATOR_VERSION:
        return f"replacing generator version {current['generator']}'s data"
    have = (current["seed"], current["users"], current["items"], current["events"])
    if have != wanted:
        return (f"replacing seed {have[0]}'s {have[1]:,} users, {have[2]:,} items, {have[3]:,} events")
    if max_age is not None and current["age"] > max_age:
        return f"refreshing data anchored {current['age'].days} days ago"
    return None


async def load(dsn: str, users: int = DEFAULT_USERS, items: int = DEFAULT_ITEMS, events: int = DEFAULT_EVENTS,
               seed: int = data.SEED, *, now: datetime | None = None, max_age: timedelta | None = MAX_AGE,
               force: bool = False, timeout: float = 300.0) -> LoadReport:
    """Load the demo data into the database at `dsn`, unless it holds it already (same seed,
    sizes and generator, anchored less than `max_age` ago; None: any age). `force`: load anyway.
    `now`: the anchor (default: now)."""
    import asyncpg

    started = time.monotonic()
    wanted = (seed, users, items, events)
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        current = await _current(conn)
        reason = "forced" if force else _verdict(current, wanted, max_age)
        if reason is None:
            return LoadReport(False, "already loaded", *wanted, anchor=current["anchor"],
                              seconds=time.monotonic() - started)
        steps: dict[str, float] = {}
        mark = time.monotonic()
        demo = generate(users, items, events, seed, now)
        steps["generate"] = time.monotonic() - mark
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            if not force:  # another loader may have done it while this one generated
                current = await _current(conn)
                if _verdict(current, wanted, max_age) is None:
                    return LoadReport(False, "already loaded", *wanted, anchor=current["anchor"],
                                      seconds=time.monotonic() - started)
            # A session holding a demo table (a long query) makes this fail after a while, not hang.
            await conn.execute("SET LOCAL lock_timeout = '30s'; SET LOCAL maintenance_work_mem = '256MB'")
            mark = time.monotonic()
            await conn.execute(_INFO_DDL)
            await conn.execute(f"DROP TABLE IF EXISTS {', '.join(reversed(TABLES))}")
            for table, columns in demo.tables.items():
                await conn.execute(_create_table_sql(table, keyed=False, if_not_exists=False))
                # FREEZE: the table is new in this transaction, so its rows can be written as
                # already visible to everyone (no hint-bit rewrite on first read).
                keys = TABLES[table].get("order", ())
                order = np.lexsort([columns[key] for key in reversed(keys)]) if keys else None
                await conn.copy_to_table(table, source=_stream(copy_chunks(columns, order)), columns=list(columns),
                                         format="binary", freeze=True, timeout=timeout)
            steps["copy"] = time.monotonic() - mark
            mark = time.monotonic()
            for table in TABLES:
                for sql in _index_sqls(table, with_key=True, if_not_exists=False):
                    await conn.execute(sql, timeout=timeout)
            steps["index"] = time.monotonic() - mark
            mark = time.monotonic()
            await conn.execute(f"ANALYZE {', '.join(TABLES)}", timeout=timeout)
            steps["analyze"] = time.monotonic() - mark
            seconds = time.monotonic() - started
            await conn.execute(
                f"""INSERT INTO {INFO_TABLE} (singleton, seed, users, items, events, generator, anchor, loaded_at,
                                              load_seconds)
                    VALUES (true, $1, $2, $3, $4, $5, $6, now(), $7)
                    ON CONFLICT (singleton) DO UPDATE SET seed = $1, users = $2, items = $3, events = $4,
                        generator = $5, anchor = $6, loaded_at = now(), load_seconds = $7""",
                seed, users, items, events, GENERATOR_VERSION, demo.anchor, seconds)
        return LoadReport(True, reason, *wanted, anchor=demo.anchor, seconds=time.monotonic() - started, steps=steps)
    finally:
        await conn.close()


# ----------------------------------------------------------------------------- command line


def _count(text: str) -> int:
    return int(text.replace("_", "").replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_serving_tools.demo_data",
                                     description="Load the Feature Store's demo data (users, items, interaction "
                                                 "events) into PostgreSQL; nothing to do when it is there already.")
    parser.add_argument("--dsn", help="PostgreSQL URL (default: DATABASE_URL, else the one make up uses)")
    parser.add_argument("--users", type=_count, default=DEFAULT_USERS, help="default: %(default)s")
    parser.add_argument("--items", type=_count, default=DEFAULT_ITEMS, help="default: %(default)s")
    parser.add_argument("--events", type=_count, default=DEFAULT_EVENTS, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=data.SEED, help="default: the demo model's, %(default)s")
    parser.add_argument("--max-age-days", type=float, default=MAX_AGE / timedelta(days=1),
                        help="reload the same data when it was anchored longer ago than this (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="load even when the same data is there")
    args = parser.parse_args(argv)
    dsn = args.dsn or os.environ.get("DATABASE_URL")
    if not dsn:
        from .devservices import ensure_postgres
        from .paths import STATE_DIR

        dsn = ensure_postgres(STATE_DIR)
    try:
        report = asyncio.run(load(dsn, args.users, args.items, args.events, args.seed, force=args.force,
                                  max_age=timedelta(days=args.max_age_days)))
    except ValueError as error:
        parser.error(str(error))
    print(f"demo data: {report.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

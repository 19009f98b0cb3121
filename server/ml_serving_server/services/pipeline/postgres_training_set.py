"""Training sets over PostgreSQL (asyncpg): the point-in-time join of an entity dataframe with the
feature views' source queries, streamed through a server-side cursor.

    SELECT e.__row, e.__k0::text, <micros of e.__ts>, <extra columns>, <micros of v0.__t>, v0.__f0, ...
    FROM (<entity dataframe: __row, __k0.., __ts, extra columns>) AS e
    LEFT JOIN LATERAL (
        SELECT q.<event time> AS __t, q.<feature>, ...
        FROM (<view's query>) AS q
        WHERE q.<join key> = e.__k0 AND q.<event time> <= e.__ts
          [AND q.<event time> >= e.__ts - <ttl>]
        ORDER BY q.<event time> DESC LIMIT 1) AS v0 ON true
    ...
    [ORDER BY e.__row: inline rows]

The entity dataframe is `unnest($1::bigint[], ..., $n::timestamptz[]) WITH ORDINALITY` for
inline rows, else the caller's query, its columns renamed by position
(`FROM (<query>) AS s(__e0, __e1, ...)`), so no name of theirs can collide with ours. With an
index on the source's (join key, event time) each row is one index probe. A query's rows are not
sorted again (a million-row sort would come before the first row): the LATERAL join is a nested
loop over the entity rows, so in practice they come in the query's order, each with its index.
Times leave the database as microseconds since the epoch and entity ids as text, computed there.

The whole answer is one statement in a READ ONLY transaction with `statement_timeout`
(PIPELINE_TRAINING_SET_STATEMENT_TIMEOUT_SECONDS, per fetch) and an overall deadline
(PIPELINE_TRAINING_SET_TIMEOUT_SECONDS); rows are fetched `batch_rows` at a time, so a million rows
never sit in memory at once. The entity query runs with the source database role's rights: in
production that role should only read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator

import asyncpg
from asyncpg import exceptions as pg_errors

from ...errors import DeadlineExceeded, InvalidArgument
from .domain.errors import ErrorReason
from .domain.feature_views import ValueType
from .domain.ports import SourceUnavailable
from .domain.training import Column, ColumnKind, TrainingBatch, TrainingSetPlan
from .domain.values import coerce
from .postgres_store import _UNAVAILABLE_ERRORS, _ident

log = logging.getLogger(__name__)

_KINDS = {
    "int2": ColumnKind.INT, "int4": ColumnKind.INT, "int8": ColumnKind.INT,
    "float4": ColumnKind.FLOAT, "float8": ColumnKind.FLOAT, "numeric": ColumnKind.FLOAT,
    "text": ColumnKind.STRING, "varchar": ColumnKind.STRING, "bpchar": ColumnKind.STRING, "name": ColumnKind.STRING,
    "bool": ColumnKind.BOOL, "bytea": ColumnKind.BYTES,
    "timestamptz": ColumnKind.TIMESTAMP, "timestamp": ColumnKind.TIMESTAMP, "date": ColumnKind.TIMESTAMP,
    "int2[]": ColumnKind.INT_LIST, "int4[]": ColumnKind.INT_LIST, "int8[]": ColumnKind.INT_LIST,
    "float4[]": ColumnKind.FLOAT_LIST, "float8[]": ColumnKind.FLOAT_LIST, "numeric[]": ColumnKind.FLOAT_LIST,
    "text[]": ColumnKind.STRING_LIST, "varchar[]": ColumnKind.STRING_LIST, "bpchar[]": ColumnKind.STRING_LIST,
}
_MESSAGE_CHARS = 300


def _pg_message(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS] + "…"


_CASTS = {ColumnKind.INT: "::int8", ColumnKind.FLOAT: "::float8", ColumnKind.STRING: "::text",
          ColumnKind.INT_LIST: "::int8[]", ColumnKind.FLOAT_LIST: "::float8[]", ColumnKind.STRING_LIST: "::text[]"}


def _micros(expression: str) -> str:
    """A time as microseconds since the epoch (a timestamp without time zone read as UTC)."""
    return f"(extract(epoch FROM {expression}) * 1000000)::int8"


def training_set_sql(plan: TrainingSetPlan) -> tuple[str, list[object]]:
    """The statement and its parameters (pure: unit tested without a database). Its columns:
    row index, the entity ids as text, the timestamp (micros), the query's extra columns (cast to
    one type per kind; times in micros), then per view its event time (micros) and features."""
    params: list[object] = []

    def param(value: object, cast: str) -> str:
        params.append(value)
        return f"${len(params)}::{cast}"

    keys = [f"__k{j}" for j in range(len(plan.join_keys))]
    output = ["e.__row", *(f"e.{k}::text" for k in keys), _micros("e.__ts")]
    order = ""
    if plan.query:
        renamed = ", ".join(f"__e{i}" for i in range(plan.query_columns))
        selected = [f"s.__e{p} AS {k}" for p, k in zip(plan.key_positions, keys)]
        selected.append(f"s.__e{plan.timestamp_position}::timestamptz AS __ts")
        selected += [f"s.__e{p} AS __x{n}" for n, p in enumerate(plan.column_positions)]
        entity = (f"SELECT row_number() OVER () - 1 AS __row, {', '.join(selected)} "
                  f"FROM ({plan.query}) AS s({renamed})")
        for n, kind in enumerate(plan.column_kinds):
            column = f"e.__x{n}"
            output.append(_micros(f"{column}::timestamptz") if kind is ColumnKind.TIMESTAMP
                          else column + _CASTS.get(kind, ""))
    else:
        arrays = [param(list(column), "bigint[]" if kind is ValueType.INT else "text[]")
                  for column, kind in zip(plan.keys, plan.key_types)]
        arrays.append(param(list(plan.timestamps), "timestamptz[]"))
        entity = (f"SELECT u.__row - 1 AS __row, {', '.join(f'u.{k}' for k in keys)}, u.__ts "
                  f"FROM unnest({', '.join(arrays)}) WITH ORDINALITY AS u({', '.join(keys)}, __ts, __row)")
        order = "\nORDER BY e.__row"  # inline rows come back in their order (at most 10,000 to sort)
    joins = []
    for index, selection in enumerate(plan.views):
        view = selection.view
        key = keys[plan.join_keys.index(view.entity.join_key)]
        event_time = f"q.{_ident(view.source.event_time_column)}"
        columns = ", ".join([f"{event_time} AS __t"] +
                            [f"q.{_ident(f.name)} AS __f{j}" for j, f in enumerate(selection.features)])
        conditions = [f"q.{_ident(view.entity.join_key)} = e.{key}", f"{event_time} <= e.__ts"]
        if view.ttl is not None:
            conditions.append(f"{event_time} >= e.__ts - {param(view.ttl, 'interval')}")
        joins.append(f"LEFT JOIN LATERAL (SELECT {columns} FROM ({view.source.query}) AS q "
                     f"WHERE {' AND '.join(conditions)} ORDER BY {event_time} DESC LIMIT 1) AS v{index} ON true")
        output.append(_micros(f"v{index}.__t"))
        output += [f"v{index}.__f{j}" for j in range(len(selection.features))]
    sql = f"SELECT {', '.join(output)}\nFROM ({entity}) AS e\n" + "\n".join(joins) + order
    return sql, params


class PostgresTrainingSetSource:
    """TrainingSetSource on the feature source's pool."""

    def __init__(self, pool: asyncpg.Pool, *, statement_timeout_s: float, timeout_s: float):
        self._pool = pool
        self._statement_timeout = statement_timeout_s
        self._timeout = timeout_s

    async def describe_query(self, query: str) -> list[Column]:
        try:
            async with self._pool.acquire(timeout=self._statement_timeout) as conn:
                async with conn.transaction(readonly=True):
                    await self._limit(conn)
                    statement = await conn.prepare(f"SELECT * FROM ({query}) AS e",
                                                   timeout=self._statement_timeout)
                    attributes = statement.get_attributes()
        except pg_errors.QueryCanceledError:
            raise DeadlineExceeded("entity_query: took too long to plan", reason=ErrorReason.QUERY_TIMEOUT) from None
        except _UNAVAILABLE_ERRORS as exc:
            log.debug("training set source unavailable: %s", _pg_message(exc))
            raise SourceUnavailable() from exc
        except pg_errors.PostgresError as exc:
            raise InvalidArgument("entity_query", f"does not compile: {_pg_message(exc)}") from None
        return [Column(a.name, _KINDS.get(a.type.name, ColumnKind.OTHER), a.type.name) for a in attributes]

    async def _limit(self, conn: asyncpg.Connection) -> None:
        await conn.execute(f"SET LOCAL statement_timeout = {int(self._statement_timeout * 1000)}")

    async def training_rows(self, plan: TrainingSetPlan, batch_rows: int) -> AsyncIterator[TrainingBatch]:
        sql, params = training_set_sql(plan)
        decode = _decoder(plan)
        deadline = time.monotonic() + self._timeout
        started = False
        pending: asyncio.Future | None = None
        try:
            async with self._pool.acquire(timeout=self._statement_timeout) as conn:
                async with conn.transaction(readonly=True):
                    await self._limit(conn)
                    cursor = await conn.cursor(sql, *params, timeout=self._statement_timeout)
                    started = True

                    def fetch() -> asyncio.Future:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise asyncio.TimeoutError("training set deadline")
                        return asyncio.ensure_future(cursor.fetch(batch_rows,
                                                                  timeout=min(left, self._statement_timeout + 5)))

                    # One batch ahead: PostgreSQL computes the next batch while this one is encoded and sent.
                    pending = fetch()
                    try:
                        while True:
                            records = await pending
                            pending = None
                            if not records:
                                return
                            if len(records) == batch_rows:
                                pending = fetch()
                            yield decode(records)
                            if len(records) < batch_rows:
                                return
                    finally:
                        if pending is not None:
                            pending.cancel()
                            await asyncio.gather(pending, return_exceptions=True)
        except (pg_errors.QueryCanceledError, asyncio.TimeoutError):
            raise DeadlineExceeded(
                f"the training set took longer than allowed ({self._statement_timeout:g} s per fetch, "
                f"{self._timeout:g} s in all)", reason=ErrorReason.QUERY_TIMEOUT) from None
        except pg_errors.ReadOnlySQLTransactionError:
            raise InvalidArgument("entity_query", "must only read (it runs in a read-only transaction)") from None
        except _UNAVAILABLE_ERRORS as exc:
            log.debug("training set source unavailable: %s", _pg_message(exc))
            raise SourceUnavailable() from exc
        except pg_errors.PostgresError as exc:
            if plan.query and started:
                raise InvalidArgument("entity_query", f"failed: {_pg_message(exc)}") from None
            raise RuntimeError(f"the training set query failed: {_pg_message(exc)}") from exc


_PLAIN = {ValueType.INT: int, ValueType.FLOAT: float, ValueType.STRING: str, ValueType.BOOL: bool}


def _typed(feature, values: list, view: str) -> list:
    """The column in the feature's declared type: as it came when it already is (the common case,
    checked in one pass), else value by value (coerce: a Decimal, an int for a float, ...)."""
    plain = _PLAIN.get(feature.type)
    if plain is not None and all(value is None or type(value) is plain for value in values):
        return values
    return [coerce(feature, value, view=view) for value in values]


def _decoder(plan: TrainingSetPlan):
    keys = len(plan.join_keys)
    extra = len(plan.column_names) if plan.query else 0
    at = 2 + keys + extra
    layout = []  # per view: (position of its event time, [(position, feature)])
    for selection in plan.views:
        layout.append((at, [(at + 1 + j, f) for j, f in enumerate(selection.features)], selection.view.name))
        at += 1 + len(selection.features)
    inline = plan.inline_columns
    inline_width = len(plan.column_names) if not plan.query else 0

    def decode(records) -> TrainingBatch:
        columns = list(zip(*records))
        row_indexes = list(columns[0])
        if plan.query:
            extras = [list(columns[2 + keys + n]) for n in range(extra)]
        else:
            extras = [[inline[r][n] for r in row_indexes] for n in range(inline_width)]
        event_times, values = [], []
        for time_at, features, view in layout:
            event_times.append(list(columns[time_at]))
            values += [_typed(feature, list(columns[p]), view) for p, feature in features]
        return TrainingBatch(row_indexes, [list(columns[1 + j]) for j in range(keys)], list(columns[1 + keys]),
                             extras, event_times, values)

    return decode

"""Point-in-time correct training sets.

Given an entity dataframe (rows of entity keys and a timestamp, inline or a SQL query over the
source database) and feature references ("view:feature" or a whole "view"), every row gets, per
view, the features of the view's source row of that entity with the greatest event time at or
before the row's timestamp: never a later one. With a TTL, a row whose event time is more than
the TTL before the timestamp is not used (the value would have expired online): the view has no
value for that row. The join runs in the source database (TrainingSetSource); this module
checks the request, resolves the entity dataframe's columns and refuses views that cannot be
read as of a past time (FeatureView.point_in_time_capable: an aggregate relative to now()).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import AsyncIterator, Protocol, Sequence

from ....errors import FailedPrecondition, InvalidArgument, listed, quoted
from .errors import ErrorReason
from .feature_views import _SQL_NOT_CODE, Feature, FeatureView, ValueType
from .schema import FeatureSchema
from .values import BadKey, EntityKey, parse_key

MAX_INLINE_ROWS = 10_000
MAX_QUERY_CHARS = 20_000
MAX_FEATURE_REFS = 100
MAX_FEATURES = 1000
MAX_COLUMNS = 64  # extra columns of the entity dataframe
MAX_COLUMN_NAME_CHARS = 63


class ColumnKind(enum.Enum):
    """The type of an entity dataframe's column, as the answer carries it."""

    INT = "int"
    FLOAT = "float"
    STRING = "string"
    BOOL = "bool"
    BYTES = "bytes"
    TIMESTAMP = "timestamp"
    INT_LIST = "int_list"
    FLOAT_LIST = "float_list"
    STRING_LIST = "string_list"
    OTHER = "other"  # anything else (json, uuid, ...): refused, cast it in the query


@dataclass(frozen=True)
class Column:
    """One column of an entity query, as the source describes it."""

    name: str
    kind: ColumnKind
    type_name: str = ""  # the database's name of its type, for messages


@dataclass(frozen=True)
class ViewSelection:
    """One requested view and its requested features, in answer order."""

    view: FeatureView
    features: tuple[Feature, ...]


@dataclass(frozen=True)
class InlineRow:
    """One inline entity row: its keys by join key (typed), timestamp and extra columns."""

    entity_ids: dict[str, str]
    timestamp: datetime | None
    columns: dict[str, tuple[ColumnKind, object]] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingSetPlan:
    """What the source computes: views, the entity dataframe and where each of its columns goes.

    Inline: `keys[j]` lists the typed keys of join key j, row by row, `timestamps` the times.
    Query: `query`'s columns by position: `key_positions[j]` is join key j's column,
    `timestamp_position` the timestamp's, `column_positions` the extra columns'."""

    views: tuple[ViewSelection, ...]
    join_keys: tuple[str, ...]
    key_types: tuple[ValueType, ...]
    column_names: tuple[str, ...]
    column_kinds: tuple[ColumnKind, ...]
    query: str = ""
    query_columns: int = 0
    key_positions: tuple[int, ...] = ()
    timestamp_position: int = 0
    column_positions: tuple[int, ...] = ()
    keys: tuple[tuple[EntityKey | None, ...], ...] = ()
    timestamps: tuple[datetime | None, ...] = ()
    inline_columns: tuple[tuple[object, ...], ...] = ()  # row by row, in column_names order (times: micros)


@dataclass(slots=True)
class TrainingBatch:
    """Rows of the answer, column by column (entry i of every list is row i). Times are
    microseconds since the epoch (UTC), as the database computes them: a million rows are not
    turned into a million datetimes."""

    row_indexes: list[int]
    entity_ids: list[list[str | None]]  # per join key, as text
    timestamps: list[int | None]
    columns: list[list[object]]  # per extra column, typed per its kind (a timestamp: microseconds)
    event_times: list[list[int | None]]  # per view: its source row's event time; None: no value as of then
    values: list[list[object]]  # per requested feature (views in order), typed; None: null or no value

    def __len__(self) -> int:
        return len(self.row_indexes)

    def rows(self, plan: "TrainingSetPlan") -> list[tuple]:
        """Row by row (for tests and small answers): (row index, entity ids, timestamp, columns,
        per view None or (event time, values))."""
        answer = []
        for i, row_index in enumerate(self.row_indexes):
            views, at = [], 0
            for v, selection in enumerate(plan.views):
                width = len(selection.features)
                event_time = self.event_times[v][i]
                views.append(None if event_time is None else
                             (event_time, tuple(self.values[at + f][i] for f in range(width))))
                at += width
            answer.append((row_index, tuple(ids[i] for ids in self.entity_ids), self.timestamps[i],
                           tuple(column[i] for column in self.columns), tuple(views)))
        return answer


class TrainingSetSource(Protocol):
    """The point-in-time join, in the source database."""

    async def describe_query(self, query: str) -> list[Column]:
        """The entity query's columns, without running it; InvalidArgument (entity_query) if it does
        not compile or does not only read."""

    def training_rows(self, plan: TrainingSetPlan, batch_rows: int) -> AsyncIterator[TrainingBatch]:
        """The answer in batches of at most `batch_rows`, in the entity dataframe's order, never
        all in memory (a server-side cursor)."""


@dataclass
class TrainingSet:
    plan: TrainingSetPlan
    batches: AsyncIterator[TrainingBatch]


class TrainingSets:
    def __init__(self, schema: FeatureSchema, source: TrainingSetSource, *, batch_rows: int = 5000):
        self._schema, self._source, self._batch_rows = schema, source, batch_rows

    async def training_set(self, features: Sequence[str], *, rows: Sequence[InlineRow] | None = None,
                           query: str = "", timestamp_column: str = "") -> TrainingSet:
        """Exactly one of `rows` (inline) and `query`. Checks everything before the source runs."""
        views = self.select(features)
        join_keys: dict[str, ValueType] = {}
        for selection in views:
            entity = selection.view.entity
            known = join_keys.setdefault(entity.join_key, entity.key_type)
            if known is not entity.key_type:
                raise InvalidArgument("features", f"views disagree on the type of join key {entity.join_key}")
        if (rows is None) == (not query):
            raise InvalidArgument("entity_dataframe", "give exactly one of entity_rows and entity_query")
        if rows is not None:
            plan = self._inline(views, join_keys, rows)
        else:
            plan = await self._query(views, join_keys, query, timestamp_column)
        return TrainingSet(plan, self._source.training_rows(plan, self._batch_rows))

    async def columns(self, features: Sequence[str], query: str, timestamp_column: str) -> dict[str, list]:
        """A whole training set, column by column (a retraining's TrainingSetReader): join keys (as
        text), the timestamp (microseconds) and the query's other columns under their names, each
        feature under its "view:feature" reference; None for a null or no value as of then."""
        answer = await self.training_set(features, query=query, timestamp_column=timestamp_column)
        plan = answer.plan
        names = [*plan.join_keys, timestamp_column or "timestamp", *plan.column_names,
                 *(f"{s.view.name}:{f.name}" for s in plan.views for f in s.features)]
        out: dict[str, list] = {name: [] for name in names}
        async for batch in answer.batches:
            for name, values in zip(names, [*batch.entity_ids, batch.timestamps, *batch.columns, *batch.values]):
                out[name].extend(values)
        return out

    def select(self, references: Sequence[str]) -> tuple[ViewSelection, ...]:
        if not references:
            raise InvalidArgument("features", "name at least one feature (view:feature) or view")
        if len(references) > MAX_FEATURE_REFS:
            raise InvalidArgument("features", f"at most {MAX_FEATURE_REFS} references, got {len(references)}",
                                  reason=ErrorReason.UNKNOWN_FEATURE)
        chosen: dict[str, dict[str, Feature]] = {}
        for index, reference in enumerate(references):
            path = f"features[{index}]"
            name, _, feature_name = reference.partition(":")
            view = self._schema.view(name, field=path)
            if not view.point_in_time_capable:
                raise FailedPrecondition(
                    f"{path}: feature view {view.name} cannot be read as of a past time: its source "
                    f"{'is declared point_in_time: false' if view.point_in_time is False else 'aggregates (GROUP BY) or reads the clock (now())'}",
                    reason=ErrorReason.VIEW_NOT_POINT_IN_TIME, metadata={"field": path, "feature_view": view.name})
            selected = chosen.setdefault(view.name, {})
            declared = {feature.name: feature for feature in view.features}
            if not feature_name:
                selected.update(declared)
            elif feature_name in declared:
                selected[feature_name] = declared[feature_name]
            else:
                raise InvalidArgument(path, f"feature view {view.name} has no feature {quoted(feature_name)}",
                                      reason=ErrorReason.UNKNOWN_FEATURE)
        total = sum(len(selected) for selected in chosen.values())
        if total > MAX_FEATURES:
            raise InvalidArgument("features", f"at most {MAX_FEATURES} features, got {total}")
        # Each view's features in declaration order, whatever order they were asked in.
        selections = []
        for name, selected in chosen.items():
            view = self._schema.view(name, field="features")
            selections.append(ViewSelection(view, tuple(f for f in view.features if f.name in selected)))
        return tuple(selections)

    # ----- the two forms of the entity dataframe -----

    @staticmethod
    def _inline(views, join_keys: dict[str, ValueType], rows: Sequence[InlineRow]) -> TrainingSetPlan:
        if not rows:
            raise InvalidArgument("entity_rows.rows", "give 1 to 10,000 rows")
        if len(rows) > MAX_INLINE_ROWS:
            raise InvalidArgument("entity_rows.rows", f"at most {MAX_INLINE_ROWS} rows inline, got {len(rows)}; "
                                  "a larger entity dataframe is an entity_query", reason=ErrorReason.TOO_MANY_ENTITIES)
        by_key = {join_key: next(s.view for s in views if s.view.entity.join_key == join_key) for join_key in join_keys}
        keys: list[list[EntityKey]] = [[] for _ in join_keys]
        kinds: dict[str, ColumnKind] = {}
        for index, row in enumerate(rows):
            path = f"entity_rows.rows[{index}]"
            if row.timestamp is None:
                raise InvalidArgument(f"{path}.timestamp", "is required: the time the features are read as of")
            for name in row.entity_ids:
                if name not in join_keys:
                    raise InvalidArgument(f"{path}.entity_ids", f"{quoted(name)} is not the join key of a requested "
                                          f"view ({listed(join_keys)})")
            for position, join_key in enumerate(join_keys):
                text = row.entity_ids.get(join_key)
                if text is None:
                    raise InvalidArgument(f"{path}.entity_ids", f"has no {join_key} (the join key of view "
                                          f"{by_key[join_key].name})")
                try:
                    keys[position].append(parse_key(by_key[join_key], text))
                except BadKey as error:
                    raise InvalidArgument(f"{path}.entity_ids[{join_key}]", f"{error}, got {quoted(text)}") from None
            for name, (kind, _) in row.columns.items():
                _check_column_name(f"{path}.columns", name, join_keys)
                if kind is None:
                    continue  # null: no type to agree with
                if kinds.setdefault(name, kind) is not kind:
                    raise InvalidArgument(f"{path}.columns[{name}]", f"is a {kind.value}, but a {kinds[name].value} "
                                          f"in an earlier row")
            if len(kinds) > MAX_COLUMNS:
                raise InvalidArgument(f"{path}.columns", f"at most {MAX_COLUMNS} extra columns")
        names = tuple(dict.fromkeys(name for row in rows for name in row.columns))
        for name in names:
            kinds.setdefault(name, ColumnKind.STRING)  # only nulls
        inline_columns = tuple(tuple(_inline_value(row.columns[name][1]) if name in row.columns else None
                                     for name in names) for row in rows)
        return TrainingSetPlan(views, tuple(join_keys), tuple(join_keys.values()), names,
                               tuple(kinds[name] for name in names), keys=tuple(tuple(k) for k in keys),
                               timestamps=tuple(row.timestamp for row in rows), inline_columns=inline_columns)

    async def _query(self, views, join_keys: dict[str, ValueType], query: str, timestamp_column: str
                     ) -> TrainingSetPlan:
        query = query.strip().removesuffix(";").rstrip()
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidArgument("entity_query", f"must be at most {MAX_QUERY_CHARS} characters, got {len(query)}")
        if ";" in _SQL_NOT_CODE.sub(" ", query):
            raise InvalidArgument("entity_query", "must be a single statement (a `;` may only end it)")
        columns = await self._source.describe_query(query)
        names = [column.name for column in columns]
        for name in names:
            if names.count(name) > 1:
                raise InvalidArgument("entity_query", f"returns two columns named {quoted(name)}")
        position = {column.name: index for index, column in enumerate(columns)}
        key_positions = []
        for join_key, key_type in join_keys.items():
            if join_key not in position:
                raise InvalidArgument("entity_query", f"returns no column {join_key} (the join key of view "
                                      f"{next(s.view.name for s in views if s.view.entity.join_key == join_key)}); "
                                      f"its columns: {listed(names)}")
            column = columns[position[join_key]]
            wanted = ColumnKind.INT if key_type is ValueType.INT else ColumnKind.STRING
            if column.kind is not wanted:
                raise InvalidArgument("entity_query", f"column {join_key} is {column.type_name or column.kind.value}, "
                                      f"but the join key is {'an integer' if wanted is ColumnKind.INT else 'text'}")
            key_positions.append(position[join_key])
        if timestamp_column:
            if timestamp_column not in position:
                raise InvalidArgument("timestamp_column", f"the entity query returns no column "
                                      f"{quoted(timestamp_column)}; its columns: {listed(names)}")
            if columns[position[timestamp_column]].kind is not ColumnKind.TIMESTAMP:
                raise InvalidArgument("timestamp_column", f"column {timestamp_column} is not a timestamp")
            time_position = position[timestamp_column]
        else:
            found = [i for i, c in enumerate(columns) if c.kind is ColumnKind.TIMESTAMP and c.name not in join_keys]
            if not found:
                raise InvalidArgument("entity_query", f"returns no timestamp column (timestamptz, timestamp or date); "
                                      f"its columns: {listed(names)}")
            time_position = found[0]
        extra = [i for i in range(len(columns)) if i not in key_positions and i != time_position]
        if len(extra) > MAX_COLUMNS:
            raise InvalidArgument("entity_query", f"at most {MAX_COLUMNS} extra columns, got {len(extra)}")
        for i in extra:
            _check_column_name("entity_query", columns[i].name, join_keys)
            if columns[i].kind is ColumnKind.OTHER:
                raise InvalidArgument("entity_query", f"column {quoted(columns[i].name)} is of type "
                                      f"{columns[i].type_name}, which a training set does not carry: cast it "
                                      f"(to text, a number, ...)")
        return TrainingSetPlan(views, tuple(join_keys), tuple(join_keys.values()),
                               tuple(columns[i].name for i in extra), tuple(columns[i].kind for i in extra),
                               query=query, query_columns=len(columns), key_positions=tuple(key_positions),
                               timestamp_position=time_position, column_positions=tuple(extra))


def micros(value: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (a naive one is UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return (value - _EPOCH) // _MICROSECOND


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def _inline_value(value: object) -> object:
    return micros(value) if isinstance(value, datetime) else value


def _check_column_name(path: str, name: str, join_keys) -> None:
    if not name or len(name) > MAX_COLUMN_NAME_CHARS:
        raise InvalidArgument(path, f"a column name must be 1 to {MAX_COLUMN_NAME_CHARS} characters, got {quoted(name)}")
    if name in join_keys:
        raise InvalidArgument(path, f"{quoted(name)} is a join key, not an extra column")


"""Feature views declared in files: every `*.yaml` of a folder (features/ of the checkout by default).

    views:
      - name: user_profile
        entity: {name: user, join_key: user_id, key_type: int}
        features:
          - {name: age_bucket, type: int}
          - {name: taste, type: embedding, dimension: 4}
        source:
          query: SELECT user_id, age_bucket, taste, updated_at FROM demo_users
          event_time_column: updated_at
        ttl: 1d                 # seconds, or 90s, 15m, 12h, 7d, 1d12h; absent: never expires
        compute_on_miss: true
        materialization_schedule: "*/15 * * * *"
        tags: {team: recsys}
        point_in_time: true     # readable as of a past time (training sets); absent: false for a
                                # query with GROUP BY or now() (see FeatureView.point_in_time_capable)

Any mistake (YAML that does not parse, an unknown key, a wrong type, a broken rule, one name
twice) raises DeclarationError naming the file, the line and the field:

    features/users.yaml:12: views[0].features[3].type: must be one of bool, embedding, ...

The lines come from pyyaml's composed nodes: the start mark of every key and list item is
kept by its path, and an error on a field points at the nearest one that exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import yaml

from .domain.errors import InvalidDefinition, render_path
from .domain.errors import Path as FieldPath
from .domain.feature_views import Entity, Feature, FeatureView, Source, ValueType
from .domain.schema import FeatureSchema

EMBEDDING = "embedding"
"""A type name of files only: a float list of a fixed `dimension`."""
_TYPE_NAMES = {**{t.value: t for t in ValueType}, EMBEDDING: ValueType.FLOAT_LIST}
MAX_DEPTH = 16
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")

_FILE_KEYS = {"views"}
_VIEW_KEYS = {"name", "description", "entity", "features", "source", "ttl", "compute_on_miss",
              "materialization_schedule", "tags", "point_in_time"}
_ENTITY_KEYS = {"name", "join_key", "key_type", "description"}
_FEATURE_KEYS = {"name", "type", "description", "dimension"}
_SOURCE_KEYS = {"query", "event_time_column"}


class DeclarationError(ValueError):
    """A declaration file the server cannot start with."""

    def __init__(self, file: str, line: int | None, field_path: str, message: str):
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {field_path}: {message}" if field_path else f"{where}: {message}")
        self.file, self.line, self.field, self.problem = file, line, field_path, message


def load_directory(folder: Path) -> FeatureSchema:
    """Every view declared in the folder's `*.yaml` files (not its subfolders)."""
    if not folder.is_dir():
        raise DeclarationError(_shown(folder), None, "", "no such folder of feature view declarations "
                                                         "(PIPELINE_FEATURE_VIEWS_DIR)")
    views: list[FeatureView] = []
    declared: dict[str, str] = {}  # view name -> where
    for path in sorted(folder.glob("*.yaml")):
        if path.name.startswith("."):
            continue  # an editor's temporary file
        document = _Document.read(path)
        for index, view in enumerate(document.views()):
            where = f"{document.file}:{document.line(('views', index, 'name'))}"
            if view.name in declared:
                raise document.error(("views", index, "name"),
                                     f"feature view {view.name!r} is declared twice: also at {declared[view.name]}")
            declared[view.name] = where
            views.append(view)
    return FeatureSchema(tuple(views))


def _shown(path: Path) -> str:
    """The path as a person reads it: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


@dataclass
class _Document:
    """One file's data and, for every path in it, the line its key or item starts on."""

    file: str
    data: object
    lines: dict[FieldPath, int] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> "_Document":
        shown = _shown(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise DeclarationError(shown, None, "", f"cannot be read: {error}") from None
        loader = yaml.SafeLoader(text)
        try:
            node = loader.get_single_node()  # one document per file
            document = cls(shown, loader.construct_document(node) if node is not None else None)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            raise DeclarationError(shown, mark.line + 1 if mark else None, "",
                                   f"not valid YAML: {error.problem or error.context}") from None
        except yaml.YAMLError as error:  # e.g. a control character: no mark, its own position
            raise DeclarationError(shown, None, "", f"not valid YAML: {error}") from None
        finally:
            loader.dispose()
        if node is not None:
            document._note_lines(node, ())
        return document

    def _note_lines(self, node: yaml.Node, path: FieldPath) -> None:
        if len(path) > MAX_DEPTH:
            return  # a recursive alias (&a [*a]); the fields never go this deep
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    continue  # a list or mapping as a key: construct_document refused it already
                child = (*path, key_node.value)
                if child in self.lines:
                    # pyyaml keeps the last of two equal keys silently: a typo-sized trap.
                    raise self.error(child, f"is given twice (lines {self.lines[child]} and "
                                            f"{key_node.start_mark.line + 1})", line=key_node.start_mark.line + 1)
                self.lines[child] = key_node.start_mark.line + 1
                self._note_lines(value_node, child)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                self._note_lines(item, (*path, index))

    def line(self, path: FieldPath) -> int:
        """The line of `path`, or of its nearest ancestor in the file (a missing key: its mapping)."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: FieldPath, message: str, *, line: int | None = None) -> DeclarationError:
        return DeclarationError(self.file, line or self.line(path), render_path(path), message)

    def views(self) -> list[FeatureView]:
        if self.data is None:
            return []  # an empty file (or only comments) declares nothing
        top = self.mapping(self.data, (), _FILE_KEYS, required={"views"})
        return [self.view(item, ("views", index))
                for index, item in enumerate(self.typed(top["views"], ("views",), list, "a list of views"))]

    # ----- one view, field by field -----

    def view(self, data: object, path: FieldPath) -> FeatureView:
        data = self.mapping(data, path, _VIEW_KEYS, required={"name", "entity", "features", "source"})
        features = self.typed(data["features"], (*path, "features"), list, "a list of features")
        try:
            return FeatureView(
                name=self.text(data, "name", path),
                description=self.text(data, "description", path, ""),
                entity=self.entity(data["entity"], (*path, "entity")),
                features=tuple(self.feature(item, (*path, "features", i)) for i, item in enumerate(features)),
                source=self.source(data["source"], (*path, "source")),
                ttl=self.ttl(data.get("ttl"), (*path, "ttl")),
                compute_on_miss=self.typed(data.get("compute_on_miss", False), (*path, "compute_on_miss"), bool,
                                           "true or false"),
                materialization_schedule=self.text(data, "materialization_schedule", path, ""),
                tags=self.tags(data.get("tags", {}), (*path, "tags")),
                point_in_time=None if data.get("point_in_time") is None else self.typed(
                    data["point_in_time"], (*path, "point_in_time"), bool, "true or false"),
            )
        except InvalidDefinition as error:
            raise self.error((*path, *error.path), error.problem) from None

    def entity(self, data: object, path: FieldPath) -> Entity:
        data = self.mapping(data, path, _ENTITY_KEYS, required={"name", "join_key", "key_type"})
        return Entity(self.text(data, "name", path), self.text(data, "join_key", path),
                      self.choice(data, "key_type", path, {"int": ValueType.INT, "string": ValueType.STRING}),
                      self.text(data, "description", path, ""))

    def feature(self, data: object, path: FieldPath) -> Feature:
        data = self.mapping(data, path, _FEATURE_KEYS, required={"name", "type"})
        kind = self.choice(data, "type", path, _TYPE_NAMES)
        dimension = data.get("dimension")
        if dimension is not None:
            self.typed(dimension, (*path, "dimension"), int, "an integer")
        elif data["type"] == EMBEDDING:
            raise self.error((*path, "dimension"), "an embedding needs its dimension (the length of every value)")
        return Feature(self.text(data, "name", path), kind, self.text(data, "description", path, ""), dimension)

    def source(self, data: object, path: FieldPath) -> Source:
        data = self.mapping(data, path, _SOURCE_KEYS, required={"query", "event_time_column"})
        return Source(self.text(data, "query", path), self.text(data, "event_time_column", path))

    def ttl(self, value: object, path: FieldPath) -> timedelta | None:
        if value is None:
            return None
        try:
            return timedelta(seconds=self.seconds(value, path))  # the domain refuses one not positive
        except OverflowError:
            raise self.error(path, "is too long") from None

    def seconds(self, value: object, path: FieldPath) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        match = _DURATION.fullmatch(value.strip()) if isinstance(value, str) else None
        if not match or not any(match.groups()):
            raise self.error(path, "must be a duration: seconds (3600) or 90s, 15m, 12h, 7d, 1d12h")
        days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
        return ((days * 24 + hours) * 60 + minutes) * 60 + seconds

    def tags(self, value: object, path: FieldPath) -> dict[str, str]:
        value = self.typed(value, path, dict, "a mapping of text to text")
        for key, text in value.items():
            self.typed(key, path, str, "a mapping of text to text")
            self.typed(text, (*path, key), str, f"text (quote it: '{text}')")
        return value

    # ----- shapes and types -----

    def mapping(self, value: object, path: FieldPath, allowed: set[str], required: set[str]) -> dict:
        value = self.typed(value, path, dict, "a mapping (key: value)")
        for key in value:
            if key not in allowed:  # str(): YAML reads `1:` as a number
                raise self.error((*path, str(key)), "unknown key; expected one of " + ", ".join(sorted(allowed)))
        missing = sorted(required - value.keys())
        if missing:
            raise self.error((*path, missing[0]), "is required")
        return value

    def typed(self, value: object, path: FieldPath, kind: type, what: str):
        # YAML's true is an int to Python: a count must not accept it, nor a flag a number.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(path, f"must be {what}, got {_yaml_type(value)}")
        return value

    def text(self, data: dict, key: str, path: FieldPath, default: str | None = None) -> str:
        value = data.get(key, default)
        return self.typed("" if value is None else value, (*path, key), str, "text")

    def choice(self, data: dict, key: str, path: FieldPath, choices: dict[str, ValueType]) -> ValueType:
        value = data.get(key)
        if not isinstance(value, str) or value not in choices:
            raise self.error((*path, key), "must be one of " + ", ".join(sorted(choices)) + f", got {value!r}")
        return choices[value]


def _yaml_type(value: object) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "text", list: "a list",
             dict: "a mapping", type(None): "nothing"}
    return names.get(type(value), type(value).__name__)

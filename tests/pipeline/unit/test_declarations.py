"""Feature view declarations in YAML files: what a good file gives, and that every mistake names
the file, the line and the field."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from ml_serving_server.services.pipeline.declarations import DeclarationError, load_directory
from ml_serving_server.services.pipeline.domain.feature_views import ValueType
from ml_serving_tools.paths import ROOT

USERS = """\
views:
  - name: user_profile
    description: who the user is
    entity:
      name: user
      join_key: user_id
      key_type: int
    features:
      - name: age
        type: int
      - name: is_premium
        type: bool
      - name: country
        type: string
      - name: device
        type: string
      - name: taste
        type: embedding
        dimension: 8
    source:
      query: |
        SELECT user_id, age, is_premium, country, device, taste, updated_at
        FROM demo_users
      event_time_column: updated_at
    ttl: 1d12h
    compute_on_miss: true
    materialization_schedule: "*/15 * * * *"
    tags:
      team: recsys
"""

ITEMS = """\
views:
  - name: item_catalog
    entity: {name: item, join_key: item_id, key_type: int}
    features:
      - {name: category, type: string}
      - {name: keywords, type: string_list}
      - {name: related_ids, type: int_list}
      - {name: scores, type: float_list}
    source: {query: "SELECT item_id, category, keywords, related_ids, scores, updated_at FROM demo_items;",
             event_time_column: updated_at}
    ttl: 3600
"""


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def line_of(path: Path, fragment: str, occurrence: int = 1) -> int:
    """The 1-based line holding the `occurrence`-th `fragment` of the file."""
    hits = [n for n, line in enumerate(path.read_text().splitlines(), start=1) if fragment in line]
    return hits[occurrence - 1]


def failure(folder: Path) -> DeclarationError:
    with pytest.raises(DeclarationError) as caught:
        load_directory(folder)
    return caught.value


def assert_names(error: DeclarationError, path: Path, line: int, field: str, words: str) -> None:
    assert (error.file, error.line, error.field) == (str(path), line, field), str(error)
    assert str(error).startswith(f"{path}:{line}: {field}: " if field else f"{path}:{line}: "), str(error)
    assert words in error.problem, str(error)


# ----- good files -----

def test_every_yaml_file_of_the_folder_is_read(tmp_path):
    write(tmp_path, "users.yaml", USERS)
    write(tmp_path, "items.yaml", ITEMS)
    write(tmp_path, "empty.yaml", "# nothing declared yet\n")
    write(tmp_path, ".#users.yaml", "an editor's lock file: not read")
    write(tmp_path, "notes.txt", "not a declaration")
    schema = load_directory(tmp_path)
    assert [v.name for v in schema.views] == ["item_catalog", "user_profile"]
    items, users = schema.views
    assert [f.type for f in items.features] == [ValueType.STRING, ValueType.STRING_LIST, ValueType.INT_LIST,
                                                ValueType.FLOAT_LIST]
    assert (items.ttl, items.compute_on_miss, items.materialization_schedule, items.tags) == (
        timedelta(hours=1), False, "", ())
    assert items.source.query.endswith("FROM demo_items")  # the trailing `;` is not part of it
    taste = users.features[-1]
    assert (taste.type, taste.dimension) == (ValueType.FLOAT_LIST, 8)
    assert users.ttl == timedelta(days=1, hours=12) and users.tags == (("team", "recsys"),)
    assert users.source.event_time_column == "updated_at" and users.entity.join_key == "user_id"


@pytest.mark.parametrize("written, seconds", [("90s", 90), ("15m", 900), ("12h", 43200), ("7d", 604800),
                                              ("1h30m", 5400), (86400, 86400)])
def test_ttl_spellings(tmp_path, written, seconds):
    write(tmp_path, "items.yaml", ITEMS.replace("ttl: 3600", f"ttl: {written}"))
    assert load_directory(tmp_path).views[0].ttl == timedelta(seconds=seconds)


def test_key_order_spacing_and_style_do_not_change_the_hash(tmp_path):
    write(tmp_path / "a", "users.yaml", USERS)
    reordered = """\
    # the same view, written otherwise
    views:
    - tags: {team: recsys}
      materialization_schedule: '*/15 * * * *'
      compute_on_miss: yes
      ttl:   1d12h
      source:
        event_time_column:   updated_at
        query: |
                SELECT user_id, age, is_premium, country, device, taste, updated_at
                FROM demo_users
      features:
      - {type: int, name: age}
      - {type: bool, name: is_premium}
      - {type: string, name: country}
      - {type: string, name: device}
      - {dimension: 8, type: embedding, name: taste}
      entity: {key_type: int, join_key: user_id, name: user}
      description: "who the user is"
      name: user_profile
    """
    write(tmp_path / "b", "users.yaml", reordered)
    a, b = load_directory(tmp_path / "a"), load_directory(tmp_path / "b")
    assert a.views[0].definition_hash == b.views[0].definition_hash and a.version == b.version
    write(tmp_path / "c", "users.yaml", USERS.replace("dimension: 8", "dimension: 9"))
    assert load_directory(tmp_path / "c").version != a.version


def test_the_default_folder_is_the_checkout_s_features(monkeypatch, tmp_path):
    from ml_serving_server.services.pipeline.settings import PipelineSettings

    monkeypatch.delenv("PIPELINE_FEATURE_VIEWS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # not the working folder's
    assert PipelineSettings().feature_views_path() == ROOT / "features"
    monkeypatch.setenv("PIPELINE_FEATURE_VIEWS_DIR", str(tmp_path))
    assert PipelineSettings().feature_views_path() == tmp_path


def test_the_repository_s_own_declarations_load():
    schema = load_directory(ROOT / "features")
    names = {v.name for v in schema.views}
    assert {"user_profile", "item_catalog"} <= names
    profile = next(v for v in schema.views if v.name == "user_profile")
    assert {"age_bucket", "activity", "is_premium", "taste"} <= {f.name for f in profile.features}


# ----- each kind of mistake names file, line and field -----

MISTAKES = [
    # (what, text replaced in USERS, by, line holding this fragment, field, words of the message)
    ("unknown view key", "    ttl: 1d12h", "    ttl_seconds: 100", "ttl_seconds", "views[0].ttl_seconds",
     "unknown key; expected one of compute_on_miss, description"),
    ("unknown feature key", "        dimension: 8", "        dimension: 8\n        dims: 8", "dims:",
     "views[0].features[4].dims", "unknown key"),
    ("unknown type", "      - name: device\n        type: string", "      - name: device\n        type: strnig",
     "strnig", "views[0].features[3].type",
     "must be one of bool, embedding, float, float_list, int, int_list, string, string_list, got 'strnig'"),
    ("unknown key type", "      key_type: int", "      key_type: uuid", "key_type", "views[0].entity.key_type",
     "must be one of int, string"),
    ("dimension as text", "dimension: 8", "dimension: '8'", "dimension", "views[0].features[4].dimension",
     "must be an integer, got text"),
    ("a flag as text", "compute_on_miss: true", "compute_on_miss: 'true'", "compute_on_miss",
     "views[0].compute_on_miss", "must be true or false, got text"),
    ("a name as a number", "  - name: user_profile", "  - name: 42", "name: 42", "views[0].name",
     "must be text, got an integer"),
    ("a tag as a number", "      team: recsys", "      team: 7", "team: 7", "views[0].tags.team", "must be text"),
    ("a bad ttl", "ttl: 1d12h", "ttl: soon", "ttl:", "views[0].ttl", "must be a duration"),
    ("a ttl of zero", "ttl: 1d12h", "ttl: 0s", "ttl:", "views[0].ttl", "must be a positive duration"),
    ("an embedding without dimension", "        dimension: 8\n", "", "name: taste",
     "views[0].features[4].dimension", "needs its dimension"),
    ("a rule of the domain", "      - name: device", "      - name: Device", "name: Device",
     "views[0].features[3].name", "must match"),
    ("a feature twice", "      - name: device", "      - name: age  # again", "# again", "views[0].features[3].name",
     "already the name of features[0]"),
    ("two statements", "FROM demo_users\n", "FROM demo_users; DELETE FROM demo_users\n", "query:",
     "views[0].source.query", "single statement"),
    ("a missing source", "    source:\n      query: |\n", "    origin:\n      query: |\n", "origin:",
     "views[0].origin", "unknown key"),
    ("a required key missing", "      event_time_column: updated_at\n", "", "source:",
     "views[0].source.event_time_column", "is required"),
    ("a key given twice", "    ttl: 1d12h\n", "    ttl: 1d12h\n    ttl: 2d\n", "ttl: 2d", "views[0].ttl",
     "is given twice (lines"),
    ("a bad schedule", '"*/15 * * * *"', '"every hour"', "materialization_schedule",
     "views[0].materialization_schedule", "five-field cron"),
]


@pytest.mark.parametrize("old, new, fragment, field, words", [m[1:] for m in MISTAKES], ids=[m[0] for m in MISTAKES])
def test_a_mistake_names_file_line_and_field(tmp_path, old, new, fragment, field, words):
    assert old in USERS
    write(tmp_path, "items.yaml", ITEMS)
    path = write(tmp_path, "users.yaml", USERS.replace(old, new, 1))
    assert_names(failure(tmp_path), path, line_of(path, fragment), field, words)


def test_features_not_a_list(tmp_path):
    features = ITEMS[ITEMS.index("    features:"):ITEMS.index("    source:")]
    path = write(tmp_path, "items.yaml", ITEMS.replace(features, "    features: category\n"))
    assert_names(failure(tmp_path), path, line_of(path, "features:"), "views[0].features",
                 "must be a list of features, got text")


def test_yaml_that_does_not_parse_names_its_line(tmp_path):
    path = write(tmp_path, "users.yaml", USERS.replace("    entity:\n", "    entity: [unclosed\n"))
    error = failure(tmp_path)
    assert error.file == str(path) and error.line is not None and error.line >= line_of(path, "unclosed")
    assert "not valid YAML" in str(error)


@pytest.mark.parametrize("text, words", [
    ("- just\n- a list\n", "must be a mapping (key: value), got a list"),
    ("views: []\n---\nviews: []\n", "not valid YAML"),
    ("view:\n  - name: x\n", "unknown key; expected one of views"),
])
def test_a_file_of_the_wrong_shape(tmp_path, text, words):
    path = write(tmp_path, "odd.yaml", text)
    error = failure(tmp_path)
    assert error.file == str(path) and words in str(error) and error.line


def test_one_view_name_in_two_files_names_both(tmp_path):
    first = write(tmp_path, "a_users.yaml", USERS)
    second = write(tmp_path, "b_users.yaml", USERS.replace("description: who the user is", "description: again"))
    error = failure(tmp_path)
    line = line_of(second, "name: user_profile")
    assert_names(error, second, line, "views[0].name", "feature view 'user_profile' is declared twice")
    assert f"also at {first}:{line_of(first, 'name: user_profile')}" in str(error)


def test_one_view_name_twice_in_one_file_names_both_lines(tmp_path):
    view = USERS.split("views:\n", 1)[1]
    path = write(tmp_path, "users.yaml", USERS + view)
    error = failure(tmp_path)
    assert_names(error, path, line_of(path, "name: user_profile", 2), "views[1].name", "declared twice")
    assert f"also at {path}:{line_of(path, 'name: user_profile')}" in str(error)


def test_a_missing_folder_is_named(tmp_path):
    error = failure(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(error) and "PIPELINE_FEATURE_VIEWS_DIR" in str(error)


def test_a_path_inside_the_working_folder_is_shown_relative(tmp_path, monkeypatch):
    write(tmp_path / "features", "users.yaml", USERS.replace("type: embedding", "type: vector"))
    monkeypatch.chdir(tmp_path)
    error = failure(Path("features"))
    assert str(error).startswith(f"features/users.yaml:{line_of(tmp_path / 'features/users.yaml', 'vector')}: "
                                 "views[0].features[4].type: must be one of")

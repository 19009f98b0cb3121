"""Settings are declared once: the README's table is generated from the classes, and every
variable in it is the one the class really reads."""

from __future__ import annotations

import pytest

from ml_serving_tools import settings_table


def sample(field):
    """A value of the field's type unlike its default (and within its bounds: defaults are)."""
    return {str: lambda d: "sample-value", int: lambda d: d + 1, float: lambda d: d + 0.5,
            bool: lambda d: not d}.get(field.annotation, lambda d: None)(field.default)


def test_readme_table_matches_the_settings_classes():
    readme = settings_table.README.read_text()
    assert settings_table.replaced(readme) == readme, (
        "README.md's configuration table is stale: run `python -m ml_serving_tools.settings_table --write`")


@pytest.mark.parametrize("cls", settings_table.settings_classes(), ids=lambda c: c.__name__)
def test_each_documented_variable_sets_its_field(cls, monkeypatch):
    expected = {}
    for name, field in cls.model_fields.items():
        value = sample(field)
        if value is None:
            continue  # MESH_SERVICES, LOG_LEVEL: tested on their own
        monkeypatch.setenv(settings_table.variable(cls, name, field), str(value))
        expected[name] = value
    assert expected, f"{cls.__name__} has no field of a simple type"
    settings = cls()
    assert {name: getattr(settings, name) for name in expected} == expected


def test_every_field_is_documented_with_a_unit_where_it_has_one():
    for cls in settings_table.settings_classes():
        for name, field in cls.model_fields.items():
            assert field.description, f"{cls.__name__}.{name} has no description"
            if field.annotation in (int, float):
                assert name.endswith(("_seconds", "_ms", "_days", "_bytes", "_entries", "_connections", "_requests", "_workers", "_attempts",
                                      "_decisions")), (
                    f"{cls.__name__}.{name}: unit in the name")


@pytest.mark.parametrize("raw, expected", [("all", None), ("bandit, Router,bandit", ("bandit", "router"))])
def test_mesh_services_from_the_environment(raw, expected, monkeypatch):
    from mnbara.mlserving.catalog import BY_NAME

    from ml_serving_server.runtime.settings import MeshSettings

    monkeypatch.setenv("MESH_SERVICES", raw)
    assert MeshSettings().services == (expected or tuple(BY_NAME))


def test_no_service_at_all_is_refused(monkeypatch):
    from pydantic import ValidationError

    from ml_serving_server.runtime.settings import MeshSettings

    monkeypatch.setenv("MESH_SERVICES", " , ")
    with pytest.raises(ValidationError, match="at least one service"):
        MeshSettings()

"""ml_serving_tools.devservices: the pure parts (URLs, version parsing, env lines, state file shape).

No servers, no sockets: the paths that start or probe Redis and PostgreSQL are checked by
running `mesh-devservices env --force-embedded` (see ml_serving_tools.devservices.cli).
"""

import pytest

from ml_serving_tools import devservices
from ml_serving_tools.devservices import cli


@pytest.fixture(scope="module")
def ds():
    return devservices


def test_urls_are_loopback(ds):
    assert ds.redis_url_for(6380) == "redis://127.0.0.1:6380/0"
    assert ds.pg_dsn_for(5433, "mlserving") == "postgresql://postgres@127.0.0.1:5433/mlserving"


def test_with_dbname_replaces_only_the_path(ds):
    dsn = "postgresql://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    assert ds.with_dbname(dsn, "mlserving") == "postgresql://postgres@127.0.0.1:5432/mlserving?sslmode=disable"


def test_host_port_of(ds):
    assert ds.host_port_of("redis://127.0.0.1:6379/0", 1) == ("127.0.0.1", 6379)
    assert ds.host_port_of("postgresql://u@localhost/db", 5432) == ("localhost", 5432)


@pytest.mark.parametrize(
    "text, major",
    [
        ("postgres (PostgreSQL) 18.6\n", 18),
        ("postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n", 15),
        ("postgres (PostgreSQL) 9.6.24\n", 9),
        ("something else", None),
    ],
)
def test_parse_pg_major(ds, text, major):
    assert ds.parse_pg_major(text) == major


def test_env_lines():
    values = {"REDIS_URL": "redis://127.0.0.1:1/0", "DATABASE_URL": "postgresql://postgres@127.0.0.1:2/x"}
    assert cli.env_lines(values) == ["REDIS_URL=redis://127.0.0.1:1/0", "DATABASE_URL=postgresql://postgres@127.0.0.1:2/x"]
    assert cli.env_lines(values, export=True)[0] == "export REDIS_URL=redis://127.0.0.1:1/0"


@pytest.mark.parametrize("name, ok", [("mlserving", True), ("mlflow_db", True), ("a-b", False), ('x"; drop', False), ("", False)])
def test_valid_dbname(ds, name, ok):
    assert ds.valid_dbname(name) is ok


def test_embedded_sources(ds):
    assert ds.EMBEDDED_SOURCES == ("auto", "path", "package")

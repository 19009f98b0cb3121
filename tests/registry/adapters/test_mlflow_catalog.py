"""MlflowCatalog over a real MLflow tracking server (`mlflow_uri`): models, search and its
pages, versions, aliases, run artifacts, the error mapping, and an MLflow that is down,
silent or failing.

Every test uses model names of its own (a uuid) and deletes what it created. MLflow reads its
HTTP timeout from the process environment, the first catalog setting it: the module clears
those variables while its catalogs are built, so TIMEOUT is the one in force, and puts them
back afterwards."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ml_serving_server.services.registry import mlflow_catalog
from ml_serving_server.services.registry.domain.ports import (
    ArtifactMissing,
    BackendUnavailable,
    CatalogConflict,
    CatalogRejected,
)
from ml_serving_server.services.registry.mlflow_catalog import MlflowCatalog

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 2.0


@contextlib.contextmanager
def mlflow_http_env_cleared():
    """MLflow's HTTP variables unset inside the block (so a catalog built there sets its own)
    and as they were afterwards."""
    saved = {name: os.environ.pop(name, None) for name in mlflow_catalog._HTTP_ENV}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def http_env():
    with mlflow_http_env_cleared():
        yield


@pytest.fixture(scope="module")
async def catalog(mlflow_uri, http_env):
    cat = MlflowCatalog(mlflow_uri, TIMEOUT)
    assert cat.http_settings["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "2"
    yield cat
    await cat.close()


@pytest.fixture(scope="module")
def direct(mlflow_uri) -> MlflowClient:
    """MLflow's own client, for setting up and checking behind the catalog's back."""
    return MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)


@pytest.fixture
def names(direct):
    """Makes unique model names; deletes afterwards the models named so, or starting so."""
    made: list[str] = []

    def make(label: str = "m") -> str:
        made.append(f"test-catalog-{uuid.uuid4().hex[:10]}-{label}")
        return made[-1]

    yield make
    for stem in made:  # the model of that name and any whose name starts with it
        with contextlib.suppress(Exception):
            for model in direct.search_registered_models(f"name LIKE '{stem}%'", max_results=1000):
                direct.delete_registered_model(model.name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_recent(value: datetime | None) -> None:
    assert value is not None and value.tzinfo is not None and value.utcoffset() == timedelta(0)
    assert abs(datetime.now(timezone.utc) - value) < timedelta(minutes=5)


# ----- registered models -----

async def test_create_get_and_conflict(catalog, direct, names):
    name = names()
    created = await catalog.create_model(name, "a model", {"team": "fraud", "tier": "1"})
    assert (created.name, created.description, created.tags, created.aliases) == \
        (name, "a model", {"team": "fraud", "tier": "1"}, {})
    assert_recent(created.create_time)
    assert_recent(created.update_time)
    # Times are MLflow's milliseconds, exactly.
    raw = direct.get_registered_model(name)
    assert created.create_time == datetime.fromtimestamp(raw.creation_timestamp // 1000, timezone.utc) + \
        timedelta(milliseconds=raw.creation_timestamp % 1000)

    assert await catalog.get_model(name) == created
    assert await catalog.get_model(name + "-missing") is None
    with pytest.raises(CatalogConflict):
        await catalog.create_model(name, "", {})

    plain = await catalog.create_model(names(), "", {})
    assert (plain.description, plain.tags) == ("", {})


async def test_update_model(catalog, names):
    name = names()
    await catalog.create_model(name, "old", {"keep": "1", "drop": "2", "change": "3"})
    updated = await catalog.update_model(name, "new", {"change": "33", "add": "4"}, ["drop"])
    assert updated.description == "new"
    assert updated.tags == {"keep": "1", "change": "33", "add": "4"}
    assert await catalog.get_model(name) == updated

    # No description: kept; removing a tag that is not there is fine; a key in both ends up set.
    again = await catalog.update_model(name, None, {"both": "x"}, ["both", "never-there"])
    assert again.description == "new" and again.tags["both"] == "x"
    cleared = await catalog.update_model(name, "", {}, [])
    assert cleared.description == ""

    assert await catalog.update_model(name + "-missing", "x", {"a": "b"}, ["c"]) is None
    assert await catalog.update_model(name + "-missing", None, {}, []) is None


async def test_delete_model(catalog, names):
    name = names()
    await catalog.create_model(name, "", {})
    await catalog.create_version(name, "s3://bucket/key", "", "", {})
    assert await catalog.delete_model(name) is True
    assert await catalog.get_model(name) is None
    assert await catalog.list_versions(name) == []
    assert await catalog.delete_model(name) is False


async def test_rejected_values_name_the_field(catalog, names):
    cases = [
        ((names("bad/name"), "", {}), "name"),
        ((names(), "d" * 6000, {}), "description"),
        ((names(), "", {"k": "v" * 6000}), "tags"),
        ((names(), "", {"": "v"}), "tags"),
        ((names(), "", {"k" * 300: "v"}), "tags"),
        (("x" * 300, "", {}), "name"),
    ]
    for args, field in cases:
        with pytest.raises(CatalogRejected) as caught:
            await catalog.create_model(*args)
        assert caught.value.field == field, (args[0][:40], str(caught.value))
        message = str(caught.value).split(": ", 1)[1]
        assert 0 < len(message) <= 200 and "SQL" not in message and "psycopg" not in message

    name = names()
    await catalog.create_model(name, "", {})
    with pytest.raises(CatalogRejected) as caught:
        await catalog.update_model(name, "d" * 6000, {}, [])
    assert caught.value.field == "description"
    with pytest.raises(CatalogRejected) as caught:
        await catalog.update_model(name, None, {"k": "v" * 6000}, [])
    assert caught.value.field == "set_tags"


# ----- search -----

async def test_search_by_name_and_tags_across_pages(catalog, names):
    stem = names("s")  # unique: every name below contains it
    made = {}
    for i, tags in enumerate([{"team": "a"}, {"team": "b"}, {"team": "a", "x": "1"}, {}, {"team": "a"}]):
        model = await catalog.create_model(f"{stem}-{i}", f"d{i}", tags)
        made[model.name] = model
    names_in_order = sorted(made)

    # Any case; name order; three pages of 2, 2 and 1; the last token empty.
    seen, token, pages = [], "", 0
    while True:
        page, token = await catalog.search_models(stem.upper(), {}, 2, token)
        pages += 1
        assert len(page) <= 2
        seen += page
        if not token:
            break
    assert pages == 3
    assert [m.name for m in seen] == names_in_order
    assert seen == [made[n] for n in names_in_order]

    page, token = await catalog.search_models(stem, {"team": "a"}, 10, "")
    assert [m.name for m in page] == [f"{stem}-0", f"{stem}-2", f"{stem}-4"] and token == ""
    page, _ = await catalog.search_models(stem, {"team": "a", "x": "1"}, 10, "")
    assert [m.name for m in page] == [f"{stem}-2"]
    page, _ = await catalog.search_models(stem, {"team": None}, 10, "")  # present, any value
    assert [m.name for m in page] == [f"{stem}-{i}" for i in (0, 1, 2, 4)]
    page, _ = await catalog.search_models(stem, {"nowhere": None}, 10, "")
    assert page == []


async def test_search_takes_characters_the_filter_grammar_cannot(catalog, names):
    stem = names("q")
    specials = {"quote": "it's", "double": 'say "x"', "both": "say \"it's\"", "like": "50%_off", "slash": "a\\b"}
    await catalog.create_model(f"{stem}-a_b", "", specials)
    await catalog.create_model(f"{stem}-axb", "", {key: value + "!" for key, value in specials.items()})
    await catalog.create_model(f"{stem}-50%", "", {"spaced key.with dot": "v"})

    # `_` and `%` are literal, not wildcards.
    page, _ = await catalog.search_models(f"{stem}-A_B", {}, 10, "")
    assert [m.name for m in page] == [f"{stem}-a_b"]
    page, _ = await catalog.search_models(f"{stem}-50%", {}, 10, "")
    assert [m.name for m in page] == [f"{stem}-50%"]
    for key, value in specials.items():
        page, _ = await catalog.search_models(stem, {key: value}, 10, "")
        assert [m.name for m in page] == [f"{stem}-a_b"], key
    page, _ = await catalog.search_models(stem, {"spaced key.with dot": "v"}, 10, "")
    assert [m.name for m in page] == [f"{stem}-50%"]
    page, _ = await catalog.search_models(f"{stem}-it's", {}, 10, "")
    assert page == []


async def test_search_rejections(catalog):
    with pytest.raises(CatalogRejected) as caught:
        await catalog.search_models("", {}, 10, "not-a-token")
    assert caught.value.field == "page_token"
    with pytest.raises(CatalogRejected) as caught:
        await catalog.search_models("", {}, 10, "eyJub3QiOiAib2Zmc2V0In0=")  # base64 JSON without an offset
    assert caught.value.field == "page_token"
    with pytest.raises(CatalogRejected) as caught:
        await catalog.search_models("", {"back`quote": "v"}, 10, "")
    assert caught.value.field == "tags"
    with pytest.raises(CatalogRejected) as caught:
        await catalog.search_models("", {}, 100_000, "")
    assert caught.value.field == "page_size"


# ----- versions -----

async def test_versions(catalog, names, monkeypatch):
    name = names()
    await catalog.create_model(name, "", {})
    v1 = await catalog.create_version(name, "s3://bucket/one", "", "first", {"k": "1"})
    assert (v1.model_name, v1.version, v1.source, v1.run_id, v1.description, v1.tags, v1.aliases) == \
        (name, "1", "s3://bucket/one", "", "first", {"k": "1"}, ())
    assert_recent(v1.create_time)
    v2 = await catalog.create_version(name, "s3://bucket/two", "abc123", "", {})
    v3 = await catalog.create_version(name, "s3://bucket/three", "", "", {})
    assert (v2.version, v2.run_id, v3.version) == ("2", "abc123", "3")

    assert await catalog.get_version(name, "1") == v1
    assert await catalog.get_version(name, "99") is None
    assert await catalog.get_version(name + "-missing", "1") is None

    monkeypatch.setattr(mlflow_catalog, "VERSIONS_PAGE_SIZE", 2)  # three versions: two pages
    assert await catalog.list_versions(name) == [v1, v2, v3]
    assert await catalog.list_versions(name + "-missing") == []

    updated = await catalog.update_version(name, "2", "second", {"new": "x"}, [])
    assert (updated.description, updated.tags) == ("second", {"new": "x"})
    updated = await catalog.update_version(name, "2", None, {}, ["new"])
    assert (updated.description, updated.tags) == ("second", {})
    assert await catalog.update_version(name, "99", "x", {}, []) is None
    assert await catalog.update_version(name + "-missing", "1", None, {}, []) is None

    assert await catalog.delete_version(name, "2") is True
    assert await catalog.delete_version(name, "2") is False
    assert await catalog.delete_version(name + "-missing", "1") is False
    assert [v.version for v in await catalog.list_versions(name)] == ["1", "3"]

    with pytest.raises(CatalogRejected) as caught:
        await catalog.create_version(name + "-missing", "s3://bucket/k", "", "", {})
    assert caught.value.field == "name"
    with pytest.raises(CatalogRejected) as caught:
        await catalog.create_version(name, "s3://bucket/k", "", "d" * 6000, {})
    assert caught.value.field == "description"


async def test_aliases(catalog, names):
    name = names()
    await catalog.create_model(name, "", {})
    for _ in range(2):
        await catalog.create_version(name, "s3://bucket/k", "", "", {})

    await catalog.set_alias(name, "champion", "1")
    await catalog.set_alias(name, "challenger", "1")
    assert (await catalog.get_model(name)).aliases == {"champion": "1", "challenger": "1"}
    assert sorted((await catalog.get_version(name, "1")).aliases) == ["challenger", "champion"]

    await catalog.set_alias(name, "champion", "2")  # moves
    assert (await catalog.get_model(name)).aliases == {"champion": "2", "challenger": "1"}
    listed = {v.version: v.aliases for v in await catalog.list_versions(name)}
    assert listed == {"1": ("challenger",), "2": ("champion",)}

    assert await catalog.delete_alias(name, "champion") is True
    assert await catalog.delete_alias(name, "champion") is False
    assert await catalog.delete_alias(name + "-missing", "champion") is False
    assert (await catalog.get_model(name)).aliases == {"challenger": "1"}

    with pytest.raises(CatalogRejected) as caught:
        await catalog.set_alias(name, "champion", "9")
    assert caught.value.field == "version"
    with pytest.raises(CatalogRejected) as caught:
        await catalog.set_alias(name + "-missing", "champion", "1")
    assert caught.value.field == "name"
    with pytest.raises(CatalogRejected) as caught:
        await catalog.set_alias(name, "latest", "1")  # reserved by MLflow
    assert caught.value.field == "alias"


# ----- run artifacts -----

@pytest.fixture
def experiment(direct):
    experiment_id = direct.create_experiment(f"test-catalog-{uuid.uuid4().hex[:10]}")
    yield experiment_id
    with contextlib.suppress(Exception):
        direct.delete_experiment(experiment_id)


async def test_download_run_artifact(catalog, direct, experiment, tmp_path):
    run_id = direct.create_run(experiment).info.run_id
    source = tmp_path / "src"
    source.mkdir()
    (source / "model.mar").write_bytes(b"\x00model bytes\xff" * 1000)
    direct.log_artifact(run_id, str(source / "model.mar"), "model")
    direct.log_artifact(run_id, str(source / "model.mar"))
    direct.set_terminated(run_id)

    dest = tmp_path / "dest"
    dest.mkdir()
    local = await catalog.download_run_artifact(run_id, "model/model.mar", dest)
    assert local.is_file() and local.resolve().is_relative_to(dest.resolve())
    assert local.read_bytes() == (source / "model.mar").read_bytes()
    top = await catalog.download_run_artifact(run_id, "model.mar", tmp_path / "other")  # created if missing
    assert top.read_bytes() == local.read_bytes()

    for missing_run, path in [(run_id, "model/nope.mar"), (run_id, "nope.mar"), ("0" * 32, "model.mar"),
                              (run_id, "model"),  # a directory
                              (run_id, "../model.mar"), (run_id, "/etc/passwd"), (run_id, ""), ("", "model.mar")]:
        with pytest.raises(ArtifactMissing):
            await catalog.download_run_artifact(missing_run, path, dest)


async def test_download_refuses_runs_whose_artifacts_are_on_local_disk(catalog, direct, tmp_path):
    # Anyone who can create an experiment chooses its artifact location: the registry must not
    # read its own disk for them.
    experiment_id = direct.create_experiment(f"test-catalog-{uuid.uuid4().hex[:10]}",
                                             artifact_location=(tmp_path / "elsewhere").as_uri())
    try:
        run = direct.create_run(experiment_id)
        target = Path(run.info.artifact_uri.removeprefix("file://"))
        target.mkdir(parents=True, exist_ok=True)
        (target / "secret.txt").write_text("local file")
        with pytest.raises(ArtifactMissing, match="not accepted"):
            await catalog.download_run_artifact(run.info.run_id, "secret.txt", tmp_path / "dest")
    finally:
        direct.delete_experiment(experiment_id)


# ----- MLflow down, silent or failing -----

def every_call(catalog: MlflowCatalog, tmp_path: Path):
    """(method, a function starting the call) for every method that talks to MLflow."""
    return [
        ("create_model", lambda: catalog.create_model("m", "", {})),
        ("get_model", lambda: catalog.get_model("m")),
        ("search_models", lambda: catalog.search_models("m", {"t": None}, 10, "")),
        ("update_model", lambda: catalog.update_model("m", "d", {"a": "b"}, ["c"])),
        ("delete_model", lambda: catalog.delete_model("m")),
        ("create_version", lambda: catalog.create_version("m", "s3://b/k", "", "", {})),
        ("get_version", lambda: catalog.get_version("m", "1")),
        ("list_versions", lambda: catalog.list_versions("m")),
        ("update_version", lambda: catalog.update_version("m", "1", "d", {}, [])),
        ("delete_version", lambda: catalog.delete_version("m", "1")),
        ("set_alias", lambda: catalog.set_alias("m", "a", "1")),
        ("delete_alias", lambda: catalog.delete_alias("m", "a")),
        ("download_run_artifact", lambda: catalog.download_run_artifact("0" * 32, "x.bin", tmp_path)),
    ]


async def test_refused_connection_is_backend_unavailable_at_once(http_env, tmp_path):
    catalog = MlflowCatalog(f"http://127.0.0.1:{free_port()}", TIMEOUT)
    try:
        for method, call in every_call(catalog, tmp_path):
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                await call()
            assert time.monotonic() - started < TIMEOUT, method
        assert await catalog.ping() is False
    finally:
        await catalog.close()


@contextlib.contextmanager
def silent_server():
    """Accepts connections (the kernel does) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


async def test_silent_server_is_backend_unavailable_after_the_timeout(http_env, tmp_path):
    timeout = 1.0  # MLflow's smallest (it takes whole seconds)
    with silent_server() as uri, mlflow_http_env_cleared():
        catalog = MlflowCatalog(uri, timeout)
        try:
            for call in (lambda: catalog.get_model("m"), lambda: catalog.create_model("m", "", {})):
                started = time.monotonic()
                with pytest.raises(BackendUnavailable):
                    await call()
                elapsed = time.monotonic() - started
                assert timeout * 0.5 < elapsed < timeout * 3, elapsed
            started = time.monotonic()
            assert await catalog.ping() is False
            assert time.monotonic() - started < timeout * 3
        finally:
            await catalog.close()


class _Failing(http.server.BaseHTTPRequestHandler):
    status = 503

    def _answer(self):
        body = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "down for maintenance"}'
        self.send_response(self.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def failing_server(status: int):
    """An HTTP server answering every request with `status` (a proxy in front of a dead MLflow)."""
    handler = type("Handler", (_Failing,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_backend_unavailable(http_env, tmp_path, status):
    with failing_server(status) as uri:
        catalog = MlflowCatalog(uri, TIMEOUT)
        try:
            for method, call in every_call(catalog, tmp_path):
                with pytest.raises(BackendUnavailable, match="."):
                    await call()
            assert await catalog.ping() is False
        finally:
            await catalog.close()


# ----- lifecycle -----

async def test_ping_and_close(mlflow_uri, http_env):
    catalog = MlflowCatalog(mlflow_uri, TIMEOUT)
    assert await catalog.ping() is True
    await catalog.close()
    assert await catalog.ping() is False
    with pytest.raises(BackendUnavailable):
        await catalog.get_model("m")


def test_constructor_checks_its_arguments(http_env):
    for uri in ("file:///tmp/mlruns", "databricks", "127.0.0.1:5000", "http://"):
        with pytest.raises(ValueError):
            MlflowCatalog(uri, TIMEOUT)
    with pytest.raises(ValueError):
        MlflowCatalog("http://127.0.0.1:5000", 0)
    with pytest.raises(ValueError):
        MlflowCatalog("http://127.0.0.1:5000", TIMEOUT, max_retries=11)


async def test_an_explicit_mlflow_setting_wins(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    catalog = MlflowCatalog("http://127.0.0.1:5000", 0.5)
    assert catalog.http_settings == {"MLFLOW_HTTP_REQUEST_TIMEOUT": "7", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
                                     "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    await catalog.close()

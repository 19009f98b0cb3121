"""ModelCatalog over an MLflow tracking server (the Model Registry's REST API).

MLflow's own client (`MlflowClient`: blocking, requests-based) does the work, one instance
for the catalog's lifetime (its HTTP session and connection pool are reused), on a small
dedicated thread pool (`THREADS` threads) that the async methods hop onto with
`loop.run_in_executor`. A call whose caller gives up (cancellation, deadline) still finishes
in its thread; its result is dropped. The `mlflow` package is imported by the constructor, not
with this module (importing it costs seconds; processes that never build a catalog skip it).

Timeouts and retries. MLflow takes them from process environment variables, read at every
request; there is no per-client setting. The constructor sets these when they are not set
(an operator's explicit value always wins, and a value that differs from what this catalog
asked for is logged as a warning):

    MLFLOW_HTTP_REQUEST_TIMEOUT         ceil(timeout_seconds): seconds to connect and between
                                        bytes read; MLflow parses it with int(), so 0.5 means 1
    MLFLOW_HTTP_REQUEST_MAX_RETRIES     max_retries (default 0; MLflow's own default is 7 with
                                        exponential backoff: minutes before an outage shows)
    MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR  0 (MLflow's default is 2)

They are process-wide: the first catalog built in a process decides them for every later one
(and for any other MLflow client in the process). With the defaults, MLflow down or silent
gives BackendUnavailable after about ceil(timeout_seconds) (at once when the connection is
refused). MLflow retries every method, POST included: with max_retries > 0 a create whose
answer was lost may be applied twice (a spurious conflict, or a second model version).

Errors. No MLflow, requests, urllib3 or botocore exception leaves this module:
  - unreachable, refused, timed out, 5xx, rate limited, unauthenticated/forbidden, an MLflow
    without this API: BackendUnavailable
  - RESOURCE_ALREADY_EXISTS on create_model: CatalogConflict
  - RESOURCE_DOES_NOT_EXIST: None or False, as each method's signature says; where the port has
    no "not found" answer (create_version on a missing model, set_alias on a missing model or
    version) it is CatalogRejected on the field concerned ("name" or "version")
  - INVALID_PARAMETER_VALUE, BAD_REQUEST (e.g. a value longer than MLflow's database column):
    CatalogRejected(field, message), field being the port method's parameter concerned ("name",
    "description", "tags", "set_tags", "remove_tag_keys", "name_contains", "page_token",
    "page_size", "source", "run_id", "version", "alias"), the message MLflow's first sentence
    without SQL, at most 200 characters
  - download_run_artifact: a missing run or file, a directory, a storage scheme not accepted:
    ArtifactMissing
  - any other MLflow error: RuntimeError (the transport logs it as INTERNAL)

Searching. MLflow's filter grammar has no escape character: a quote cannot be written inside
a quoted value, and `%`/`_` are wildcards for LIKE. A value the grammar cannot take literally
is sent as a LIKE pattern with each such character replaced by `_` (any one character), which
selects a superset, and the page is then filtered exactly here. Such a page may hold fewer
than page_size models (even none) while more pages follow; the page token is still MLflow's.
A tag key containing a backquote cannot be searched at all (CatalogRejected "tags").

Run artifacts are read through the artifact repository of the run's artifact URI, only for
the schemes in `ARTIFACT_SCHEMES` (the tracking server's proxied `mlflow-artifacts:`, on the
same host, and `s3:`): an experiment's artifact location is chosen by whoever creates it, and
the registry must not read its own disk (`file:`) or fetch arbitrary addresses (`http:`) for
them. MLflow 3 logged models (`models:/<id>`, outside the run's artifacts) are not looked up.
"""

from __future__ import annotations

import asyncio
import urllib.request
import contextvars
import logging
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence, TypeVar
from urllib.parse import urlsplit

import requests
import urllib3

from .domain.ports import (
    ArtifactMissing,
    BackendUnavailable,
    CatalogConflict,
    CatalogModel,
    CatalogRejected,
    CatalogVersion,
)

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion, RegisteredModel
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

T = TypeVar("T")

THREADS = 8  # at most MLflow's HTTP pool size (MLFLOW_HTTP_POOL_MAXSIZE, 10 by default)
VERSIONS_PAGE_SIZE = 1000  # list_versions pages through search_model_versions this many at a time
ARTIFACT_SCHEMES = frozenset({"mlflow-artifacts", "s3"})
MAX_MESSAGE_CHARS = 200

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MODEL_ORDER = ["name ASC"]
_VERSION_ORDER = ["version_number ASC"]

# MLflow error codes (mlflow.protos.databricks_pb2.ErrorCode names).
_NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"})
_EXISTS_CODES = frozenset({"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"})
_REJECTED_CODES = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "MALFORMED_REQUEST",
                             "MAX_BLOCK_SIZE_EXCEEDED", "MAX_READ_SIZE_EXCEEDED"})
_UNAVAILABLE_CODES = frozenset({
    "INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "IO_ERROR", "SERVICE_UNDER_MAINTENANCE",
    "WORKSPACE_TEMPORARILY_UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "REQUEST_LIMIT_EXCEEDED",
    "UNAUTHENTICATED", "PERMISSION_DENIED", "CUSTOMER_UNAUTHORIZED", "ENDPOINT_NOT_FOUND",
    "UNPARSEABLE_HTTP_ERROR", "COULD_NOT_ACQUIRE_LOCK", "ABORTED", "CANCELLED",
})
# botocore exceptions (S3 run artifacts), recognised by name: botocore is optional.
_BOTO_UNAVAILABLE = frozenset({"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
                               "ConnectionClosedError", "NoCredentialsError", "PartialCredentialsError"})
# Words of a failure that says the run or file is not there (MLflow folds a download's failures
# into one message), and botocore error codes that do.
_MISSING_MARKERS = ("404 client error", "not found", "nosuchkey", "nosuchbucket", "no such artifact", "does not exist")
_BOTO_MISSING = frozenset({"404", "nosuchkey", "nosuchbucket", "notfound"})

# Which field a rejection concerns, from MLflow's message (lower case). Checked in order,
# before the per-field words below.
_GLOBAL_HINTS = (
    ("page_token", ("page token", "page_token")),
    ("page_size", ("max_results",)),
    ("alias", ("alias",)),
    ("version", ("parameter 'version'", "'version'")),
    ("name", ("model name", "parameter 'name'")),
)
_FIELD_WORDS = {
    "tags": ("tag", "'key'", "'value'"),
    "set_tags": ("tag", "'key'", "'value'"),
    "remove_tag_keys": ("tag", "'key'"),
    "description": ("description",),
    "source": ("source",),
    "run_id": ("run_id", "run id"),
}

# Characters MLflow's filter grammar or LIKE cannot take literally (see "Searching" above).
_FILTER_UNSAFE = re.compile(r"[%_'\"\\]")
_EQUALS_UNSAFE = re.compile(r"['\\]")

_HTTP_ENV = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")


class _NotFound(LookupError):
    """MLflow said RESOURCE_DOES_NOT_EXIST; each method turns it into its own answer."""


_OWN_ERRORS = (BackendUnavailable, CatalogConflict, CatalogRejected, ArtifactMissing, _NotFound)


def configure_mlflow_http(timeout_seconds: float, max_retries: int) -> dict[str, str]:
    """Set MLflow's HTTP timeout/retry environment variables where unset; returns the values in
    force (see the module docstring)."""
    wanted = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(timeout_seconds))),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(max_retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    }
    for name, value in wanted.items():
        current = os.environ.setdefault(name, value)
        if current != value:
            log.warning("%s=%s is already set in this process and wins over %s asked by MlflowCatalog",
                        name, current, value)
    return {name: os.environ[name] for name in _HTTP_ENV}


class MlflowCatalog:
    """The ModelCatalog port over the MLflow tracking server at `tracking_uri` (http or https).

    Sets MLflow's HTTP timeout and retry environment variables when unset (module docstring):
    they are process-wide.
    """

    def __init__(self, tracking_uri: str, timeout_seconds: float, max_retries: int = 0):
        parts = urlsplit(tracking_uri)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"MLflow tracking URI must be http(s)://host[:port], not {tracking_uri!r}")
        if not timeout_seconds > 0:
            raise ValueError("timeout_seconds must be positive")
        if not 0 <= max_retries <= 10:  # MLflow refuses more than 10 (_MLFLOW_HTTP_REQUEST_MAX_RETRIES_LIMIT)
            raise ValueError("max_retries must be between 0 and 10")
        self.http_settings = configure_mlflow_http(timeout_seconds, max_retries)

        self._uri = tracking_uri.rstrip("/")
        self._netloc = parts.netloc
        self._timeout = float(timeout_seconds)
        self._executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="mlflow-catalog")
        # Importing mlflow takes seconds: on a catalog thread, so the server starts serving meanwhile
        # (a call made before it is done waits for it on its own thread).
        self._client_ready = self._executor.submit(self._make_client)
        self._closed = False

    def _make_client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self._uri, registry_uri=self._uri)

    @property
    def _client(self):
        return self._client_ready.result()

    # ----- plumbing -----

    async def _call(self, work: Callable[[], T]) -> T:
        """Run `work` on the catalog's threads (with the caller's context variables)."""
        if self._closed:
            raise BackendUnavailable("the MLflow catalog is closed")
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        try:
            future = loop.run_in_executor(self._executor, context.run, work)
        except RuntimeError as exc:  # shut down meanwhile
            raise BackendUnavailable("the MLflow catalog is closed") from exc
        return await future

    # ----- registered models -----

    async def create_model(self, name: str, description: str, tags: dict[str, str]) -> CatalogModel:
        candidates = {"name": [name], "description": [description], "tags": [*tags, *tags.values()]}

        def work() -> CatalogModel:
            model = _do("name", lambda: self._client.create_registered_model(
                name, tags=dict(tags) or None, description=description or None), candidates=candidates, conflict=True)
            return _model(model)

        return await self._call(work)

    async def get_model(self, name: str) -> CatalogModel | None:
        try:
            return await self._call(lambda: _model(_do("name", self._client.get_registered_model, name)))
        except _NotFound:
            return None

    async def search_models(self, name_contains: str, tags: dict[str, str | None], page_size: int,
                            page_token: str) -> tuple[list[CatalogModel], str]:
        filter_string, exact = _model_filter(name_contains, tags)
        candidates = {"name_contains": [name_contains], "tags": [*tags, *(v for v in tags.values() if v)]}

        def work() -> tuple[list[CatalogModel], str]:
            page = _do("name_contains", lambda: self._client.search_registered_models(
                filter_string=filter_string or None, max_results=page_size, order_by=_MODEL_ORDER,
                page_token=page_token or None), candidates=candidates)
            models = [_model(m) for m in page]
            return [m for m in models if exact(m)], page.token or ""

        return await self._call(work)

    async def update_model(self, name: str, description: str | None, set_tags: dict[str, str],
                           remove_tag_keys: Sequence[str]) -> CatalogModel | None:
        """One MLflow call per change (removals, then new tags, so a key in both ends up set),
        then a read; not atomic: a failure can leave the earlier changes applied."""
        client = self._client

        def work() -> CatalogModel:
            if description is not None:
                _do("description", client.update_registered_model, name, description,
                    candidates={"description": [description]})
            for key in remove_tag_keys:
                _do("remove_tag_keys", client.delete_registered_model_tag, name, key)
            for key, value in set_tags.items():
                _do("set_tags", client.set_registered_model_tag, name, key, value)
            return _model(_do("name", client.get_registered_model, name))

        try:
            return await self._call(work)
        except _NotFound:
            return None

    async def delete_model(self, name: str) -> bool:
        """Deletes the model with every version (MLflow cascades)."""
        try:
            await self._call(lambda: _do("name", self._client.delete_registered_model, name))
        except _NotFound:
            return False
        return True

    # ----- versions -----

    async def create_version(self, name: str, source: str, run_id: str, description: str,
                             tags: dict[str, str]) -> CatalogVersion:
        """Raises CatalogRejected("name") when the model does not exist."""
        candidates = {"name": [name], "source": [source], "run_id": [run_id], "description": [description],
                      "tags": [*tags, *tags.values()]}

        def work() -> CatalogVersion:
            version = _do("name", lambda: self._client.create_model_version(
                name, source, run_id=run_id or None, tags=dict(tags) or None, description=description or None,
                await_creation_for=0), candidates=candidates)
            return _version(version)

        try:
            return await self._call(work)
        except _NotFound as exc:
            raise CatalogRejected("name", str(exc)) from None

    async def get_version(self, name: str, version: str) -> CatalogVersion | None:
        try:
            return await self._call(lambda: _version(_do("version", self._client.get_model_version, name, version)))
        except _NotFound:
            return None

    async def list_versions(self, name: str) -> list[CatalogVersion]:
        """Every version of one model, in version order (empty when the model does not exist):
        the model (for its aliases: MLflow's version search leaves them out), then
        search_model_versions page after page."""
        client = self._client
        clause, inexact = _equals("name", name)

        def work() -> list[CatalogVersion]:
            model = _do("name", client.get_registered_model, name)
            aliases: dict[str, list[str]] = {}
            for alias, number in (model.aliases or {}).items():
                aliases.setdefault(str(number), []).append(alias)
            found = []
            token = None
            while True:
                page = _do("name", lambda: client.search_model_versions(
                    clause, max_results=VERSIONS_PAGE_SIZE, order_by=_VERSION_ORDER, page_token=token))
                found.extend(page)
                if not page.token or not len(page):
                    break
                token = page.token
            versions = [_version(v, tuple(sorted(aliases.get(str(v.version), ())))) for v in found
                        if not inexact or v.name == name]
            return sorted(versions, key=lambda v: int(v.version))

        try:
            return await self._call(work)
        except _NotFound:
            return []

    async def update_version(self, name: str, version: str, description: str | None, set_tags: dict[str, str],
                             remove_tag_keys: Sequence[str]) -> CatalogVersion | None:
        """As update_model: one call per change, then a read; not atomic."""
        client = self._client

        def work() -> CatalogVersion:
            if description is not None:
                _do("description", client.update_model_version, name, version, description,
                    candidates={"description": [description]})
            for key in remove_tag_keys:
                _do("remove_tag_keys", client.delete_model_version_tag, name, version, key)
            for key, value in set_tags.items():
                _do("set_tags", client.set_model_version_tag, name, version, key, value)
            return _version(_do("version", client.get_model_version, name, version))

        try:
            return await self._call(work)
        except _NotFound:
            return None

    async def delete_version(self, name: str, version: str) -> bool:
        try:
            await self._call(lambda: _do("version", self._client.delete_model_version, name, version))
        except _NotFound:
            return False
        return True

    # ----- aliases -----

    async def set_alias(self, name: str, alias: str, version: str) -> None:
        """Points `alias` at `version` (moving it if it pointed elsewhere). Raises
        CatalogRejected("name") / ("version") when the model / version does not exist."""
        try:
            await self._call(lambda: _do("alias", self._client.set_registered_model_alias, name, alias, version))
        except _NotFound as exc:
            raise CatalogRejected("version" if "model version (" in str(exc).lower() else "name", str(exc)) from None

    async def delete_alias(self, name: str, alias: str) -> bool:
        """False when the model or the alias does not exist (MLflow's delete succeeds either
        way, so the model is read first)."""
        client = self._client

        def work() -> bool:
            model = _do("name", client.get_registered_model, name)
            if alias not in (model.aliases or {}):
                return False
            _do("alias", client.delete_registered_model_alias, name, alias)
            return True

        try:
            return await self._call(work)
        except _NotFound:
            return False

    # ----- run artifacts -----

    async def download_run_artifact(self, run_id: str, path: str, dest_dir: Path) -> Path:
        """Fetch the single file `runs:/<run_id>/<path>` into dest_dir (under its relative path);
        raises ArtifactMissing (no such run or file, a directory, a storage scheme not accepted)."""
        relative = _artifact_path(run_id, path)
        where = f"runs:/{run_id}/{relative}"

        def work() -> Path:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            run = _artifact_step(where, self._client.get_run, run_id)
            artifact_uri = run.info.artifact_uri or ""
            self._check_artifact_uri(where, artifact_uri)
            repo = _artifact_step(where, get_artifact_repository, artifact_uri, tracking_uri=self._uri)
            if _artifact_step(where, repo.list_artifacts, relative):
                raise ArtifactMissing(f"{where} is a directory; a single file is expected")
            dest = Path(dest_dir)
            dest.mkdir(parents=True, exist_ok=True)
            local = Path(_artifact_step(where, repo.download_artifacts, relative, str(dest)))
            if not local.is_file() or not local.resolve().is_relative_to(dest.resolve()):
                raise ArtifactMissing(f"{where} is not a single file")
            return local

        return await self._call(work)

    def _check_artifact_uri(self, where: str, artifact_uri: str) -> None:
        parts = urlsplit(artifact_uri)
        if parts.scheme not in ARTIFACT_SCHEMES:
            raise ArtifactMissing(f"{where}: artifacts stored at {parts.scheme or 'a local path'}: are not accepted "
                                  f"(only {', '.join(sorted(ARTIFACT_SCHEMES))})")
        if parts.scheme == "mlflow-artifacts" and parts.netloc and parts.netloc != self._netloc:
            raise ArtifactMissing(f"{where}: artifacts proxied by another server are not accepted")

    # ----- lifecycle -----

    async def ping(self) -> bool:
        """Whether GET <tracking_uri>/health answers 200 within the timeout; never raises."""
        # Plain urllib on a thread of its own: no mlflow import on the event loop (seconds), and an
        # answer even while the catalog's threads are all busy.
        def work() -> bool:
            with urllib.request.urlopen(f"{self._uri}/health", timeout=self._timeout) as response:
                return response.status == 200

        if self._closed:
            return False
        try:
            return await asyncio.wait_for(asyncio.to_thread(work), timeout=self._timeout + 1.0)
        except Exception:  # noqa: BLE001 - a health check answers, it does not raise
            return False

    async def close(self) -> None:
        """Refuses new calls (BackendUnavailable) and lets the threads end once the calls under
        way are done (each bounded by MLflow's timeout; the event loop is not blocked)."""
        self._closed = True
        self._executor.shutdown(wait=False)


# ----- MLflow entities -> port records -----

def _time(ms: int | None) -> datetime | None:
    return None if ms is None else _EPOCH + timedelta(milliseconds=int(ms))


def _model(model: RegisteredModel) -> CatalogModel:
    return CatalogModel(
        name=model.name,
        description=model.description or "",
        tags=dict(model.tags or {}),
        aliases={alias: str(version) for alias, version in (model.aliases or {}).items()},
        create_time=_time(model.creation_timestamp),
        update_time=_time(model.last_updated_timestamp),
    )


def _version(version: ModelVersion, aliases: tuple[str, ...] | None = None) -> CatalogVersion:
    return CatalogVersion(
        model_name=version.name,
        version=str(version.version),
        description=version.description or "",
        source=version.source or "",
        run_id=version.run_id or "",
        tags=dict(version.tags or {}),
        aliases=tuple(version.aliases or ()) if aliases is None else aliases,
        create_time=_time(version.creation_timestamp),
        update_time=_time(version.last_updated_timestamp),
    )


# ----- filters -----

def _like_pattern(text: str) -> tuple[str, bool]:
    """`text` as a LIKE pattern body and whether it is inexact (it then matches a superset)."""
    return _FILTER_UNSAFE.sub("_", text), bool(_FILTER_UNSAFE.search(text))


def _equals(lhs: str, value: str) -> tuple[str, bool]:
    """A clause `lhs` equals `value`, and whether it is inexact (it then selects a superset)."""
    if not _EQUALS_UNSAFE.search(value):
        return f"{lhs} = '{value}'", False
    pattern, _ = _like_pattern(value)
    return f"{lhs} LIKE '{pattern}'", True


def _model_filter(name_contains: str, tags: Mapping[str, str | None]) -> tuple[str, Callable[[CatalogModel], bool]]:
    """MLflow's filter string and the exact check for the models it returns."""
    clauses: list[str] = []
    checks: list[Callable[[CatalogModel], bool]] = []
    if name_contains:
        pattern, inexact = _like_pattern(name_contains)
        clauses.append(f"name ILIKE '%{pattern}%'")
        if inexact:
            needle = name_contains.lower()
            checks.append(lambda m: needle in m.name.lower())
    for key, value in tags.items():
        if "`" in key or not key:
            raise CatalogRejected("tags", f"tag key {key[:50]!r} cannot be searched (empty or with a backquote)")
        lhs = f"tags.`{key}`"
        if value is None:
            clauses.append(f"{lhs} LIKE '%'")  # the tag is present, any value
            continue
        clause, inexact = _equals(lhs, value)
        clauses.append(clause)
        if inexact:
            checks.append(lambda m, k=key, v=value: m.tags.get(k) == v)
    return " AND ".join(clauses), lambda m: all(check(m) for check in checks)


# ----- errors -----

def _do(field: str, fn: Callable[..., T], *args: Any, candidates: Mapping[str, Iterable[str]] | None = None,
        conflict: bool = False) -> T:
    """Call MLflow; its exceptions become the port's (`field`: the parameter a rejection concerns
    unless MLflow's message says otherwise; `candidates`: the values of the call's fields)."""
    try:
        return fn(*args)
    except _OWN_ERRORS:
        raise
    except Exception as exc:
        raise _translated(exc, field, candidates or {}, conflict) from exc


def _translated(exc: BaseException, field: str, candidates: Mapping[str, Iterable[str]],
                conflict: bool) -> BaseException:
    from mlflow.exceptions import MlflowException

    if _is_transport_failure(exc):
        return BackendUnavailable(f"MLflow unreachable: {_root_cause(exc)}")
    if not isinstance(exc, MlflowException):
        return exc  # not MLflow's: a bug here, let it show as itself
    code, message = exc.error_code, _message(exc)
    if code in _NOT_FOUND_CODES:
        return _NotFound(message)
    if code in _EXISTS_CODES and conflict:
        return CatalogConflict(message)
    if code in _REJECTED_CODES:
        return CatalogRejected(_field_of(exc, field, candidates), message)
    if code in _UNAVAILABLE_CODES or exc.get_http_status_code() >= 500:
        return BackendUnavailable(f"MLflow cannot serve: {code}: {message}")
    return RuntimeError(f"MLflow failed: {code}: {message}")


def _chain(exc: BaseException | None) -> Iterable[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_transport_failure(exc: BaseException) -> bool:
    for link in _chain(exc):
        if isinstance(link, (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError,
                             urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
            return True
        if type(link).__module__.startswith("botocore") and type(link).__name__ in _BOTO_UNAVAILABLE:
            return True
    return False


def _root_cause(exc: BaseException) -> str:
    root = list(_chain(exc))[-1]
    return _cut(f"{type(root).__name__}: {root}")


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS - 3] + "..."


def _message(exc: BaseException) -> str:
    """MLflow's message without its code prefix, SQL statement or driver noise, <= 200 chars."""
    text = getattr(exc, "message", None) or str(exc)
    text = text.split("[SQL:", 1)[0]
    text = re.sub(r"^[A-Z_]+: ", "", text.strip())
    text = re.sub(r"\(raised as a result of [^)]*\)", "", text)
    text = re.sub(r"\((?:psycopg2?|pymysql|MySQLdb|sqlite3|pyodbc|pymssql)[\w.]*\)", "", text)
    return _cut(text) or "rejected by MLflow"


def _field_of(exc: BaseException, default: str, candidates: Mapping[str, Iterable[str]]) -> str:
    full = (getattr(exc, "message", None) or str(exc)).lower()
    text = full.split("[sql:", 1)[0]
    for field, hints in _GLOBAL_HINTS:
        if any(hint in text for hint in hints):
            return field
    for field in candidates:
        if any(word in text for word in _FIELD_WORDS.get(field, ())):
            return field
    limit = re.search(r"varying\((\d+)\)", text)  # PostgreSQL: value too long for type character varying(N)
    if limit:
        for field, values in candidates.items():
            if any(len(value) > int(limit.group(1)) for value in values):
                return field
    if "_tags" in full:  # the SQL statement wrote a tags table
        for field in candidates:
            if "tag" in field:
                return field
    return default


# ----- run artifacts -----

def _artifact_path(run_id: str, path: str) -> str:
    """`path` as a relative POSIX path inside the run, or ArtifactMissing."""
    if not run_id or not path or "\\" in path or "\x00" in path:
        raise ArtifactMissing(f"runs:/{run_id}/{path}: a run id and a file path inside the run are required")
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or str(pure) in ("", "."):
        raise ArtifactMissing(f"runs:/{run_id}/{path}: the path must be relative, inside the run")
    return str(pure)


def _artifact_step(where: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """An artifact call: transport failures are BackendUnavailable; anything that says the run
    or file is not there (MLflow folds a download's failures into one message) is ArtifactMissing."""
    try:
        return fn(*args, **kwargs)
    except _OWN_ERRORS:
        raise
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        if _is_transport_failure(exc):
            raise BackendUnavailable(f"MLflow unreachable: {_root_cause(exc)}") from exc
        code = getattr(exc, "error_code", "")
        text = str(exc).lower()
        boto_code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")).lower() \
            if type(exc).__module__.startswith("botocore") else ""
        if (code in _NOT_FOUND_CODES or code in _REJECTED_CODES
                or boto_code in _BOTO_MISSING or any(marker in text for marker in _MISSING_MARKERS)):
            raise ArtifactMissing(f"{where}: {_message(exc)}") from exc
        if isinstance(exc, MlflowException) or type(exc).__module__.startswith(("botocore", "boto3", "requests")):
            raise BackendUnavailable(f"artifact store failed for {where}: {_message(exc)}") from exc
        raise

"""The ModelPublisher port over MLflow (the run's record) and the Registry (the new version).

A trained model is logged to MLflow, then registered in the Registry from that MLflow run
(`runs:/<mlflow run>/model/<file>`: the Registry copies the artifact into its own store) as a
new version in Staging, the Registry's Staging gates applying.

MLflow layout. One experiment per model, `retraining/<model name>` (created when missing,
restored when deleted). One MLflow run per *attempt* of a retraining run, tagged
`retraining.run_id` and `retraining.attempt`, holding the model's parameters, metrics, tags and
the artifact under `model/`. Why per attempt rather than one run reused by every attempt: each
attempt trains anew, and MLflow cannot replace what a run holds (a parameter's value is
immutable; an overwritten artifact would no longer be the bytes a version was registered from).
What keeps attempts from piling up or registering twice:
  - runs tagged with the retraining run id are looked up first: one that already registered a
    version (tag `retraining.registered_version`) ends the publish there (an attempt retried
    after its predecessor registered logs nothing new); one of the same attempt is reused (a
    publish called again); earlier attempts' runs still RUNNING (their worker died mid-publish)
    are ended KILLED;
  - the Registry call carries a request id derived from the retraining run id, so a retry gets
    the version the first call created, and `Published.mlflow_run_id` is that version's source
    run (the MLflow run it was really registered from).

Timeouts. MLflow's client is blocking: it runs on threads (asyncio.to_thread), each HTTP request
bounded by MLflow's process-wide timeout variables (set by the registry's
`configure_mlflow_http` when unset: the first MLflow user of a process decides them), the whole
MLflow part by `mlflow_deadline_seconds` (the artifact upload dominates). A call given up on
finishes in its thread; its result is dropped. Registry calls have a gRPC deadline.

Errors: no mlflow, requests or grpc exception leaves this module; they become TrainingFailed, in
`_mlflow_failure` and `_registry_failure` (an exception of none of them, a bug, shows as itself):
  - MLflow unreachable, timed out, 5xx, throttled, refusing our credentials: MLFLOW_UNAVAILABLE
    (retryable); MLflow refusing what was logged (4xx): TRAINING_FAILED (not retryable)
  - the Registry unreachable, too slow, overloaded, failing: REGISTRY_UNAVAILABLE (retryable)
  - the Registry saying no (a Staging gate, a bad artifact, a bad signature): REGISTRY_REFUSED
    (not retryable), the message starting with the Registry's own reason (e.g. GATE_FAILED).
    The reason itself stays the pipeline's: a run's error carries only reasons of the pipeline's
    contract.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Self, TypeVar

import grpc
import requests
import urllib3
from ml_serving import RegistryClient
from ml_serving.errors import MLServingError
from mnbara.mlserving.registry.v1 import registry_pb2 as pb

from ..registry.mlflow_catalog import configure_mlflow_http
from .domain.retraining import Published, Run, TrainedModel, TrainingFailed

log = logging.getLogger(__name__)

T = TypeVar("T")

EXPERIMENT_PREFIX = "retraining/"
ARTIFACT_DIR = "model"
TAG_RUN_ID = "retraining.run_id"  # also a tag of the registered version
TAG_ATTEMPT = "retraining.attempt"
TAG_TRIGGER = "retraining.trigger"
TAG_REASON = "retraining.reason"
TAG_SCHEDULE_ID = "retraining.schedule_id"
TAG_ALERT_ID = "retraining.alert_id"
TAG_MODEL_NAME = "retraining.model_name"
TAG_REGISTERED_VERSION = "retraining.registered_version"
TAG_NOTE = "mlflow.note.content"  # MLflow shows it as the run's description

MAX_REASON_CHARS = 500
MAX_DESCRIPTION_CHARS = 5000  # the Registry's limit
MAX_MESSAGE_CHARS = 300
MAX_REQUEST_ID = 128  # the Registry's limit
RUNS_LOOKED_UP = 100  # runs of one retraining run: one per attempt, and attempts are few

# Registry status codes worth another attempt: it is down, slow, overloaded or failing.
_REGISTRY_TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                 grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
                                 grpc.StatusCode.CANCELLED, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
# MLflow error codes that say "not now" rather than "not this" (mlflow.protos.databricks_pb2 names).
_MLFLOW_TRANSIENT = frozenset({"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "IO_ERROR", "DEADLINE_EXCEEDED",
                               "RESOURCE_EXHAUSTED", "REQUEST_LIMIT_EXCEEDED", "UNAUTHENTICATED",
                               "PERMISSION_DENIED", "ENDPOINT_NOT_FOUND", "ABORTED", "CANCELLED",
                               "SERVICE_UNDER_MAINTENANCE", "COULD_NOT_ACQUIRE_LOCK"})
_MLFLOW_STACK = ("mlflow", "requests", "urllib3", "botocore", "boto3", "http.client")
_FILTER_UNSAFE = re.compile(r"['\"\\%_]")  # MLflow's filter grammar has no escape character


@dataclass(frozen=True)
class _Logged:
    mlflow_run_id: str
    registered_version: str = ""  # set when an earlier attempt's run already registered one


class MlflowRegistryPublisher:
    """Publishes trained models to the MLflow tracking server at `tracking_uri` and the Registry
    at `registry_addr` (host:port, or a callable giving it when first needed, e.g. the mesh's own
    address once it listens). `token`: the bearer token shown to the Registry (scope
    registry.write), or a callable returning it per call; empty: none."""

    def __init__(self, tracking_uri: str, registry_addr: str | Callable[[], str], *,
                 token: str | Callable[[], str] = "", mlflow_timeout_seconds: float = 10.0,
                 mlflow_deadline_seconds: float = 600.0, registry_timeout_seconds: float = 120.0,
                 mlflow_max_retries: int = 0):
        if not tracking_uri.startswith(("http://", "https://")):
            raise ValueError(f"MLflow tracking URI must be http(s)://host[:port], not {tracking_uri!r}")
        if not (mlflow_timeout_seconds > 0 and mlflow_deadline_seconds > 0 and registry_timeout_seconds > 0):
            raise ValueError("timeouts must be positive")
        if not 0 <= mlflow_max_retries <= 10:  # MLflow refuses more than 10
            raise ValueError("mlflow_max_retries must be between 0 and 10")
        configure_mlflow_http(mlflow_timeout_seconds, mlflow_max_retries)
        self._tracking_uri = tracking_uri.rstrip("/")
        self._registry_addr = registry_addr
        self._token = token
        self._mlflow_timeout = mlflow_timeout_seconds
        self._mlflow_deadline = mlflow_deadline_seconds
        self._registry_timeout = registry_timeout_seconds
        self._client: Any = None  # MlflowClient, made on first use (importing mlflow takes seconds)
        self._registry: RegistryClient | None = None
        self._experiments: dict[str, str] = {}  # experiment name -> id
        self._closed = False

    @classmethod
    async def connect(cls, tracking_uri: str, registry_addr: str | Callable[[], str], **options: Any) -> Self:
        """A publisher with MLflow's client already loaded (off the event loop); nothing is called yet."""
        publisher = cls(tracking_uri, registry_addr, **options)
        await asyncio.to_thread(publisher._mlflow_client)
        return publisher

    async def close(self) -> None:
        """Closes the Registry channel; publishing afterwards is a bug (RuntimeError)."""
        self._closed = True
        if self._registry is not None:
            await self._registry.close()
            self._registry = None

    # ----- the port -----

    async def publish(self, run: Run, model: TrainedModel) -> Published:
        if self._closed:
            raise RuntimeError("the publisher is closed")
        signature = _signature(model.signature)
        sha256 = await asyncio.to_thread(_sha256, model.artifact_path)
        logged = await self._on_mlflow(self._log_run, run, model)
        if logged.registered_version:
            return Published(logged.mlflow_run_id, logged.registered_version)
        version = await self._register(run, model, logged.mlflow_run_id, sha256, signature)
        await self._note_registered(logged.mlflow_run_id, version.version)
        # A retry answered by the Registry's request id names the run it was registered from.
        return Published(version.source_run_id or logged.mlflow_run_id, version.version)

    # ----- MLflow (blocking: on threads) -----

    def _mlflow_client(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self._tracking_uri)
        return self._client

    async def _on_mlflow(self, work: Callable[..., T], *args: Any, deadline: float | None = None) -> T:
        try:
            return await asyncio.wait_for(asyncio.to_thread(work, *args), deadline or self._mlflow_deadline)
        except TrainingFailed:
            raise
        except Exception as exc:
            failure = _mlflow_failure(exc)
            if failure is None:
                raise  # not MLflow's nor the network's: a bug, shown as itself
            raise failure from exc

    def _log_run(self, run: Run, model: TrainedModel) -> _Logged:
        """Logs the model into this attempt's MLflow run and ends it FINISHED; or, when a run of
        this retraining run already registered a version, only says which."""
        experiment_id = self._experiment_id(run.model_name)
        earlier = self._runs_of(experiment_id, run.run_id)
        for found in earlier:
            if found.data.tags.get(TAG_REGISTERED_VERSION):
                return _Logged(found.info.run_id, found.data.tags[TAG_REGISTERED_VERSION])
        mlflow_run_id = self._attempt_run(experiment_id, run, earlier)
        self._log_model(mlflow_run_id, run, model)
        self._client.set_terminated(mlflow_run_id, "FINISHED")
        return _Logged(mlflow_run_id)

    def _attempt_run(self, experiment_id: str, run: Run, earlier: list) -> str:
        """This attempt's MLflow run: the one found (publish called again) or a new one. Runs of
        earlier attempts still RUNNING died with their worker: they are ended KILLED."""
        client = self._mlflow_client()
        mine = [r.info.run_id for r in earlier if r.data.tags.get(TAG_ATTEMPT) == str(run.attempt)]
        for stale in earlier:
            if stale.info.run_id not in mine and stale.info.status == "RUNNING":
                client.set_terminated(stale.info.run_id, "KILLED")
        if mine:
            return mine[0]
        # Tagged at creation, so that a publish failing after this still finds it.
        created = client.create_run(experiment_id, run_name=f"{run.run_id}-attempt-{run.attempt}",
                                    tags={TAG_RUN_ID: run.run_id, TAG_ATTEMPT: str(run.attempt)})
        return created.info.run_id

    def _log_model(self, mlflow_run_id: str, run: Run, model: TrainedModel) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now_ms = int(time.time() * 1000)
        self._client.log_batch(
            mlflow_run_id,
            metrics=[Metric(key, float(value), now_ms, 0) for key, value in model.metrics.items()],
            params=[Param(key, str(value)) for key, value in model.parameters.items()],
            tags=[RunTag(key, value) for key, value in _run_tags(run, model).items()])
        self._client.log_artifact(mlflow_run_id, str(model.artifact_path), ARTIFACT_DIR)

    def _experiment_id(self, model_name: str) -> str:
        """`retraining/<model>`'s id: created when missing (by us or a concurrent worker), restored
        when deleted (runs cannot be created in a deleted experiment)."""
        from mlflow.exceptions import MlflowException

        name = f"{EXPERIMENT_PREFIX}{model_name}"
        if name in self._experiments:
            return self._experiments[name]
        client = self._mlflow_client()
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(name, tags={TAG_MODEL_NAME: model_name})
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment_id = client.get_experiment_by_name(name).experiment_id
        else:
            experiment_id = experiment.experiment_id
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment_id)
        self._experiments[name] = experiment_id
        return experiment_id

    def _runs_of(self, experiment_id: str, run_id: str) -> list:
        """The MLflow runs of a retraining run, oldest first. A run id the filter grammar cannot
        take literally is matched with `_` wildcards and then checked exactly here."""
        pattern = _FILTER_UNSAFE.sub("_", run_id)
        clause = (f"tags.`{TAG_RUN_ID}` = '{run_id}'" if pattern == run_id
                  else f"tags.`{TAG_RUN_ID}` LIKE '{pattern}'")
        found = self._mlflow_client().search_runs([experiment_id], filter_string=clause,
                                                  max_results=RUNS_LOOKED_UP, order_by=["attributes.start_time ASC"])
        return [r for r in found if r.data.tags.get(TAG_RUN_ID) == run_id]

    async def _note_registered(self, mlflow_run_id: str, version: str) -> None:
        """Tags the MLflow run with its version, so a later attempt logs nothing new. Best effort:
        if it fails, the Registry's request id still answers a retry with the same version."""
        try:
            await self._on_mlflow(self._tag_registered, mlflow_run_id, version, deadline=self._mlflow_timeout + 1.0)
        except TrainingFailed as failure:
            log.warning("could not tag MLflow run %s with its registered version %s: %s",
                        mlflow_run_id, version, failure.message)

    def _tag_registered(self, mlflow_run_id: str, version: str) -> None:
        self._mlflow_client().set_tag(mlflow_run_id, TAG_REGISTERED_VERSION, version)

    # ----- the Registry -----

    def _registry_client(self) -> RegistryClient:
        if self._registry is None:
            try:
                addr = self._registry_addr() if callable(self._registry_addr) else self._registry_addr
            except RuntimeError as error:  # the mesh is not listening yet
                raise TrainingFailed("REGISTRY_UNAVAILABLE", _cut(f"the Registry's address is not known yet: {error}"),
                                     code="UNAVAILABLE", retryable=True) from None
            self._registry = RegistryClient(addr, token=self._token, timeout=self._registry_timeout)
        return self._registry

    async def _register(self, run: Run, model: TrainedModel, mlflow_run_id: str, sha256: str,
                        signature: pb.ModelSignature | None) -> pb.ModelVersion:
        try:
            response = await self._registry_client().create_model_version(
                run.model_name, artifact_uri=f"runs:/{mlflow_run_id}/{ARTIFACT_DIR}/{model.artifact_path.name}",
                artifact_sha256=sha256, source_run_id=mlflow_run_id, metrics=model.metrics,
                parameters={key: str(value) for key, value in model.parameters.items()},
                tags={**model.tags, TAG_RUN_ID: run.run_id}, description=model.description[:MAX_DESCRIPTION_CHARS],
                signature=signature, initial_stage=pb.STAGE_STAGING, create_model_if_missing=True,
                request_id=registry_request_id(run.run_id))
        except MLServingError as error:
            raise _registry_failure(error, run.model_name) from None
        return response.model_version


def registry_request_id(run_id: str) -> str:
    """The Registry's idempotency key of a retraining run: every attempt sends the same one."""
    key = f"retraining:{run_id}"
    if len(key) <= MAX_REQUEST_ID and key.isprintable():
        return key
    return f"retraining:sha256:{hashlib.sha256(run_id.encode()).hexdigest()}"


def _run_tags(run: Run, model: TrainedModel) -> dict[str, str]:
    tags = {**model.tags, TAG_RUN_ID: run.run_id, TAG_ATTEMPT: str(run.attempt), TAG_TRIGGER: run.trigger.value,
            TAG_MODEL_NAME: run.model_name}
    optional = {TAG_REASON: run.reason[:MAX_REASON_CHARS], TAG_SCHEDULE_ID: run.schedule_id,
                TAG_ALERT_ID: run.alert_id, TAG_NOTE: model.description[:MAX_DESCRIPTION_CHARS]}
    return {**tags, **{key: value for key, value in optional.items() if value}}


def _signature(spec: dict[str, Any]) -> pb.ModelSignature | None:
    """The trainer's {"inputs": [{name, datatype, shape, optional}], "outputs": [...]} as the
    Registry's message (which has no `optional`); empty: none. Checked before anything is logged."""
    if not spec:
        return None
    try:
        def tensors(items) -> list[pb.TensorSpec]:
            return [pb.TensorSpec(name=t["name"], datatype=t["datatype"], shape=[int(d) for d in t.get("shape", ())])
                    for t in items or ()]
        return pb.ModelSignature(inputs=tensors(spec.get("inputs")), outputs=tensors(spec.get("outputs")))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TrainingFailed("TRAINING_FAILED", _cut(f"the trainer's signature is malformed: {exc!r}"),
                             code="INVALID_ARGUMENT") from None


def _sha256(path: Path) -> str:
    if not path.is_file():
        raise TrainingFailed("TRAINING_FAILED", _cut(f"the trained artifact {path} is not a file"),
                             code="FAILED_PRECONDITION")
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# ----- errors -----

def _mlflow_failure(exc: BaseException) -> TrainingFailed | None:
    """What an exception out of MLflow's client means for the run; None: not MLflow's."""
    from mlflow.exceptions import MlflowException

    if _is_transport_failure(exc):
        return TrainingFailed("MLFLOW_UNAVAILABLE", _cut(f"MLflow unreachable: {_root_cause(exc)}"),
                              code="UNAVAILABLE", retryable=True)
    status = _http_status(exc)
    code = exc.error_code if isinstance(exc, MlflowException) else ""
    if status >= 500 or status in (401, 403, 429) or code in _MLFLOW_TRANSIENT:
        return TrainingFailed("MLFLOW_UNAVAILABLE", _cut(f"MLflow cannot serve: {code or status}: {exc}"),
                              code="UNAVAILABLE", retryable=True)
    if isinstance(exc, MlflowException) or status:
        return TrainingFailed("TRAINING_FAILED", _cut(f"MLflow refused what the run logged: {code or status}: {exc}"),
                              code="FAILED_PRECONDITION")
    if type(exc).__module__.startswith(_MLFLOW_STACK):
        return TrainingFailed("MLFLOW_UNAVAILABLE", _cut(f"MLflow failed: {type(exc).__name__}: {exc}"),
                              code="UNAVAILABLE", retryable=True)
    return None


def _registry_failure(error: MLServingError, model_name: str) -> TrainingFailed:
    """What a failed Registry call means for the run."""
    why = f"{error.reason or error.code.name}: {error.message}"
    if error.code in _REGISTRY_TRANSIENT:
        return TrainingFailed("REGISTRY_UNAVAILABLE", _cut(f"the Registry did not answer: {why}"),
                              code="UNAVAILABLE", retryable=True)
    return TrainingFailed("REGISTRY_REFUSED", _cut(f"the Registry refused the new version of {model_name}: {why}"),
                          code="FAILED_PRECONDITION")


def _chain(exc: BaseException | None):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__  # MLflow wraps transport errors without `from`


def _is_transport_failure(exc: BaseException) -> bool:
    return any(isinstance(link, (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError,
                                 urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))
               for link in _chain(exc))


def _http_status(exc: BaseException) -> int:
    """The HTTP status an MLflow answer or an artifact upload failed with; 0 when none."""
    for link in _chain(exc):
        response = getattr(link, "response", None)
        if isinstance(getattr(response, "status_code", None), int):
            return response.status_code
        status = getattr(link, "get_http_status_code", None)
        if callable(status):
            return int(status())
    return 0


def _root_cause(exc: BaseException) -> str:
    root = list(_chain(exc))[-1]
    return f"{type(root).__name__}: {root}"


def _cut(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS - 3] + "..."

"""`make up`'s demo: the `recommendation-model` built, registered, staged and served.

`setup_demo` talks to a running mesh over gRPC, as any client would, with a token:

1. builds both versions' `.mar` archives (`demo_model.build_demo_models`, cached under the
   state directory: only the first `make up`, or one after the demo's code changed, trains);
2. registers the model and the two versions in the Registry (artifact bytes, hold-out metrics,
   signature), reusing a version that already holds the same artifact (same SHA-256), so a
   second `make up` creates nothing;
3. stages them: v1 in Production, v2 in Staging. v1 is the incumbent, v2 the better challenger
   (hold-out AUC 0.82 against 0.65), which is where a real rollout stands before an A/B test
   or a canary: both are served (the deployer loads Staging and Production), Predict without a
   selector answers v1, `"stage": "STAGE_STAGING"` answers v2, and promoting v2 is the next
   step to try. Stages are only walked when versions were just registered or nothing is in
   Production, so what a user changed by hand stays as it is across `make up`s;
4. waits (bounded) until Predict answers from every served version: with the deployer on
   (`make up`) it loads them (and the setup loads them too when the deployer has not after a
   few seconds, see `setup_demo`); `load=True` loads them through `LoadModel` right away (a
   mesh without a deployer, as the tests' in-process one).

`run_demo_setup` is what `make up` calls: any failure is a printed warning, never the end of
the mesh (the demo is a convenience).

The Feature Store's demo data (users, items and interaction events, `demo_data`) goes straight
into the mesh's PostgreSQL: `DemoDataLoad` loads it in a thread while the mesh starts and
the model is set up (nothing to do when an earlier `make up` loaded the same data), and prints
one line with the sizes and the seconds it took; `DEMO_DATA_USERS`, `DEMO_DATA_ITEMS` and
`DEMO_DATA_EVENTS` change the sizes, `DEMO_DATA=off` skips it.

Once the data is there and the mesh is up, `DemoFeatures` materialises the feature views of
`features/*.yaml` into Redis in a thread of its own (`MaterializeFeatures`: FULL when the loader
just (re)loaded the data, incremental otherwise), without holding up the start: it prints one
line when the jobs end (30 to 60 s for the default sizes' FULL run here, depending on what else
the machine does; under a second for an incremental one with nothing new), and `features_banner` prints working examples of reading
features through Envoy's REST, grpcurl and the Python client. Until the jobs end, reads compute
what is missing online from PostgreSQL (the demo views compute on miss).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mnbara.mlserving.registry.v1 import registry_pb2 as pb

from ml_serving import FeatureStore, InferenceClient, RegistryClient
from ml_serving.errors import AlreadyExistsError, DeadlineExceededError, FailedPreconditionError, MLServingError, \
    NotFoundError, ResourceExhaustedError, UnavailableError
from ml_serving.inference import prediction_value

from . import demo_data
from .demo_model import MODEL_NAME, DemoArtifact, build_demo_models

PRODUCTION, STAGING, ARCHIVED = pb.STAGE_PRODUCTION, pb.STAGE_STAGING, pb.STAGE_ARCHIVED
TARGET_STAGES = {"v1": PRODUCTION, "v2": STAGING}
"""Where each demo version goes (see the module's docstring for why)."""
DEMO_TAG = "demo.artifact"
"""Version tag naming the demo version ("v1", "v2") an artifact was built as."""
SAMPLE_INPUT = {"user_id": 123, "top_k": 5}
NUDGE_SECONDS = 3.0
"""How long the setup waits for the deployer before loading the versions itself (best effort)."""
ACTOR = "make-up"
_PATHS = {  # how to reach a stage from another (the Registry's lifecycle)
    pb.STAGE_DEVELOPMENT: {STAGING: [STAGING], PRODUCTION: [STAGING, PRODUCTION]},
    STAGING: {STAGING: [], PRODUCTION: [PRODUCTION]},
    PRODUCTION: {STAGING: [STAGING], PRODUCTION: []},
    ARCHIVED: {STAGING: [STAGING], PRODUCTION: [STAGING, PRODUCTION]},
}


@dataclass
class DemoReport:
    """What the demo setup did and found."""

    model_name: str
    versions: dict[str, str] = field(default_factory=dict)  # demo version ("v1") -> registry version ("3")
    created: list[str] = field(default_factory=list)  # registry versions registered by this run
    stages: dict[str, str] = field(default_factory=dict)  # registry version -> stage name, after the setup
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # demo version -> metrics
    answers: dict[str, object] = field(default_factory=dict)  # "PRODUCTION"/"STAGING" -> Predict's answer
    experiment: str = ""  # the demo A/B experiment (Production against Staging), when there is one
    seconds: float = 0.0

    @property
    def production(self) -> str:
        return next((v for v, s in self.stages.items() if s == "PRODUCTION"), "")

    @property
    def staging(self) -> list[str]:
        return [v for v, s in self.stages.items() if s == "STAGING"]


def _signature(spec: dict) -> pb.ModelSignature:
    """The demo's signature as the Registry keeps it (name, datatype, shape of each tensor)."""
    def tensors(items):
        return [pb.TensorSpec(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in items]
    return pb.ModelSignature(inputs=tensors(spec["inputs"]), outputs=tensors(spec["outputs"]))


def _stage_name(stage: int) -> str:
    return pb.Stage.Name(stage).removeprefix("STAGE_")


async def _ensure_model(registry: RegistryClient, name: str) -> None:
    try:
        await registry.create_registered_model(
            name, description="demo product recommendations (created by make up): v1 logistic regression, "
                              "v2 a personalised MLP")
    except AlreadyExistsError:
        pass


async def _existing_versions(registry: RegistryClient, name: str) -> list[pb.ModelVersion]:
    return [v async for v in registry.iter_model_versions(name, page_size=100)]


async def _walk(registry: RegistryClient, name: str, version: pb.ModelVersion, target: int) -> None:
    current = version.stage
    for step in _PATHS.get(current, {}).get(target, []):
        await registry.transition_stage(name, version.version, step, expected_stage=current, actor=ACTOR,
                                        reason="make up: the demo's intended stages")
        current = step


async def register_demo(registry: RegistryClient, artifacts: dict[str, DemoArtifact],
                        model_name: str = MODEL_NAME) -> DemoReport:
    """Steps 2 and 3: the registered model, its two versions and their stages."""
    report = DemoReport(model_name)
    await _ensure_model(registry, model_name)
    existing = await _existing_versions(registry, model_name)
    by_sha = {v.artifact_sha256: v for v in sorted(existing, key=lambda v: int(v.version))}
    current: dict[str, pb.ModelVersion] = {}
    for demo_version, artifact in sorted(artifacts.items()):
        found = by_sha.get(artifact.sha256)
        if found is None:
            created = await registry.create_model_version(
                model_name, artifact=artifact.path.read_bytes(), artifact_file_name=artifact.path.name,
                artifact_sha256=artifact.sha256, metrics=artifact.metrics, signature=_signature(artifact.signature),
                tags={DEMO_TAG: demo_version, "demo.build": artifact.path.parent.name},
                description=f"{demo_version}: {artifact.description}" if artifact.description else demo_version)
            found = created.model_version
            report.created.append(found.version)
        current[demo_version] = found
        report.versions[demo_version] = found.version
        report.metrics[demo_version] = dict(artifact.metrics)

    has_production = any(v.stage == PRODUCTION for v in existing)
    if report.created or not has_production:
        for demo_version, target in sorted(TARGET_STAGES.items(), key=lambda item: item[1] != PRODUCTION):
            latest = (await registry.get_model_version(model_name, current[demo_version].version)).model_version
            await _walk(registry, model_name, latest, target)
        # Earlier builds of the demo still in Staging stop being served (a promotion archived the
        # previous Production version already).
        ours = {v.version for v in current.values()}
        for version in await _existing_versions(registry, model_name):
            if version.tags.get(DEMO_TAG) and version.version not in ours and version.stage == STAGING:
                await registry.transition_stage(model_name, version.version, ARCHIVED, expected_stage=STAGING,
                                                actor=ACTOR, reason="make up: superseded by a new demo build")
    for version in await _existing_versions(registry, model_name):
        if version.stage in (PRODUCTION, STAGING):
            report.stages[version.version] = _stage_name(version.stage)
    return report


async def _load(inference: InferenceClient, model_name: str, version: str, *, best_effort: bool = False,
                log: Callable[[str], None] = lambda line: None) -> None:
    """LoadModel, waiting until it serves; already loaded is fine. `best_effort`: a failure is
    logged only (the deployer may be loading the same version at the same moment)."""
    try:
        await inference.load_model(model_name, version=version, min_workers=1, wait_until_ready=True, timeout=120)
    except AlreadyExistsError:
        pass
    except MLServingError as error:
        if not best_effort:
            raise
        log(f"loading version {version} directly failed, waiting for the deployer ({error})")


_NOT_YET = (NotFoundError, UnavailableError, DeadlineExceededError, ResourceExhaustedError)
"""What Predict answers while a version is being loaded (MODEL_NOT_LOADED, a worker starting)."""


async def _predict_until_served(inference: InferenceClient, model_name: str, stage: int, deadline: float,
                                wait_seconds: float) -> object:
    """Predict on `stage` until it answers (the deployer may still be loading it) or `deadline`;
    an answer that waiting cannot change (a refused input, a missing scope) is raised at once."""
    while True:
        try:
            response = await inference.predict(model_name, SAMPLE_INPUT, stage=stage,
                                               timeout=max(1.0, min(10.0, deadline - time.monotonic())))
            return prediction_value(response)
        except _NOT_YET as error:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{_stage_name(stage)} of {model_name!r} did not answer within "
                                   f"{wait_seconds:g} s; last answer: {error}") from None
        await asyncio.sleep(0.5)


async def setup_demo(address: str, token: str, out_dir: str | Path, *, model_name: str = MODEL_NAME,
                     load: bool = False, wait_seconds: float = 60.0, nudge_seconds: float = NUDGE_SECONDS,
                     log: Callable[[str], None] = lambda line: None) -> DemoReport:
    """Build, register, stage and serve the demo model on the mesh at `address` (its gRPC port).

    `load`: load the Staging and Production versions through `LoadModel` instead of waiting for
    the deployer (a mesh with `INFERENCE_DEPLOYER_ENABLED=false`). Without it, a Production that
    does not answer within `nudge_seconds` is loaded here too, best effort: the deployer reacts at
    once to stage changes, but versions staged by an earlier run wait for its reconcile, whose
    first attempt can come before the mesh listens, and then the next one 10 s later.

    Raises on any failure: MLServingError from a call, TimeoutError when Production does not
    answer within `wait_seconds`.
    """
    started = time.monotonic()
    log("building the demo model (cached after the first run)...")
    artifacts = await asyncio.to_thread(build_demo_models, out_dir)
    async with RegistryClient(address, token=token, timeout=30) as registry, \
            InferenceClient(address, token=token, timeout=30) as inference:
        log(f"registering {model_name} in the Registry...")
        report = await register_demo(registry, artifacts, model_name)
        serving = [v for v in [report.production, *report.staging] if v]
        if load:
            for version in serving:
                await _load(inference, model_name, version)
        log("waiting for TorchServe to serve it...")
        deadline = time.monotonic() + wait_seconds
        try:
            answer = await _predict_until_served(inference, model_name, PRODUCTION,
                                                 min(deadline, time.monotonic() + nudge_seconds), nudge_seconds)
        except TimeoutError:
            if not load:  # the deployer has not loaded it yet: load it here, and let it follow
                log("the deployer has not loaded it yet; loading it directly")
                await asyncio.gather(*(_load(inference, model_name, v, best_effort=True, log=log) for v in serving))
            answer = await _predict_until_served(inference, model_name, PRODUCTION, deadline, wait_seconds)
        report.answers["PRODUCTION"] = answer
        if report.staging:
            try:
                report.answers["STAGING"] = await _predict_until_served(inference, model_name, STAGING, deadline,
                                                                        wait_seconds)
            except (MLServingError, TimeoutError) as error:  # Production serves: the demo works; say what is missing
                log(f"warning: the Staging version does not answer yet ({error})")
    if report.production and report.staging:
        try:
            report.experiment = await ensure_experiment(address, token, model_name, report.production,
                                                        report.staging[0])
        except MLServingError as error:  # predictions work without it; say why the A/B demo does not
            log(f"warning: the demo A/B experiment could not be created ({error})")
    report.seconds = time.monotonic() - started
    return report


async def ensure_experiment(address: str, token: str, model_name: str, control: str, treatment: str) -> str:
    """The demo A/B experiment: premium users split 90/10 between Production and Staging (the
    seed's `get_model_for_user(user_id=..., context={"user_segments": ["premium"]})`). One made
    by an earlier run is kept as it is. Its name: the model's, with "-ab"."""
    from mnbara.mlserving.router.v1 import router_pb2 as rpb

    from ml_serving import RouterClient

    async with RouterClient(address, token=token, timeout=30) as router:
        try:
            await router.create_experiment({
                "name": f"{model_name}-ab", "description": "make up's demo: Production against Staging",
                "variants": [
                    rpb.Variant(name="control", model_name=model_name, model_version=control, weight_bps=9000,
                                control=True),
                    rpb.Variant(name="treatment", model_name=model_name, model_version=treatment, weight_bps=1000)],
                "targeting": rpb.TargetingRule(include_segments=["premium"]),
                "metrics": [rpb.OutcomeMetric(name="click", kind=rpb.OUTCOME_KIND_BINARY)]})
        except AlreadyExistsError:
            pass
    return f"{model_name}-ab"


def _deployer_enabled(env: dict[str, str]) -> bool:
    return env.get("INFERENCE_DEPLOYER_ENABLED", "true").strip().lower() not in ("0", "false", "f", "no", "n", "off")


def run_demo_setup(address: str, token: str, state: Path, env: dict[str, str] | None = None) -> DemoReport | None:
    """`make up`'s call: the demo set up, or None after a printed warning (the mesh keeps running)."""
    env = dict(os.environ) if env is None else env
    try:
        report = asyncio.run(setup_demo(address, token, Path(state) / "demo-models",
                                        load=not _deployer_enabled(env),
                                        log=lambda line: print(f"demo: {line}", flush=True)))
    except Exception as error:  # noqa: BLE001: anything; the mesh itself is fine
        detail = f"{type(error).__name__}: {error}".strip()
        print(f"warning: the demo model could not be set up, the mesh runs without it ({detail[:500]}); "
              f"see {Path(state) / 'mesh.log'}", file=sys.stderr, flush=True)
        return None
    print(f"demo: {report.model_name} ready in {report.seconds:.1f} s "
          f"({'registered versions ' + ', '.join(report.created) if report.created else 'nothing new registered'})",
          flush=True)
    return report


DEMO_DATA_SIZES = {"users": ("DEMO_DATA_USERS", demo_data.DEFAULT_USERS),
                   "items": ("DEMO_DATA_ITEMS", demo_data.DEFAULT_ITEMS),
                   "events": ("DEMO_DATA_EVENTS", demo_data.DEFAULT_EVENTS)}
"""Size of `make up`'s demo data: argument of `demo_data.load` -> (environment variable, default)."""


def demo_data_sizes(env: dict[str, str]) -> dict[str, int]:
    sizes = {}
    for name, (variable, default) in DEMO_DATA_SIZES.items():
        text = env.get(variable, "").strip().replace("_", "").replace(",", "")
        try:
            sizes[name] = int(text) if text else default
        except ValueError:
            raise ValueError(f"{variable}={env[variable]!r} is not a whole number") from None
    return sizes


def load_demo_data(database_url: str, env: dict[str, str] | None = None) -> demo_data.LoadReport | None:
    """The Feature Store's demo data in the mesh's database, and one printed line saying what
    was done; None after a printed warning (or when `DEMO_DATA=off`)."""
    env = dict(os.environ) if env is None else env
    if env.get("DEMO_DATA", "").strip().lower() in ("0", "false", "no", "off"):
        return None
    try:
        report = asyncio.run(demo_data.load(database_url, **demo_data_sizes(env)))
    except Exception as error:  # noqa: BLE001: anything; the mesh itself is fine
        detail = f"{type(error).__name__}: {error}".strip()
        print(f"warning: the demo data could not be loaded into PostgreSQL ({detail[:500]})", file=sys.stderr,
              flush=True)
        return None
    print(f"demo data: {report.line()}", flush=True)
    return report


class DemoDataLoad:
    """`load_demo_data` in a thread of its own (a daemon: Ctrl-C does not wait for it)."""

    def __init__(self, database_url: str, env: dict[str, str] | None = None):
        self.report: demo_data.LoadReport | None = None
        self._thread = threading.Thread(target=self._run, args=(database_url, env), name="demo-data", daemon=True)
        self._thread.start()

    def _run(self, database_url: str, env: dict[str, str] | None) -> None:
        self.report = load_demo_data(database_url, env)

    def wait(self, timeout: float | None = None) -> demo_data.LoadReport | None:
        self._thread.join(timeout)
        return self.report


MATERIALIZE_WAIT_SECONDS = 900.0
"""How long `DemoFeatures` waits for the materialisation to answer before saying it still runs
(the jobs go on in the mesh either way: a deadline does not stop them)."""
SAMPLE_USERS = ("123", "456")
"""The users the banner's feature examples read."""


class DemoFeatures:
    """`make up`'s materialisation of the feature views, in a daemon thread: waits for the demo
    data (`data_load`), then calls MaterializeFeatures on the mesh at `address` (its gRPC port)
    with `wait`, FULL when the data was just (re)loaded (every value changed: new tables, new
    times), INCREMENTAL when it was there already, and prints one line with the outcome. Nothing
    is done without demo data (`DEMO_DATA=off`, or a failed load). Never raises: a failure is a
    printed warning (reads still compute missing values from PostgreSQL)."""

    def __init__(self, address: str, token: str, data_load: "DemoDataLoad", *,
                 wait_seconds: float = MATERIALIZE_WAIT_SECONDS, out: Callable[[str], None] | None = None):
        self.mode = ""  # "FULL" or "INCREMENTAL", once decided
        self.jobs: list = []  # the MaterializationJob messages, once they ended
        self.outcome = ""  # the printed line, once there is one
        self.started = self.seconds = 0.0
        self._out = out or (lambda line: print(line, flush=True))
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(address, token, data_load, wait_seconds),
                                        name="demo-features", daemon=True)
        self._thread.start()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Whether the thread ended (jobs ended, failed, timed out or skipped) within `timeout`."""
        return self._done.wait(timeout)

    def _say(self, line: str) -> None:
        self.outcome = line
        self._out(line)

    def _run(self, address: str, token: str, data_load: "DemoDataLoad", wait_seconds: float) -> None:
        try:
            report = data_load.wait()
            if report is None:
                return
            self.mode = "FULL" if report.loaded else "INCREMENTAL"
            self.started = time.monotonic()
            try:
                with FeatureStore(address, token=token) as store:
                    response = self._materialize(store, wait_seconds)
            except DeadlineExceededError:
                self._say(f"demo features: the {self.mode} materialisation still runs after {wait_seconds:.0f} s; "
                          f"GET /api/v1/ml/features/schema shows each view's lastMaterializationTime")
                return
            except Exception as error:  # noqa: BLE001: anything; reads compute on miss meanwhile
                detail = f"{type(error).__name__}: {error}".strip()
                self._say(f"warning: demo features: the {self.mode} materialisation could not run ({detail[:300]}); "
                          f"reads compute missing values from PostgreSQL")
                return
            self.seconds = time.monotonic() - self.started
            self.jobs = list(response.jobs)
            self._say(f"demo features: {materialized_line(self.jobs)} ({self.mode}, {self.seconds:.1f} s)")
        finally:
            self._done.set()


    def _materialize(self, store: FeatureStore, wait_seconds: float):
        """MaterializeFeatures, again while a view is busy: the mesh's scheduler may have started
        a view's scheduled run first (it then ends in seconds)."""
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                return store.materialize_features(mode=self.mode, wait=True,
                                                  timeout=max(1.0, deadline - time.monotonic()))
            except FailedPreconditionError as error:
                if error.reason != "MATERIALIZATION_IN_PROGRESS" or time.monotonic() + 1.0 > deadline:
                    raise
                time.sleep(1.0)


def materialized_line(jobs: list) -> str:
    """`user_profile 100,000, ... entities written`, and the failed jobs' errors."""
    from mnbara.mlserving.pipeline.v1 import pipeline_pb2

    written = ", ".join(f"{job.feature_view} {job.entities_written:,}" for job in jobs
                        if job.state == pipeline_pb2.JOB_STATE_SUCCEEDED)
    failed = "; ".join(f"{job.feature_view} FAILED: {job.error.message}" for job in jobs
                       if job.state != pipeline_pb2.JOB_STATE_SUCCEEDED)
    return "; ".join(part for part in (f"materialised {written} entities" if written else "", failed) if part)


def features_banner(front: str, features: DemoFeatures | None = None) -> str:
    """The banner's Feature Store section: how the materialisation stands, and working examples
    of reading features (REST through Envoy, grpcurl, the Python client)."""
    auth = '-H "authorization: Bearer $ML_SERVING_TOKEN"'
    ctype = "-H 'content-type: application/json'"
    ids = ", ".join(f'"{user}"' for user in SAMPLE_USERS)
    if features is None or (features.done and not features.outcome):
        state = "not materialised by this make up; reads compute missing values from PostgreSQL"
    elif features.done:
        state = features.outcome.removeprefix("demo features: ")
    else:
        state = (f"{features.mode or 'the'} materialisation into Redis runs in the background (a FULL one takes 30 "
                 f"to 60 s at the default sizes; a line says when it ends); until then reads compute missing "
                 f"values from PostgreSQL")
    users = ", ".join(SAMPLE_USERS)
    return "\n".join([
        "Feature Store (the views of features/*.yaml over the demo data):",
        f"  {state}",
        f"Features of users {users} (user_profile; also user_engagement, item_catalog, item_engagement):",
        f"  curl -s -X POST http://{front}/api/v1/ml/features/get {auth} {ctype} \\",
        f"    -d '{{\"featureView\": \"user_profile\", \"entityIds\": [{ids}]}}'",
        f"  curl -s 'http://{front}/api/v1/ml/features/schema?featureView=user_engagement' {auth}",
        f"  .venv/bin/grpcurl -plaintext {auth} -d '{{\"feature_view\": \"user_engagement\", "
        f"\"entity_id\": \"{SAMPLE_USERS[0]}\"}}' \\",
        f"    {front} mnbara.mlserving.pipeline.v1.PipelineService/GetFeatures",
        f"  ML_SERVING_ADDR={front} .venv/bin/python -c 'from ml_serving import FeatureStore; "
        f"print(FeatureStore().get_feature_values(\"user_profile\", [{users}]))'",
    ]) + "\n"


def _items(answer: object) -> str:
    """The ranked item ids of a Predict answer (a Struct's numbers come back as floats)."""
    try:
        return ", ".join(str(int(s["item_id"])) for s in answer["scores"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return json.dumps(answer)[:80]


def banner(front: str, report: DemoReport) -> str:
    """The banner's demo section: what serves, and working curl and tritonclient examples."""
    name = report.model_name
    auth = '-H "authorization: Bearer $ML_SERVING_TOKEN"'
    ctype = "-H 'content-type: application/json'"
    labels = {v: k for k, v in report.versions.items()}

    def describe(version: str) -> str:
        demo = labels.get(version)
        auc = report.metrics.get(demo, {}).get("holdout_auc") if demo else None
        return f"version {version}" + (f" = demo {demo}, hold-out AUC {auc}" if demo else " (not a demo build)")

    lines = [f"Demo model {name!r} (in TorchServe as {name}-v<version>):",
             f"  Production  {describe(report.production)}"]
    lines += [f"  Staging     {describe(v)}" for v in report.staging]
    if report.answers:
        answered = "; ".join(f"{stage.title()} {_items(answer)}" for stage, answer in report.answers.items())
        lines.append(f"  top {SAMPLE_INPUT['top_k']} items for user {SAMPLE_INPUT['user_id']}: {answered}")
    oip = ('{"inputs": [{"name": "user_id", "datatype": "INT64", "shape": [1], "data": [123]}, '
           '{"name": "top_k", "datatype": "INT64", "shape": [1], "data": [5]}]}')
    lines += [
        "",
        "Predict (Production; add \"stage\": \"STAGE_STAGING\" or \"version\": \"<n>\" for another version):",
        f"  curl -s -X POST http://{front}/api/v1/inference/models/{name}:predict {auth} {ctype} \\",
        f"    -d '{{\"inputs\": {{\"user_id\": 123, \"top_k\": 5}}}}'",
        f"  curl -s -X POST http://{front}/api/v1/inference/models/{name}:predict {auth} {ctype} \\",
        f"    -d '{{\"stage\": \"STAGE_STAGING\", \"inputs\": {{\"user_id\": 123, \"top_k\": 5}}}}'",
        "Open Inference Protocol (KServe v2) REST:",
        f"  curl -s -X POST http://{front}/v2/models/{name}/infer {auth} {ctype} \\",
        f"    -d '{oip}'",
        "tritonclient (HTTP through Envoy: JSON only, so binary_data=False and the content type):",
        "  .venv/bin/python - <<'EOF'",
        "import os, numpy as np, tritonclient.http as http",
        f"client = http.InferenceServerClient(\"{front}\")",
        "inputs = [http.InferInput(\"user_id\", [1], \"INT64\"), http.InferInput(\"top_k\", [1], \"INT64\")]",
        "inputs[0].set_data_from_numpy(np.array([123], dtype=np.int64), binary_data=False)",
        "inputs[1].set_data_from_numpy(np.array([5], dtype=np.int64), binary_data=False)",
        "outputs = [http.InferRequestedOutput(n, binary_data=False) for n in (\"item_ids\", \"scores\")]",
        "headers = {\"authorization\": f\"Bearer {os.environ['ML_SERVING_TOKEN']}\", "
        "\"content-type\": \"application/json\"}",
        f"result = client.infer(\"{name}\", inputs, outputs=outputs, headers=headers)",
        "print(result.as_numpy(\"item_ids\"), result.as_numpy(\"scores\"))",
        "EOF",
    ]
    if report.experiment:
        lines += [
            f"A/B experiment {report.experiment!r} (premium users, 90% Production / 10% Staging):",
            f"  curl -s -X POST http://{front}/api/v1/router/predict {auth} {ctype} \\",
            f"    -d '{{\"user_id\": \"user123\", \"segments\": [\"premium\"], \"model_name\": \"{name}\", "
            f"\"inputs\": {{\"user_id\": 123, \"top_k\": 5}}}}'",
            f"  curl -s http://{front}/api/v1/router/experiments/{report.experiment}/results {auth}",
            f"  ML_SERVING_ADDR={front} .venv/bin/python -c 'from ml_serving import ABTestingRouter; "
            f"print(ABTestingRouter().get_model_for_user(user_id=\"user123\", "
            f"context={{\"user_segments\": [\"premium\"]}}))'",
        ]
    return "\n".join(lines) + "\n"

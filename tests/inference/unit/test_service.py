"""The Inference service's rules, over in-memory ports: limits, selectors, naming, and how each
model server failure reaches the caller. No I/O."""

from __future__ import annotations

import asyncio

import pytest

from ml_serving_server.errors import (AlreadyExists, DeadlineExceeded, FailedPrecondition, Internal, InvalidArgument,
                                      NotFound, ResourceExhausted, Unavailable)
from ml_serving_server.services.inference.domain import ports
from ml_serving_server.services.inference.domain.errors import ErrorReason
from ml_serving_server.services.inference.domain.model import LoadSpec, ResolvedVersion, Selector, SelectorKind
from ml_serving_server.services.inference.domain.naming import parse_served_name, served_name
from ml_serving_server.services.inference.domain.resolution import NotInRegistry, RegistryUnavailable
from ml_serving_server.services.inference.domain.service import InferenceService


class Resolver:
    def __init__(self):
        self.versions = {("fraud", "2"): ResolvedVersion("fraud", "2", "PRODUCTION", "s3://b/models/fraud/x/m.mar")}
        self.down = False
        self.calls: list[tuple[str, Selector]] = []

    async def resolve(self, name, selector):
        self.calls.append((name, selector))
        if self.down:
            raise RegistryUnavailable("down")
        if selector.kind is SelectorKind.VERSION:
            found = self.versions.get((name, selector.value))
            if found is None:
                raise NotInRegistry("VERSION_NOT_FOUND", "no such version")
            return found
        if selector.kind is SelectorKind.ALIAS:
            raise NotInRegistry("ALIAS_NOT_FOUND", "no such alias")
        found = [v for (n, _), v in self.versions.items() if n == name]
        if not found:
            raise NotInRegistry("MODEL_NOT_FOUND", "no such model")
        return found[0]

    async def presigned_url(self, uri, ttl_s):
        if not uri.startswith("s3://"):
            raise ValueError("not in the store")
        return f"http://127.0.0.1:1/{uri[5:]}?ttl={ttl_s}"


class Backend:
    def __init__(self):
        self.fail_with: Exception | None = None
        self.calls: list[tuple] = []
        self.registered: dict[str, dict] = {}

    async def predict(self, name, version, payload, timeout_s, *, retry_on_worker_death=False):
        self.calls.append(("predict", name, payload, retry_on_worker_death))
        if self.fail_with is not None:
            raise self.fail_with
        return b'{"echo": ' + payload + b"}"

    async def stream_predict(self, name, version, payload, timeout_s):
        for part in (b'"a"', b'"b"'):
            yield part
        if self.fail_with is not None:
            raise self.fail_with

    async def register(self, name, version, url, **options):
        if self.fail_with is not None:
            raise self.fail_with
        self.registered[name] = {"url": url, **options}

    async def scale(self, name, version, low, high, *, synchronous=True):
        self.registered[name].update(min=low, max=high)

    async def unregister(self, name, version):
        if name not in self.registered:
            raise ports.ModelNotLoaded("gone")
        del self.registered[name]

    async def describe(self, name, version):
        if name not in self.registered:
            raise ports.ModelNotLoaded("gone")
        options = self.registered[name]
        low = options.get("min", options["initial_workers"])
        return ports.BackendModel(name, "1.0", options["url"], ports.ModelState.READY, low, options.get("max", low),
                                  options["batch_size"], options["max_batch_delay_ms"], options["response_timeout_s"],
                                  (ports.BackendWorker("9000", "READY", 42),))

    async def list_models(self):
        return [(name, ["1.0"]) for name in sorted(self.registered)] + [("hand-loaded", ["1.0"])]


@pytest.fixture
def parts():
    resolver, backend = Resolver(), Backend()
    return InferenceService(backend, resolver, max_input_bytes=64), resolver, backend


def run(coro):
    return asyncio.run(coro)


def test_served_names_split_back_at_the_last_version_suffix():
    assert served_name("fraud-v1", "2") == "fraud-v1-v2"
    assert parse_served_name("fraud-v1-v2") == ("fraud-v1", "2")
    assert parse_served_name("hand-loaded") is None
    assert parse_served_name("x-v0") is None


def test_predict_resolves_production_and_calls_the_versions_own_model(parts):
    service, resolver, backend = parts
    prediction = run(service.predict("fraud", Selector(), b"1", 2.0))
    assert prediction.model.version == "2" and prediction.output == b'{"echo": 1}'
    assert backend.calls == [("predict", "fraud-v2", b"1", True)]  # retried once on a dead worker: safe
    assert resolver.calls == [("fraud", Selector())]


@pytest.mark.parametrize("payload, field, reason", [
    (b"", "inputs", ErrorReason.INVALID_FIELD),
    (b"x" * 65, "inputs", ErrorReason.INPUT_TOO_LARGE),
])
def test_bad_input_is_refused_before_anything_is_called(parts, payload, field, reason):
    service, resolver, backend = parts
    with pytest.raises(InvalidArgument) as caught:
        run(service.predict("fraud", Selector(), payload, None))
    assert caught.value.field == field and caught.value.reason.name == reason.name
    assert resolver.calls == [] and backend.calls == []


@pytest.mark.parametrize("name, selector, field", [
    ("bad name!", Selector(), "model_name"),
    ("fraud", Selector(SelectorKind.VERSION, "0"), "version"),
    ("fraud", Selector(SelectorKind.ALIAS, "UPPER"), "alias"),
    ("fraud", Selector(SelectorKind.STAGE, "LIVE"), "stage"),
])
def test_bad_selectors_name_their_field(parts, name, selector, field):
    service, resolver, _ = parts
    with pytest.raises(InvalidArgument) as caught:
        run(service.predict(name, selector, b"1", None))
    assert caught.value.field == field and resolver.calls == []


def test_registry_answers_become_not_found_and_unavailable(parts):
    service, resolver, _ = parts
    with pytest.raises(NotFound) as caught:
        run(service.predict("fraud", Selector(SelectorKind.ALIAS, "champion"), b"1", None))
    assert caught.value.reason is ErrorReason.ALIAS_NOT_FOUND
    with pytest.raises(NotFound) as caught:
        run(service.predict("nope", Selector(), b"1", None))
    assert caught.value.reason is ErrorReason.MODEL_NOT_FOUND
    resolver.down = True
    with pytest.raises(Unavailable) as caught:
        run(service.predict("fraud", Selector(), b"1", None))
    assert caught.value.reason is ErrorReason.REGISTRY_UNAVAILABLE


@pytest.mark.parametrize("failure, kind, reason", [
    (ports.ModelNotLoaded("Model not found"), NotFound, ErrorReason.MODEL_NOT_LOADED),
    (ports.WorkerDied("Worker died."), Unavailable, ErrorReason.WORKER_DIED),
    (ports.HandlerError("boom"), Internal, ErrorReason.MODEL_HANDLER_ERROR),
    (ports.HandlerError("user 7 unknown", client_fault=True), InvalidArgument, ErrorReason.MODEL_HANDLER_ERROR),
    (ports.BackendOverloaded("queue full"), ResourceExhausted, ErrorReason.BACKEND_OVERLOADED),
    (ports.BackendTimeout("late"), DeadlineExceeded, ErrorReason.PREDICTION_TIMEOUT),
    (ports.BackendUnavailable("refused"), Unavailable, ErrorReason.BACKEND_UNAVAILABLE),
])
def test_model_server_failures_map_to_statuses_with_reasons(parts, failure, kind, reason):
    service, _, backend = parts
    backend.fail_with = failure
    with pytest.raises(kind) as caught:
        run(service.predict("fraud", Selector(), b"1", None))
    assert caught.value.reason is reason


def test_a_handlers_message_reaches_the_caller_bounded(parts):
    service, _, backend = parts
    backend.fail_with = ports.HandlerError("x" * 10_000)
    with pytest.raises(Internal) as caught:
        run(service.predict("fraud", Selector(), b"1", None))
    assert "xxx" in caught.value.message and len(caught.value.message) < 700


def test_batch_reports_each_items_failure_without_failing_the_call(parts):
    service, _, backend = parts
    resolved, results = run(service.batch_predict("fraud", Selector(), [b"1", b"", b"x" * 100, b"2"], None))
    assert resolved.version == "2"
    assert [r.output for r in results] == [b'{"echo": 1}', None, None, b'{"echo": 2}']
    assert results[1].error.reason.name == "INVALID_FIELD"
    assert results[2].error.reason is ErrorReason.INPUT_TOO_LARGE and results[2].error.field == "instances[2]"


def test_batch_fails_as_a_whole_when_the_model_server_is_down(parts):
    service, _, backend = parts
    backend.fail_with = ports.BackendUnavailable("refused")
    with pytest.raises(Unavailable):
        run(service.batch_predict("fraud", Selector(), [b"1", b"2"], None))


def test_batch_size_limits(parts):
    service, _, _ = parts
    with pytest.raises(InvalidArgument) as caught:
        run(service.batch_predict("fraud", Selector(), [b"1"] * 1001, None))
    assert caught.value.reason is ErrorReason.TOO_MANY_INSTANCES
    with pytest.raises(InvalidArgument):
        run(service.batch_predict("fraud", Selector(), [], None))


def test_stream_failure_after_parts_is_mapped(parts):
    service, _, backend = parts
    backend.fail_with = ports.WorkerDied("Worker died.")

    async def consume():
        _, outputs = await service.stream_predict("fraud", Selector(), b"1", None)
        return [part async for part in outputs]

    with pytest.raises(Unavailable) as caught:
        run(consume())
    assert caught.value.reason is ErrorReason.WORKER_DIED


def test_load_registers_the_presigned_artifact_under_the_served_name(parts):
    service, _, backend = parts
    loaded = run(service.load("fraud", Selector(), LoadSpec(min_workers=1, max_workers=2, batch_size=8,
                                                             max_batch_delay_ms=5)))
    options = backend.registered["fraud-v2"]
    assert options["url"].startswith("http://127.0.0.1:1/b/models/fraud/x/m.mar")
    assert (options["batch_size"], options["max_batch_delay_ms"], options["min"], options["max"]) == (8, 5, 1, 2)
    assert (loaded.model_name, loaded.version, loaded.status, loaded.max_workers) == ("fraud", "2", "READY", 2)
    backend.fail_with = ports.ModelAlreadyLoaded("exists")
    with pytest.raises(AlreadyExists):
        run(service.load("fraud", Selector(), LoadSpec()))


@pytest.mark.parametrize("spec, field", [
    (LoadSpec(min_workers=3, max_workers=2), "max_workers"),
    (LoadSpec(min_workers=99), "min_workers"),
    (LoadSpec(batch_size=100_000), "batch_size"),
    (LoadSpec(max_batch_delay_ms=-1), "max_batch_delay"),
])
def test_load_limits(parts, spec, field):
    service, resolver, _ = parts
    with pytest.raises(InvalidArgument) as caught:
        run(service.load("fraud", Selector(), spec))
    assert caught.value.field == field and resolver.calls == []


def test_a_version_outside_the_store_is_not_servable(parts):
    service, resolver, _ = parts
    resolver.versions[("fraud", "2")] = ResolvedVersion("fraud", "2", "PRODUCTION", "runs:/abc/model")
    with pytest.raises(FailedPrecondition) as caught:
        run(service.load("fraud", Selector(), LoadSpec()))
    assert caught.value.reason is ErrorReason.ARTIFACT_NOT_SERVABLE


def test_load_times_out_as_load_timeout(parts):
    service, _, backend = parts

    async def slow(*args, **kwargs):
        await asyncio.sleep(5)

    backend.register = slow
    with pytest.raises(DeadlineExceeded) as caught:
        run(service.load("fraud", Selector(), LoadSpec(startup_timeout_s=0.05)))
    assert caught.value.reason is ErrorReason.LOAD_TIMEOUT


def test_list_pages_through_the_mesh_loaded_models_only(parts):
    service, _, backend = parts
    for version in ("10", "9", "2"):
        backend.registered[f"fraud-v{version}"] = dict(url="u", initial_workers=1, batch_size=1,
                                                       max_batch_delay_ms=100, response_timeout_s=120)
    first, token = run(service.list_loaded("", 2, ""))
    assert [(m.model_name, m.version) for m in first] == [("fraud", "2"), ("fraud", "9")]
    rest, token2 = run(service.list_loaded("", 2, token))
    assert [(m.model_name, m.version) for m in rest] == [("fraud", "10")] and token2 == ""
    with pytest.raises(InvalidArgument) as caught:
        run(service.list_loaded("", 2, "garbage"))
    assert caught.value.reason is ErrorReason.INVALID_PAGE_TOKEN


def test_unload_of_what_is_not_loaded_is_not_found(parts):
    service, _, _ = parts
    with pytest.raises(NotFound) as caught:
        run(service.unload("fraud", "2", None))
    assert caught.value.reason is ErrorReason.MODEL_NOT_LOADED


def test_a_prediction_without_a_deadline_gets_the_cap(parts):
    service, _, backend = parts
    seen = []
    original = backend.predict

    async def recording(name, version, payload, timeout_s, **kwargs):
        seen.append(timeout_s)
        return await original(name, version, payload, timeout_s, **kwargs)

    backend.predict = recording
    run(service.predict("fraud", Selector(), b"1", None))
    run(service.predict("fraud", Selector(), b"1", 0.5))
    run(service.predict("fraud", Selector(), b"1", 600.0))
    assert seen == [60.0, 0.5, 60.0]


def test_unload_refuses_new_predictions_and_lets_those_in_flight_finish(parts):
    service, _, backend = parts
    backend.registered["fraud-v2"] = dict(url="u", initial_workers=1, batch_size=1, max_batch_delay_ms=5,
                                          response_timeout_s=120)
    release = asyncio.Event()
    original = backend.predict

    async def slow(*args, **kwargs):
        await release.wait()
        return await original(*args, **kwargs)

    backend.predict = slow

    async def scenario():
        in_flight = asyncio.create_task(service.predict("fraud", Selector(), b"1", None))
        await asyncio.sleep(0.01)
        unloading = asyncio.create_task(service.unload("fraud", "2", 5.0))
        await asyncio.sleep(0.05)
        with pytest.raises(NotFound) as caught:
            await service.predict("fraud", Selector(), b"2", None)
        assert caught.value.reason is ErrorReason.MODEL_NOT_LOADED
        assert "fraud-v2" in backend.registered and not unloading.done()  # draining
        release.set()
        assert (await in_flight).output == b'{"echo": 1}'
        await unloading
        assert "fraud-v2" not in backend.registered

    run(scenario())

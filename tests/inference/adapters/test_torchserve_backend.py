"""TorchServeBackend against a real TorchServe 0.12 (the session's `torchserve` fixture), no
mocks: every status TorchServe answers is mapped to the port's exceptions."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from ml_serving_server.services.inference.domain.ports import (
    MESSAGE_LIMIT,
    BackendConflict,
    BackendOverloaded,
    BackendTimeout,
    BackendUnavailable,
    HandlerError,
    ModelAlreadyLoaded,
    ModelLoadFailed,
    ModelNotLoaded,
    ModelState,
    WorkerDied,
)
from ml_serving_server.services.inference.torchserve_backend import TorchServeBackend
from ml_serving_tools.net import free_port

from ...registry.faults import CuttableProxy

SHARED = ("echo", "error", "slow", "stream", "batch")
BATCH_DELAY_MS = 200  # long enough that concurrent requests always meet in one batch


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def doc(raw: bytes) -> dict:
    return json.loads(raw)


def payload(**fields) -> bytes:
    return json.dumps(fields).encode()


async def until(check, timeout: float = 30.0, interval: float = 0.1):
    """Poll `check()` (async) until it returns something truthy; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
async def backend(torchserve):
    ts = TorchServeBackend(torchserve.endpoints.grpc_inference, torchserve.endpoints.grpc_management)
    yield ts
    await ts.close()


@pytest.fixture(scope="session")
async def models(backend, ts_archives) -> dict[str, str]:
    """The shared models, registered once under their handler's name, workers ready."""
    async def load(kind: str) -> None:
        batching = {"batch_size": 4, "max_batch_delay_ms": BATCH_DELAY_MS} if kind == "batch" else {}
        await backend.register(kind, "1.0", ts_archives[kind], synchronous=True, **batching)

    await asyncio.gather(*(load(kind) for kind in SHARED))
    return {kind: kind for kind in SHARED}


async def test_ping(backend):
    assert await backend.ping() is True


async def test_predict_echo(backend, models):
    out = doc(await backend.predict("echo", "", payload(a=1), timeout_s=10))
    assert out == {"a": 1, "model": "echo", "version": "1.0"}


async def test_payload_beyond_grpc_default_limit(backend, models):
    big = "x" * (6 * 1024 * 1024)  # above gRPC's 4 MB and TorchServe's 6.5 MB defaults
    out = doc(await backend.predict("echo", "1.0", payload(big=big), timeout_s=30))
    assert out["big"] == big


async def test_unknown_model_or_version_is_model_not_loaded(backend, models):
    with pytest.raises(ModelNotLoaded, match="Model not found"):
        await backend.predict(unique("missing"), "", b"{}", timeout_s=5)
    with pytest.raises(ModelNotLoaded, match="9.9"):
        await backend.predict("echo", "9.9", b"{}", timeout_s=5)
    with pytest.raises(ModelNotLoaded):
        await backend.describe(unique("missing"), "")


async def test_handler_exception_is_handler_error(backend, models):
    with pytest.raises(HandlerError) as caught:
        await backend.predict("error", "", payload(detail="no good"), timeout_s=10)
    # TorchServe hides a plain exception's text; the worker survives it.
    assert caught.value.message == "Prediction failed"
    assert caught.value.client_fault is False
    assert doc(await backend.predict("echo", "", b"{}", timeout_s=10))["model"] == "echo"


async def test_prediction_exception_message_is_passed_on_bounded(backend, models):
    with pytest.raises(HandlerError) as caught:
        await backend.predict("error", "", payload(detail="y" * 5000, code=400), timeout_s=10)
    assert caught.value.client_fault is True
    assert caught.value.message.startswith("bad input: yyy")
    assert len(caught.value.message) <= MESSAGE_LIMIT
    assert "Exception" not in caught.value.message  # TorchServe's Java class line is stripped


async def test_deadline_is_honoured(backend, models):
    started = time.monotonic()
    with pytest.raises(BackendTimeout):
        await backend.predict("slow", "", payload(sleep_ms=1500), timeout_s=0.3)
    assert time.monotonic() - started < 1.0
    with pytest.raises(BackendTimeout):
        await backend.predict("echo", "", b"{}", timeout_s=0)


async def test_stream_predict(backend, models):
    chunks = [doc(c) async for c in backend.stream_predict("stream", "", payload(chunks=4), timeout_s=10)]
    assert chunks == [{"chunk": 0}, {"chunk": 1}, {"chunk": 2}, {"chunk": 3, "last": True}]


async def test_stream_unknown_model(backend, models):
    with pytest.raises(ModelNotLoaded):
        async for _ in backend.stream_predict(unique("missing"), "", b"{}", timeout_s=5):
            pass


async def test_batch_gets_one_output_per_request(backend, models):
    outs = await asyncio.gather(*(backend.predict("batch", "", payload(i=i), timeout_s=10) for i in range(8)))
    outs = [doc(o) for o in outs]
    assert [o["input"] for o in outs] == [{"i": i} for i in range(8)]
    assert max(o["batch_size"] for o in outs) > 1


async def test_torchserve_down_is_unavailable_quickly():
    down = TorchServeBackend(f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}")
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable, match="unreachable"):
            await down.predict("echo", "", b"{}", timeout_s=5)
        with pytest.raises(BackendUnavailable):
            await down.list_models()
        assert await down.ping() is False
        assert time.monotonic() - started < 3.0
    finally:
        await down.close()


@pytest.mark.parametrize("url", ["missing.mar", "http://127.0.0.1:{port}/x.mar", "http://example.com/x.mar"])
async def test_register_bad_url_is_load_failed(backend, url):
    name = unique("bad")
    with pytest.raises(ModelLoadFailed):
        await backend.register(name, "", url.format(port=free_port()), synchronous=True)
    assert name not in [n for n, _ in await backend.list_models()]


async def test_register_broken_handler_is_load_failed_and_not_kept(backend, ts_archives):
    name = unique("broken")
    with pytest.raises(ModelLoadFailed, match="Failed to start workers"):
        await backend.register(name, "1.0", ts_archives["broken"], synchronous=True)
    with pytest.raises(ModelNotLoaded):
        await backend.describe(name, "")


async def test_register_version_mismatch_is_undone(backend, ts_archives):
    name = unique("mismatch")
    with pytest.raises(ModelLoadFailed, match="carries version 1.0, not 3.0"):
        await backend.register(name, "3.0", ts_archives["echo"], synchronous=True)
    with pytest.raises(ModelNotLoaded):
        await backend.describe(name, "")


async def test_model_lifecycle(backend, ts_archives):
    name = unique("life")
    await backend.register(name, "1.0", ts_archives["echo"], synchronous=True)
    model = await backend.describe(name, "")
    assert (model.name, model.version, model.state, model.min_workers) == (name, "1.0", ModelState.READY, 1)
    assert len(model.workers) == 1 and model.workers[0].pid and model.workers[0].status == "READY"
    assert (name, ["1.0"]) in await backend.list_models()

    with pytest.raises(ModelAlreadyLoaded):
        await backend.register(name, "1.0", ts_archives["echo"], synchronous=True)
    with pytest.raises(ModelAlreadyLoaded):  # no version given: TorchServe's own conflict answer
        await backend.register(name, "", ts_archives["echo"], synchronous=True)

    await backend.register(name, "2.0", ts_archives["echo-2.0"], synchronous=True)
    assert sorted(m.version for m in await backend.versions(name)) == ["1.0", "2.0"]
    assert doc(await backend.predict(name, "2.0", b"{}", timeout_s=10))["version"] == "2.0"
    assert doc(await backend.predict(name, "", b"{}", timeout_s=10))["version"] == "1.0"  # the first is default

    with pytest.raises(BackendConflict, match="default version"):
        await backend.unregister(name, "1.0")

    await backend.scale(name, "2.0", 2, 2, synchronous=True)
    scaled = await until(lambda: _ready_workers(backend, name, "2.0", 2))
    assert (scaled.min_workers, scaled.max_workers) == (2, 2)

    await backend.set_default(name, "2.0")
    await backend.unregister(name, "1.0")
    await backend.unregister(name, "2.0")
    with pytest.raises(ModelNotLoaded):
        await backend.describe(name, "")
    with pytest.raises(ModelNotLoaded):
        await backend.unregister(name, "2.0")


async def _ready_workers(backend, name: str, version: str, count: int):
    model = await backend.describe(name, version)
    return model if sum(w.status == "READY" for w in model.workers) == count else None


async def test_scale_rejects_bad_values_and_unknown_models(backend, models):
    from ml_serving_server.services.inference.domain.ports import BackendRejected

    with pytest.raises(BackendRejected, match="max_worker"):
        await backend.scale("echo", "1.0", 3, 1)
    with pytest.raises(ModelNotLoaded):
        await backend.scale(unique("missing"), "", 1, 1)


async def test_worker_death(backend, ts_archives, tmp_path):
    name = unique("dies")
    await backend.register(name, "1.0", ts_archives["error"], synchronous=True)
    try:
        with pytest.raises(WorkerDied):
            await backend.predict(name, "", payload(die_once=str(tmp_path / "a")), timeout_s=30)
        # Opted in: the request is sent again and waits for the replacement worker.
        out = await backend.predict(name, "", payload(die_once=str(tmp_path / "b")), timeout_s=30,
                                    retry_on_worker_death=True)
        assert doc(out) == {"survived": True}
    finally:
        await backend.unregister(name, "")


async def test_full_queue_is_overloaded(backend, ts_archives):
    name = unique("crowd")
    await backend.register(name, "1.0", ts_archives["slow"], synchronous=True)
    try:
        # TorchServe queues 100 requests per model (job_queue_size): send more at once.
        results = await asyncio.gather(
            *(backend.predict(name, "", payload(sleep_ms=20), timeout_s=60) for _ in range(150)),
            return_exceptions=True)
        errors = [r for r in results if isinstance(r, Exception)]
        assert errors and all(isinstance(e, BackendOverloaded) for e in errors)
        assert len(results) - len(errors) >= 100
    finally:
        await backend.unregister(name, "")


async def test_an_archive_already_in_the_store_is_loaded_from_there(backend, torchserve, ts_archives, tmp_path):
    """After a TorchServe restart its model store still holds what it fetched, and TorchServe
    refuses to fetch a file of the same name again: the stored copy is loaded instead."""
    import functools
    import http.server
    import shutil
    import threading

    stored_name = f"{uuid.uuid4().hex}-model.mar"
    shutil.copy(torchserve.model_store / ts_archives["echo"], torchserve.model_store / stored_name)
    served = tmp_path / "www"
    served.mkdir()
    (served / stored_name).write_text("this is not the archive: it must not be fetched")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    name = unique("stored")
    try:
        await backend.register(name, "", f"http://127.0.0.1:{httpd.server_port}/x/{stored_name}?X-Amz-Signature=s")
        assert doc(await backend.predict(name, "", payload(n=1), 30.0))["n"] == 1
    finally:
        httpd.shutdown()
        await backend.unregister(name, "")


async def test_predictions_spread_over_every_address_a_target_resolves_to(torchserve, models):
    """Round robin: a target naming several TorchServe replicas (in Kubernetes, dns:/// of a headless
    Service) sends predictions to all of them, not only to the first it connected to."""
    host, _, port = torchserve.endpoints.grpc_inference.rpartition(":")
    a, b = [await CuttableProxy(host, int(port)).start() for _ in range(2)]
    spread = TorchServeBackend(f"ipv4:127.0.0.1:{a.port},127.0.0.1:{b.port}", torchserve.endpoints.grpc_management)
    try:
        for index in range(40):
            doc(await spread.predict("echo", "", payload(i=index, pad="x" * 2000), timeout_s=10))
    finally:
        await spread.close()
        for proxy in (a, b):
            await proxy.stop()
    total = a.upstream_bytes + b.upstream_bytes
    assert total > 40 * 2000
    assert min(a.upstream_bytes, b.upstream_bytes) > 0.3 * total, (a.upstream_bytes, b.upstream_bytes)

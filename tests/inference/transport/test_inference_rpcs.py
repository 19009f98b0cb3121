"""InferenceService end to end inside one mesh server: registry versions loaded into a real
TorchServe by LoadModel, served by Predict, BatchPredict and StreamPredict, managed by Scale,
Describe, List and Unload; every TorchServe failure as its status and reason."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from ml_serving import (DeadlineExceededError, InternalError, InvalidArgumentError,
                        NotFoundError, prediction_value)
from mnbara.mlserving.inference.v1 import inference_pb2 as pb

from .conftest import register


async def test_predict_serves_the_loaded_registry_version(clients, loaded_models):
    _, inference = clients
    name = loaded_models["echo"]
    response = await inference.predict(name, {"user_id": 7}, version="1")
    assert (response.model.model_name, response.model.model_version) == (name, "1")
    assert prediction_value(response) == {"user_id": 7.0, "model": f"{name}-v1", "version": "1.0"}
    assert response.model_latency_ms > 0
    raw = await inference.predict(name, b'{"user_id": 8}', version="1", raw_output=True)
    assert raw.raw_prediction.startswith(b"{") and b'"user_id": 8' in raw.raw_prediction


async def test_production_is_the_default_selector(clients, loaded_models):
    registry, inference = clients
    name = loaded_models["echo"]
    with pytest.raises(NotFoundError) as caught:
        await inference.predict(name, {"x": 1})
    assert caught.value.reason == "NO_VERSION_IN_STAGE"
    await registry.transition_stage(name, "1", "STAGE_STAGING")
    await registry.transition_stage(name, "1", "STAGE_PRODUCTION")
    deadline = time.monotonic() + 10  # the Inference cache follows the Registry's events
    while True:
        try:
            response = await inference.predict(name, {"x": 1})
            break
        except NotFoundError:
            assert time.monotonic() < deadline, "Production was not seen within 10 s"
            await asyncio.sleep(0.1)
    assert response.model.model_version == "1" and response.model.stage == 3  # STAGE_PRODUCTION
    staged = await inference.predict(name, {"x": 1}, stage="STAGE_PRODUCTION")
    assert staged.model.model_version == "1"


async def test_unknown_models_and_unloaded_versions_are_not_found(clients, loaded_models, archives):
    registry, inference = clients
    with pytest.raises(NotFoundError) as caught:
        await inference.predict("no-such-model-anywhere", {"x": 1}, version="1")
    assert caught.value.reason == "MODEL_NOT_FOUND"
    with pytest.raises(NotFoundError) as caught:
        await inference.predict(loaded_models["echo"], {"x": 1}, version="9")
    assert caught.value.reason == "VERSION_NOT_FOUND"
    name = await register(registry, archives["echo"], "unloaded")
    with pytest.raises(NotFoundError) as caught:
        await inference.predict(name, {"x": 1}, version="1")
    assert caught.value.reason == "MODEL_NOT_LOADED"


async def test_handler_failures(clients, loaded_models):
    _, inference = clients
    name = loaded_models["error"]
    with pytest.raises(InternalError) as caught:
        await inference.predict(name, {"detail": "x" * 5000}, version="1")
    assert caught.value.reason == "MODEL_HANDLER_ERROR"
    with pytest.raises(InvalidArgumentError) as caught:  # the handler's own 4xx: the caller's input
        await inference.predict(name, {"detail": "user 5 unknown", "code": 400}, version="1")
    assert caught.value.reason == "MODEL_HANDLER_ERROR" and "user 5 unknown" in caught.value.message
    assert len(caught.value.message) < 1024


async def test_the_callers_deadline_is_passed_on(clients, loaded_models):
    _, inference = clients
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        await inference.predict(loaded_models["slow"], {"sleep_ms": 3000}, version="1", timeout=0.5)
    assert time.monotonic() - started < 2.5


async def test_input_limits(clients, loaded_models):
    _, inference = clients
    with pytest.raises(InvalidArgumentError) as caught:
        await inference.predict(loaded_models["echo"], b"x" * (4 * 1024 * 1024 + 1), version="1")
    assert caught.value.reason == "INPUT_TOO_LARGE"
    with pytest.raises(InvalidArgumentError) as caught:
        await inference.predict("bad name!", {"x": 1})
    assert caught.value.metadata.get("field") == "model_name"


async def test_batch_predict_reports_each_item(clients, loaded_models):
    _, inference = clients
    response = await inference.batch_predict(loaded_models["echo"], [{"i": i} for i in range(20)] + [b""],
                                             version="1")
    assert (response.success_count, response.failure_count) == (20, 1)
    assert [prediction_value(r)["i"] for r in response.results[:20]] == list(range(20))
    assert response.results[20].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_stream_predict_streams_the_handlers_parts(clients, loaded_models):
    _, inference = clients
    parts = [part async for part in inference.stream_predict(pb.StreamPredictRequest(
        model_name=loaded_models["stream"], version="1", raw_input=b'{"chunks": 4}'))]
    assert [prediction_value(p)["chunk"] for p in parts] == [0, 1, 2, 3]
    assert [p.last for p in parts] == [False, False, False, True] and [p.index for p in parts] == [0, 1, 2, 3]


async def test_management_describe_scale_list(clients, loaded_models):
    _, inference = clients
    name = loaded_models["echo"]
    described = (await inference.describe_loaded_model(pb.DescribeLoadedModelRequest(model_name=name,
                                                                                      version="1"))).loaded_model
    assert described.status == pb.LOADED_MODEL_STATUS_READY and len(described.workers) == 1
    scaled = (await inference.scale_model(pb.ScaleModelRequest(model_name=name, version="1", min_workers=1,
                                                               max_workers=2))).loaded_model
    assert (scaled.min_workers, scaled.max_workers) == (1, 2)
    listed = (await inference.list_loaded_models(pb.ListLoadedModelsRequest(model_name=name))).loaded_models
    assert [(m.model_name, m.version) for m in listed] == [(name, "1")]
    with pytest.raises(InvalidArgumentError) as caught:
        await inference.scale_model(pb.ScaleModelRequest(model_name=name, version="1", min_workers=3, max_workers=2))
    assert caught.value.reason == "INVALID_WORKER_RANGE"


async def test_load_and_unload(clients, archives):
    registry, inference = clients
    name = await register(registry, archives["echo"], "lifecycle")
    loaded = (await inference.load_model(name, version="1", batch_size=4, wait_until_ready=True,
                                         timeout=120)).loaded_model
    assert loaded.batch_size == 4 and loaded.status == pb.LOADED_MODEL_STATUS_READY
    with pytest.raises(Exception) as caught:
        await inference.load_model(name, version="1", wait_until_ready=True, timeout=60)
    assert getattr(caught.value, "reason", "") == "MODEL_ALREADY_LOADED"
    await inference.unload_model(name, "1", timeout=60)
    with pytest.raises(NotFoundError) as caught:
        await inference.predict(name, {"x": 1}, version="1")
    assert caught.value.reason == "MODEL_NOT_LOADED"
    # Loaded again (TorchServe keeps the archive it fetched, and refuses to fetch it twice).
    again = (await inference.load_model(name, version="1", wait_until_ready=True, timeout=120)).loaded_model
    assert again.status == pb.LOADED_MODEL_STATUS_READY
    assert prediction_value(await inference.predict(name, {"x": 2}, version="1"))["x"] == 2
    await inference.unload_model(name, "1", timeout=60)


async def test_a_model_that_cannot_start_fails_to_load_and_leaves_nothing(clients, archives):
    registry, inference = clients
    name = await register(registry, archives["broken"], "broken")
    with pytest.raises(InternalError) as caught:
        await inference.load_model(name, version="1", wait_until_ready=True, timeout=120)
    assert caught.value.reason == "MODEL_LOAD_FAILED"
    listed = (await inference.list_loaded_models(pb.ListLoadedModelsRequest(model_name=name))).loaded_models
    assert list(listed) == []


async def test_loading_a_version_that_does_not_exist(clients):
    registry, inference = clients
    from ...registry.conftest import unique_name
    name = unique_name("empty")
    await registry.create_registered_model(name)
    with pytest.raises(NotFoundError) as caught:
        await inference.load_model(name, version="1", timeout=30)
    assert caught.value.reason == "VERSION_NOT_FOUND"

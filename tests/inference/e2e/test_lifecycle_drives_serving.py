"""The Registry's lifecycle drives what TorchServe serves, end to end: a version promoted to
Staging and Production serves within seconds over Envoy REST, native gRPC (the seed's
`ModelServer`) and the Open Inference Protocol's REST form; a version archived (directly, or by
promoting the next one) stops serving within seconds; and after TorchServe restarts with
nothing loaded, the deployer brings back exactly what should serve.

Real processes only: a private TorchServe, a mesh server process with its deployer on, Envoy,
MLflow, S3 and PostgreSQL (see conftest.py)."""

from __future__ import annotations

import time

import pytest

from ml_serving import ModelServer, NotFoundError

from .conftest import eventually, json_body, signature_of, timed

SERVE_WITHIN_S = 15.0  # a deployed version answers this soon after its promotion
RETIRE_WITHIN_S = 10.0  # grace 1 s + reconcile 1 s + unload
RESTORE_WITHIN_S = 20.0  # TorchServe restart noticed (reconcile 1 s) + the demo model's workers start


def predict_rest(mesh, name: str, inputs: dict, **selector):
    return mesh.rest("POST", f"/api/v1/inference/models/{name}:predict", {"inputs": inputs, **selector})


async def serves(mesh, name: str, version: str, inputs: dict) -> dict:
    """The version's prediction over REST (asserting it serves)."""
    reply = predict_rest(mesh, name, inputs, version=version)
    assert reply.status == 200, (reply.status, json_body(reply))
    body = reply.json()
    assert body["model"]["modelVersion"] == version, body
    return body


async def does_not_serve(mesh, name: str, version: str) -> dict:
    reply = predict_rest(mesh, name, {"user_id": 1}, version=version)
    assert reply.status == 404, (reply.status, json_body(reply))
    body = reply.json()
    assert body["details"][0]["reason"] == "MODEL_NOT_LOADED", body
    return body


async def test_a_promoted_demo_model_serves_over_rest_grpc_and_open_inference(private_mesh, demo_artifacts):
    mesh, v1 = private_mesh, demo_artifacts["v1"]
    name, version = await mesh.register(v1.path, prefix="reco", signature=signature_of(v1))
    assert version == "1"
    await does_not_serve(mesh, name, "1")  # Development: not deployed

    mesh.transition(name, "1", "STAGE_STAGING")
    started = time.monotonic()
    staged = await eventually(lambda: serves(mesh, name, "1", {"user_id": 123, "top_k": 5}), SERVE_WITHIN_S,
                              "the Staging version serves over REST")
    print(f"staging served after {timed(started)} s")
    assert staged["model"]["stage"] == "STAGE_STAGING"

    moved = mesh.transition(name, "1", "STAGE_PRODUCTION")
    assert moved["modelVersion"]["stage"] == "STAGE_PRODUCTION"

    async def production_over_rest() -> dict:  # no selector: the Production version
        reply = predict_rest(mesh, name, {"user_id": 123, "top_k": 5})
        assert reply.status == 200, (reply.status, json_body(reply))
        body = reply.json()
        assert body["model"]["stage"] == "STAGE_PRODUCTION", body
        return body

    body = await eventually(production_over_rest, SERVE_WITHIN_S, "the Production version serves over REST")
    prediction = body["prediction"]
    assert prediction["user_id"] == 123 and prediction["model_version"] == "v1"
    scores = prediction["scores"]
    assert len(scores) == 5 and len({s["item_id"] for s in scores}) == 5
    assert [s["score"] for s in scores] == sorted((s["score"] for s in scores), reverse=True)
    assert all(0.0 <= s["score"] <= 1.0 for s in scores)
    assert float(body["modelLatencyMs"]) > 0

    # The seed's call, native gRPC through the same front door: plain Python back.
    async with ModelServer(mesh.stack.front_door, token=mesh.token) as server:
        result = await server.predict(model_name=name, inputs={"user_id": 123, "top_k": 5})
    assert result == prediction  # the same version, the same deterministic scores

    # The Open Inference Protocol's REST form (snake_case), tensors in and out.
    reply = mesh.rest("POST", f"/v2/models/{name}/infer", {
        "id": "e2e-1",
        "inputs": [{"name": "user_id", "datatype": "INT64", "shape": [1], "data": [123]},
                   {"name": "top_k", "datatype": "INT64", "shape": [1], "data": [5]}]})
    assert reply.status == 200, (reply.status, json_body(reply))
    infer = reply.json()
    assert (infer["model_name"], infer["model_version"], infer["id"]) == (name, "1", "e2e-1")
    outputs = {o["name"]: o for o in infer["outputs"]}
    assert set(outputs) == {"item_ids", "scores"}
    assert outputs["item_ids"]["datatype"] == "INT64" and outputs["scores"]["datatype"] == "FP32"
    assert [int(i) for i in outputs["item_ids"]["data"]] == [s["item_id"] for s in scores]
    assert outputs["scores"]["data"] == pytest.approx([s["score"] for s in scores], abs=1e-6)

    ready = mesh.rest("GET", f"/v2/models/{name}/ready")
    assert ready.status == 200 and ready.json()["ready"] is True


async def test_promoting_the_next_version_retires_the_previous(private_mesh, demo_artifacts):
    mesh = private_mesh
    name, _ = await mesh.register(demo_artifacts["v1"].path, prefix="reco-next")
    mesh.promote(name, "1")
    await eventually(lambda: serves(mesh, name, "1", {"user_id": 7}), SERVE_WITHIN_S, "version 1 serves")

    _, version = await mesh.register(demo_artifacts["v2"].path, name=name)
    assert version == "2"
    mesh.transition(name, "2", "STAGE_STAGING")
    await eventually(lambda: serves(mesh, name, "2", {"user_id": 7}), SERVE_WITHIN_S, "version 2 serves in Staging")
    moved = mesh.transition(name, "2", "STAGE_PRODUCTION")
    assert moved["archivedVersion"]["version"] == "1" and moved["archivedVersion"]["stage"] == "STAGE_ARCHIVED"

    started = time.monotonic()
    await eventually(lambda: does_not_serve(mesh, name, "1"), RETIRE_WITHIN_S, "the archived version 1 stops serving")
    print(f"version 1 unloaded {timed(started)} s after its archiving")

    reply = predict_rest(mesh, name, {"user_id": 7, "top_k": 3})  # Production is now version 2
    assert reply.status == 200, (reply.status, json_body(reply))
    body = reply.json()
    assert body["model"]["modelVersion"] == "2" and body["prediction"]["model_version"] == "v2"
    async with ModelServer(mesh.stack.front_door, token=mesh.token) as server:
        assert (await server.predict(model_name=name, inputs={"user_id": 7, "top_k": 3})) == body["prediction"]
        with pytest.raises(NotFoundError) as caught:
            await server.predict(model_name=name, inputs={"user_id": 7}, version="1")
    assert caught.value.reason == "MODEL_NOT_LOADED"

    oip = mesh.rest("POST", f"/v2/models/{name}/versions/1/infer",
                    {"inputs": [{"name": "user_id", "datatype": "INT64", "shape": [1], "data": [7]}]})
    assert oip.status == 404 and json_body(oip)["details"][0]["reason"] == "MODEL_NOT_LOADED"


async def test_archiving_a_staging_version_stops_it_serving(private_mesh, handler_archives):
    mesh = private_mesh
    name, _ = await mesh.register(handler_archives["echo"], prefix="echo-archive")
    mesh.transition(name, "1", "STAGE_STAGING")
    body = await eventually(lambda: serves(mesh, name, "1", {"x": 1}), SERVE_WITHIN_S, "the Staging echo serves")
    assert body["prediction"] == {"x": 1, "model": f"{name}-v1", "version": "1.0"}

    mesh.transition(name, "1", "STAGE_ARCHIVED")
    await eventually(lambda: does_not_serve(mesh, name, "1"), RETIRE_WITHIN_S, "the archived echo stops serving")
    loaded = mesh.rest("GET", f"/api/v1/inference/models?modelName={name}")
    assert loaded.status == 200 and loaded.json()["loadedModels"] == []


async def restart_and_check_restored(mesh, handler_archives, demo_artifacts, *, same_model_store: bool) -> None:
    """A Production demo model and a Staging echo serve, an archived echo does not; TorchServe goes
    away and comes back on the same ports with nothing loaded; the deployer brings back exactly the
    first two."""
    production, _ = await mesh.register(demo_artifacts["v1"].path, prefix="restart-prod")
    mesh.promote(production, "1")
    staging, _ = await mesh.register(handler_archives["echo"], prefix="restart-staging")
    mesh.transition(staging, "1", "STAGE_STAGING")
    retired, _ = await mesh.register(handler_archives["echo"], prefix="restart-archived")
    mesh.transition(retired, "1", "STAGE_STAGING")
    for name, inputs in ((production, {"user_id": 5}), (staging, {"x": 1}), (retired, {"x": 2})):
        await eventually(lambda: serves(mesh, name, "1", inputs), SERVE_WITHIN_S, f"{name} serves")
    mesh.transition(retired, "1", "STAGE_ARCHIVED")
    await eventually(lambda: does_not_serve(mesh, retired, "1"), RETIRE_WITHIN_S, f"{retired} stops serving")

    old_ports = dict(mesh.torchserve.ports)
    mesh.stop_torchserve()
    down = predict_rest(mesh, production, {"user_id": 5})
    assert down.status == 503 and json_body(down)["details"][0]["reason"] == "BACKEND_UNAVAILABLE", json_body(down)

    mesh.start_torchserve(same_model_store=same_model_store)  # nothing loaded
    assert mesh.torchserve.ports == old_ports
    started = time.monotonic()
    body = await eventually(lambda: serves(mesh, production, "1", {"user_id": 5, "top_k": 2}), RESTORE_WITHIN_S,
                            "the Production demo model serves again after the restart")
    assert len(body["prediction"]["scores"]) == 2
    await eventually(lambda: serves(mesh, staging, "1", {"x": 3}), RESTORE_WITHIN_S,
                     "the Staging echo serves again after the restart")
    print(f"restored {timed(started)} s after TorchServe answered again")

    listed = mesh.rest("GET", "/api/v1/inference/models?pageSize=1000")
    assert listed.status == 200
    mine = {(m["modelName"], m["version"]) for m in listed.json()["loadedModels"]
            if m["modelName"] in (production, staging, retired)}
    assert mine == {(production, "1"), (staging, "1")}  # the archived version is not brought back
    await does_not_serve(mesh, retired, "1")


async def test_a_replaced_torchserve_gets_back_what_should_serve(private_mesh, handler_archives, demo_artifacts):
    """A new TorchServe on the same ports, from an empty folder (a new pod, say)."""
    await restart_and_check_restored(private_mesh, handler_archives, demo_artifacts, same_model_store=False)


async def test_a_restarted_torchserve_gets_back_what_should_serve(private_mesh, handler_archives, demo_artifacts):
    """The same TorchServe restarted: its model store still holds the archives it downloaded, and
    TorchServe refuses to download one again (INTERNAL "Model file already exists <file>.mar")."""
    await restart_and_check_restored(private_mesh, handler_archives, demo_artifacts, same_model_store=True)

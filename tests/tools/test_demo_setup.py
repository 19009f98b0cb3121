"""`make up`'s demo setup (ml_serving_tools.demo_setup) against the in-process mesh, with the
session's shared MLflow, S3, PostgreSQL and TorchServe: registration is idempotent, the stages
are the intended ones, Predict answers ranked items, and the banner's curl and tritonclient
examples work as printed, through a real Envoy.

The in-process mesh runs no deployer, so the setup loads the versions itself (`load=True`,
what `make up` does too when INFERENCE_DEPLOYER_ENABLED=false). Each run uses a model name of
its own, unloaded and deleted at the end.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import numpy as np
import pytest
from inference import grpc_predict_v2_pb2 as oip
from inference import grpc_predict_v2_pb2_grpc as oip_grpc
from mnbara.mlserving.router.v1 import router_pb2

from ml_serving import InferenceClient, RegistryClient, RouterClient
from ml_serving_tools import demo_setup
from ml_serving_tools.paths import ROOT

from ..registry.conftest import unique_name

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def demo_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("demo-models")


async def _transitions(address: str, token: str, name: str) -> int:
    async with RegistryClient(address, token=token) as registry:
        return len([t async for t in registry.iter_stage_transitions(model_name=name, page_size=100)])


@pytest.fixture(scope="module")
async def demo(mesh, token, demo_cache):
    """The demo set up twice on the mesh: (address, first report, second report, the first's log
    lines, stage transitions after each run)."""
    address, name = f"127.0.0.1:{mesh.port}", unique_name("demo-rec")
    lines: list[str] = []
    first = await demo_setup.setup_demo(address, token, demo_cache, model_name=name, load=True, log=lines.append)
    after_first = await _transitions(address, token, name)
    second = await demo_setup.setup_demo(address, token, demo_cache, model_name=name, load=True)
    yield address, first, second, lines, (after_first, await _transitions(address, token, name))
    async with InferenceClient(address, token=token) as inference, RegistryClient(address, token=token) as registry:
        for version in first.versions.values():
            try:
                await inference.unload_model(name, version, timeout=60)
            except Exception:  # noqa: BLE001: best effort
                pass
        await registry.delete_registered_model(name, force=True)


def _ranked(answer, top_k=5):
    scores = [s["score"] for s in answer["scores"]]
    assert len(scores) == top_k and scores == sorted(scores, reverse=True)
    assert len({s["item_id"] for s in answer["scores"]}) == top_k
    return [int(s["item_id"]) for s in answer["scores"]]


async def test_registers_two_versions_and_stages_them(demo, token):
    address, first, _, lines, _ = demo
    assert first.versions == {"v1": "1", "v2": "2"} and first.created == ["1", "2"]
    assert first.stages == {"1": "PRODUCTION", "2": "STAGING"}
    assert (first.production, first.staging) == ("1", ["2"])
    assert lines[0].startswith("building the demo model")
    async with RegistryClient(address, token=token) as registry:
        versions = {v.version: v async for v in registry.iter_model_versions(first.model_name)}
    assert set(versions) == {"1", "2"}
    v1, v2 = versions["1"], versions["2"]
    assert v1.tags["demo.artifact"] == "v1" and v2.tags["demo.artifact"] == "v2"
    assert v2.metrics["holdout_auc"] > v1.metrics["holdout_auc"] > 0.6
    assert [(t.name, t.datatype, list(t.shape)) for t in v1.signature.outputs] == [
        ("item_ids", "INT64", [-1]), ("scores", "FP32", [-1])]
    assert [t.name for t in v1.signature.inputs] == ["user_id", "item_ids", "item_id", "top_k", "context"]


async def test_a_second_run_reuses_everything(demo, token):
    address, first, second, _, (after_first, after_second) = demo
    assert second.created == [] and second.versions == first.versions and second.stages == first.stages
    async with RegistryClient(address, token=token) as registry:
        versions = [v async for v in registry.iter_model_versions(first.model_name)]
    assert len(versions) == 2
    assert after_second == after_first >= 3  # v1: Staging, Production; v2: Staging; none by the second run


async def test_predict_answers_ranked_items_from_both_versions(demo):
    _, first, second, _, _ = demo
    production, staging = first.answers["PRODUCTION"], first.answers["STAGING"]
    assert production["model_version"] == "v1" and staging["model_version"] == "v2"
    assert production["user_id"] == 123 and _ranked(production) != _ranked(staging)
    assert second.answers == first.answers


async def test_premium_users_enter_the_demo_experiment(demo, token):
    address, first, second, _, _ = demo
    assert first.experiment == second.experiment == f"{first.model_name}-ab"
    async with RouterClient(address, token=token) as router:
        served = [(await router.assign_variant(f"user-{i}", segments=["premium"], model_name=first.model_name,
                                               dry_run=True)).assignment for i in range(200)]
        outsider = (await router.assign_variant("user-1", model_name=first.model_name, dry_run=True)).assignment
    assert {a.experiment for a in served} == {first.experiment}
    assert {a.model_version for a in served} == {"1", "2"}  # 90% / 10% of 200 users: both occur
    assert (outsider.reason, outsider.model_version) == (router_pb2.ASSIGNMENT_REASON_DEFAULT, "1")  # not premium


async def test_open_inference_protocol_answers_the_signature_outputs(demo, channel):
    """gRPC ModelInfer, as tritonclient.grpc sends it: the handler's tensors come back typed."""
    _, first, _, _, _ = demo
    request = oip.ModelInferRequest(model_name=first.model_name)
    for name, value in (("user_id", 123), ("top_k", 5)):
        tensor = request.inputs.add(name=name, datatype="INT64", shape=[1])
        tensor.contents.int64_contents.append(value)
    reply = await oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert reply.model_version == "1"
    outputs = {o.name: (o.datatype, list(o.shape), raw) for o, raw in zip(reply.outputs, reply.raw_output_contents)}
    assert outputs["item_ids"][:2] == ("INT64", [5]) and outputs["scores"][:2] == ("FP32", [5])
    item_ids = np.frombuffer(outputs["item_ids"][2], dtype="<i8").tolist()
    scores = np.frombuffer(outputs["scores"][2], dtype="<f4").tolist()
    assert item_ids == _ranked(first.answers["PRODUCTION"])
    assert scores == sorted(scores, reverse=True)


async def test_the_banner_examples_work_through_envoy(demo, stack):
    """The banner's curl commands and tritonclient snippet, run as printed against a real Envoy
    (the stack's mesh process shares the Registry and TorchServe with the in-process mesh)."""
    _, first, _, _, _ = demo
    text = demo_setup.banner(stack.front_door, first)
    env = {**os.environ, "ML_SERVING_TOKEN": stack.token}
    lines = text.splitlines()
    commands = [line.strip().removesuffix("\\") + " " + lines[i + 1].strip() for i, line in enumerate(lines)
                if line.startswith("  curl ") and line.endswith("\\")]
    assert len(commands) == 4  # Predict twice, OIP, the Router's Predict
    for command in commands:
        done = await asyncio.to_thread(subprocess.run, ["bash", "-c", command + " -w '\\n%{http_code}'"],
                                       capture_output=True, text=True, env=env, timeout=60)
        body, _, status = done.stdout.rpartition("\n")
        assert status == "200", (command, done.stdout, done.stderr)
        if "/v2/" in command:
            assert '"name":"item_ids"' in body.replace(" ", "") and '"datatype":"FP32"' in body.replace(" ", "")
        else:
            assert '"itemId"' in body or '"item_id"' in body, body
    snippet = text.split("<<'EOF'\n", 1)[1].split("\nEOF", 1)[0]
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", snippet], capture_output=True,
                                   text=True, env=env, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert str(_ranked(first.answers["PRODUCTION"])[0]) in done.stdout


def test_a_failure_is_a_warning_not_the_end(tmp_path, monkeypatch, capsys):
    def broken(out_dir):
        raise RuntimeError("no disk left")

    monkeypatch.setattr(demo_setup, "build_demo_models", broken)
    assert demo_setup.run_demo_setup("127.0.0.1:1", "token", tmp_path, env={}) is None
    err = capsys.readouterr().err
    assert err.startswith("warning: the demo model could not be set up") and "no disk left" in err


@pytest.mark.parametrize("value, enabled", [(None, True), ("true", True), ("false", False), ("0", False),
                                            ("off", False)])
def test_loads_itself_only_without_a_deployer(value, enabled):
    assert demo_setup._deployer_enabled({} if value is None else {"INFERENCE_DEPLOYER_ENABLED": value}) is enabled


"""The secured front door in front of the real mesh (its own token check on too), as
`make up` runs it: tokens pass Envoy unchanged and satisfy the mesh; Envoy refuses what
the mesh would refuse before it gets there; a draining mesh stops getting traffic."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from ml_serving_tools import run_mesh
from ml_serving_tools import stack as stack_module
from ml_serving_tools.devauth import mint_token
from ml_serving_tools.paths import ROOT

from .gateway_support import request, rest_json_error

JSON = {"content-type": "application/json"}


def start(tmp_path_factory, name: str, env: dict, keys) -> stack_module.Stack:
    return stack_module.start_stack(
        tmp_path_factory.mktemp(name), env,
        grpc_addr=f"127.0.0.1:{stack_module.free_port()}", front_door=f"127.0.0.1:{stack_module.free_port()}",
        admin_addr=f"127.0.0.1:{stack_module.free_port()}", metrics_addr=f"127.0.0.1:{stack_module.free_port()}",
        base_id=stack_module.free_port(), auth=keys)


@pytest.fixture(scope="module")
def secured(tmp_path_factory, stack_env, dev_keys):
    running = start(tmp_path_factory, "secured", stack_env, dev_keys)
    yield running
    running.stop()


def grpcurl(*args: str) -> subprocess.CompletedProcess:
    search = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    return subprocess.run([shutil.which("grpcurl", path=search), *args], capture_output=True, text=True, timeout=30,
                          check=False)


def test_a_token_with_every_scope_works_end_to_end(secured):
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    created = request(secured.front_door, "POST", "/api/v1/bandits/definitions",
                      {"name": name, "arms": [{"id": "a"}, {"id": "b"}]}, JSON, token=secured.token)
    assert created.status == 200, created.body
    selected = request(secured.front_door, "POST", "/api/v1/bandits/select", {"bandit": name}, JSON,
                       token=secured.token)
    assert selected.status == 200 and selected.json()["decisionId"], selected.body
    stats = request(secured.front_door, "GET", f"/api/v1/bandits/stats?bandit={name}",
                    token=secured.mint(["bandit.read"]))
    assert stats.status == 200 and stats.json()["totalPulls"] == "1", stats.body


def test_envoy_refuses_before_the_mesh(secured):
    missing = request(secured.front_door, "POST", "/api/v1/bandits/select", {"bandit": "x"}, JSON)
    assert rest_json_error(missing, 401, 16)["message"] == "Jwt is missing"
    read_only = secured.mint(["bandit.read"])
    denied = request(secured.front_door, "POST", "/api/v1/bandits/select", {"bandit": "x"}, JSON, token=read_only)
    assert "bandit.write" in rest_json_error(denied, 403, 7)["message"]
    form = request(secured.front_door, "POST", "/api/v1/bandits/select", b"bandit=x",
                   {"content-type": "application/x-www-form-urlencoded"}, token=secured.token)
    rest_json_error(form, 415, 3)


def test_grpcurl_lists_without_a_token_and_calls_with_one(secured):
    listed = grpcurl("-plaintext", secured.front_door, "list")
    assert listed.returncode == 0, listed.stderr
    assert "mnbara.mlserving.bandit.v1.BanditService" in listed.stdout.split()
    refused = grpcurl("-plaintext", "-d", '{"bandit": "x"}', secured.front_door,
                      "mnbara.mlserving.bandit.v1.BanditService/GetStats")
    assert refused.returncode != 0 and "Unauthenticated" in refused.stderr
    done = grpcurl("-plaintext", "-H", f"authorization: Bearer {secured.token}", "-d", '{"bandit": "no-such"}',
                   secured.front_door, "mnbara.mlserving.bandit.v1.BanditService/GetStats")
    assert "NotFound" in done.stderr, done.stderr  # the mesh itself answered: the token reached it


@pytest.mark.skipif(shutil.which("curl") is None, reason="the banner's examples use curl")
def test_the_examples_make_up_prints_work_as_printed(secured):
    run_mesh.create_demo_bandit(secured.grpc_addr, secured.token)
    banner = run_mesh.banner(secured, "redis://...", "postgresql://...")
    (export,) = [line for line in banner.splitlines() if line.startswith("export ML_SERVING_TOKEN=")]
    assert export == f"export ML_SERVING_TOKEN={secured.token}"
    examples = [line.strip() for line in banner.splitlines() if line.strip().startswith(("curl ", ".venv/bin/grpcurl "))]
    assert len(examples) == 10
    outputs = []
    for example in examples:
        done = subprocess.run(["bash", "-c", f"{export}\n{example}"], cwd=ROOT, capture_output=True, text=True,
                              timeout=30, check=False)
        assert done.returncode == 0, (example, done.stderr)
        outputs.append(done.stdout)
    select, stats, create_model, list_models, trigger, runs, record, alerts, grpc_list, grpc_select = outputs
    assert json.loads(select)["choices"] and json.loads(stats)["bandit"] == "demo"
    created = json.loads(create_model)  # a second run of the example meets the model the first made
    assert created.get("registeredModel", {}).get("name") == "fraud" or \
        created["details"][0]["reason"] == "MODEL_ALREADY_EXISTS", created
    assert json.loads(list_models)["registeredModels"]  # one page, in name order
    run_id = json.loads(trigger)["runId"]  # queued (no worker here), then cancelled below
    assert json.loads(runs)["runs"][0]["runId"] == run_id
    assert json.loads(record) == {"duplicate": False} and isinstance(json.loads(alerts)["alerts"], list)
    subprocess.run(["bash", "-c", f"{export}\ncurl -s -X POST http://{secured.front_door}/api/v1/ml/retraining/runs/"
                    f"{run_id}:cancel -H \"authorization: Bearer $ML_SERVING_TOKEN\" -d '{{}}'"],
                   cwd=ROOT, capture_output=True, text=True, timeout=30, check=True)
    assert "mnbara.mlserving.bandit.v1.BanditService" in grpc_list.split()
    assert json.loads(grpc_select)["decision_id"]


def test_a_draining_mesh_stops_getting_traffic(tmp_path_factory, stack_env, dev_keys):
    """On SIGTERM the mesh reports NOT_SERVING for MESH_SHUTDOWN_DELAY_SECONDS while still
    accepting calls; Envoy's health checks must notice within that time."""
    running = start(tmp_path_factory, "draining", {**stack_env, "MESH_SHUTDOWN_DELAY_SECONDS": "15"}, dev_keys)
    mesh = running.processes[0]
    try:
        token = mint_token(dev_keys, scopes=["bandit.read"])
        assert request(running.front_door, "GET", "/api/v1/bandits/stats?bandit=none", token=token).status == 404
        mesh.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 12
        while True:
            reply = request(running.front_door, "GET", "/api/v1/bandits/stats?bandit=none", token=token)
            if reply.status == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert rest_json_error(reply, 503, 14)["message"] == "no healthy upstream", json.loads(reply.body)
        assert mesh.poll() is None  # still draining: Envoy stopped first
    finally:
        running.stop()

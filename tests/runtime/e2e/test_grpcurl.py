"""grpcurl through the same front door as REST: reflection and a real call."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid

from mnbara.mlserving.catalog import SERVICES

from ...support import call


def grpcurl(*args: str) -> subprocess.CompletedProcess:
    search = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    return subprocess.run([shutil.which("grpcurl", path=search), *args], capture_output=True, text=True, timeout=30)


def test_list_shows_every_service(stack):
    listed = grpcurl("-plaintext", stack.front_door, "list")
    assert listed.returncode == 0, listed.stderr
    names = set(listed.stdout.split())
    assert {entry.full_name for entry in SERVICES} <= names
    assert "grpc.health.v1.Health" in names
    assert any(name.startswith("grpc.reflection") for name in names)


def test_select_through_grpcurl(stack):
    name = f"grpcurl-{uuid.uuid4().hex[:8]}"
    assert call(stack.front_door, "POST", "/api/v1/bandits/definitions",
                {"name": name, "arms": [{"id": "x"}, {"id": "y"}]}, token=stack.token).status == 200
    done = grpcurl("-plaintext", "-H", f"authorization: Bearer {stack.token}", "-d",
                   json.dumps({"bandit": name, "k": 2}), stack.front_door,
                   "mnbara.mlserving.bandit.v1.BanditService/Select")
    assert done.returncode == 0, done.stderr
    reply = json.loads(done.stdout)
    # grpcurl prints proto field names (arm_id), unlike the REST gateway (armId).
    assert {c["arm_id"] for c in reply["choices"]} == {"x", "y"}

"""The real stack for end-to-end tests: a mesh server process and Envoy, on free
loopback ports, against the real Redis the test command found or started."""

from __future__ import annotations

import sys

import pytest

from ..conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import stack as stack_module  # noqa: E402


@pytest.fixture(scope="session")
def stack_env(redis_url, key_prefix) -> dict[str, str]:
    return {"REDIS_URL": redis_url, "MESH_KEY_PREFIX": key_prefix, "LOG_LEVEL": "INFO"}


@pytest.fixture(scope="session")
def stack(tmp_path_factory, stack_env):
    state = tmp_path_factory.mktemp("stack")
    running = stack_module.start_stack(
        state, stack_env,
        grpc_addr=f"127.0.0.1:{stack_module.free_port()}",
        front_door=f"127.0.0.1:{stack_module.free_port()}",
        admin_addr=f"127.0.0.1:{stack_module.free_port()}",
        metrics_addr=f"127.0.0.1:{stack_module.free_port()}",
        base_id=stack_module.free_port(),
    )
    running.log_path = state / "mesh.log"
    yield running
    running.stop()

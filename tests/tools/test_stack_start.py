"""The tools' process starters: a mesh that cannot start says why, and ports do not collide."""

from __future__ import annotations

import socket

import pytest

from ml_serving_tools import stack
from ml_serving_tools.net import free_port


def test_a_mesh_that_exits_at_startup_raises_with_the_end_of_its_log(tmp_path):
    # auth on with no key set configured: the mesh refuses to start, and says so in its log
    env = {"MESH_GRPC_ADDR": f"127.0.0.1:{free_port()}", "MESH_METRICS_ADDR": "", "AUTH_ENABLED": "true",
           "AUTH_JWKS_FILE": "", "AUTH_JWKS_URL": ""}
    with pytest.raises(RuntimeError) as raised:
        stack.start_mesh(env, tmp_path / "mesh.log", timeout=30)
    message = str(raised.value)
    assert "exited with code 1" in message
    assert str(tmp_path / "mesh.log") in message
    assert "set exactly one of AUTH_JWKS_FILE and AUTH_JWKS_URL" in message  # why, not just the exit code


def test_ports_handed_out_are_distinct_bindable_and_outside_the_ephemeral_range():
    low, high = (int(n) for n in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert not any(low <= port <= high for port in ports)
    for port in ports[:5]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))

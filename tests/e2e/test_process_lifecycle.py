"""The server process: SIGTERM stops it cleanly (exit 0) and promptly."""

from __future__ import annotations

import signal
import time

from .conftest import stack_module


def test_sigterm_stops_the_server_cleanly(tmp_path, stack_env):
    addr = f"127.0.0.1:{stack_module.free_port()}"
    proc = stack_module.start_mesh({**stack_env, "MESH_GRPC_ADDR": addr, "MESH_METRICS_ADDR": ""},
                                   tmp_path / "mesh.log")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert time.monotonic() - started < 5
    log = (tmp_path / "mesh.log").read_text()
    assert '"msg": "stopped"' in log and "Traceback" not in log

"""The server process: SIGTERM stops it cleanly (exit 0) and promptly."""

from __future__ import annotations

import signal
import time

from ml_serving_tools import stack as stack_module


def test_sigterm_stops_the_server_cleanly(tmp_path, stack_env):
    addr = f"127.0.0.1:{stack_module.free_port()}"
    proc = stack_module.start_mesh({**stack_env, "MESH_GRPC_ADDR": addr, "MESH_METRICS_ADDR": "",
                                    "MESH_SHUTDOWN_DELAY_SECONDS": "0"}, tmp_path / "mesh.log")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    assert time.monotonic() - started < 5
    log = (tmp_path / "mesh.log").read_text()
    assert '"msg": "stopped"' in log and "Traceback" not in log


def test_sigterm_reports_not_serving_during_the_shutdown_delay(tmp_path, stack_env):
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    addr = f"127.0.0.1:{stack_module.free_port()}"
    proc = stack_module.start_mesh({**stack_env, "MESH_GRPC_ADDR": addr, "MESH_METRICS_ADDR": "",
                                    "MESH_SHUTDOWN_DELAY_SECONDS": "1.5"}, tmp_path / "mesh.log")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    with grpc.insecure_channel(addr) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING  # still answering, but draining
    assert proc.wait(timeout=15) == 0


def test_a_second_signal_exits_at_once(tmp_path, stack_env):
    addr = f"127.0.0.1:{stack_module.free_port()}"
    proc = stack_module.start_mesh({**stack_env, "MESH_GRPC_ADDR": addr, "MESH_METRICS_ADDR": "",
                                    "MESH_SHUTDOWN_DELAY_SECONDS": "30"}, tmp_path / "mesh.log")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 1
    assert time.monotonic() - started < 5

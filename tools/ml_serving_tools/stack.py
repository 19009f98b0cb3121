"""Start and stop the local stack: mesh server processes and the Envoy front door.

Shared by `make up` (run_mesh), the end-to-end tests and the benchmarks, so all three run
the mesh exactly the same way: `python -m ml_serving_server` configured by environment
variables, and a real Envoy generated from gen/descriptor.binpb.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .gateway import envoy_process, generate
from .net import free_port
from .paths import DESCRIPTOR

__all__ = ["Stack", "free_port", "start_envoy", "start_mesh", "start_stack", "stop", "wait_serving"]


def wait_serving(addr: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Poll the gRPC health service until the server reports SERVING."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"mesh server exited with code {proc.returncode} before serving")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.05)
    raise TimeoutError(f"mesh server at {addr} not serving after {timeout} s")


def start_mesh(env: dict[str, str], log_path: Path, timeout: float = 30.0) -> subprocess.Popen:
    """One mesh server process; returns once it is SERVING on env['MESH_GRPC_ADDR']."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ml_serving_server"], env={**os.environ, **env},
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_serving(env["MESH_GRPC_ADDR"], timeout, proc)
    except BaseException:
        stop(proc)
        raise
    return proc


def start_envoy(state_dir: Path, listen: str, upstream: str, admin: str, base_id: int) -> subprocess.Popen:
    config = generate.write(DESCRIPTOR, state_dir / f"envoy-{base_id}.yaml", listen, upstream, admin)
    proc = envoy_process.start_envoy(config, base_id=base_id, log_path=state_dir / f"envoy-{base_id}.log")
    try:
        envoy_process.wait_ready(admin, timeout=15, proc=proc)
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    """SIGTERM (the mesh drains in-flight calls), then SIGKILL after `timeout`."""
    return envoy_process.stop_envoy(proc, timeout)  # the same for any process we started


@dataclass
class Stack:
    grpc_addr: str
    front_door: str
    admin_addr: str
    metrics_addr: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            stop(proc)


def start_stack(state_dir: Path, env: dict[str, str], grpc_addr: str, front_door: str, admin_addr: str,
                metrics_addr: str, base_id: int) -> Stack:
    """A mesh server hosting every service, and Envoy in front of it."""
    stack = Stack(grpc_addr, front_door, admin_addr, metrics_addr)
    try:
        stack.processes.append(start_mesh(
            {**env, "MESH_GRPC_ADDR": grpc_addr, "MESH_METRICS_ADDR": metrics_addr},
            state_dir / "mesh.log"))
        stack.processes.append(start_envoy(state_dir, front_door, grpc_addr, admin_addr, base_id))
    except BaseException:
        stack.stop()
        raise
    return stack

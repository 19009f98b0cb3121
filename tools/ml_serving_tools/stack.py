"""Start and stop the local stack: mesh server processes and the Envoy front door.

Shared by `make up` (run_mesh), the end-to-end tests and the benchmarks, so all three run
the mesh exactly the same way: `python -m ml_serving_server` configured by environment
variables, and a real Envoy generated from gen/descriptor.binpb.

Authentication: given development keys (``devauth.ensure_dev_keys``), Envoy checks tokens
against their JWKS and the mesh is told to do the same (``AUTH_JWKS_FILE``, ``AUTH_ISSUER``,
``AUTH_AUDIENCE``, unless the caller's env sets them), and the returned Stack carries the
keys and a token with every scope::

    keys = devauth.ensure_dev_keys(state / "auth")
    running = start_stack(state, env, ..., auth=keys)
    call(running.front_door, "GET", "/api/v1/bandits/stats?bandit=demo", token=running.token)

Without keys Envoy checks no token (it logs a warning); the mesh does what its env says.
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

from . import devauth
from .gateway import envoy_process, generate
from .net import free_port
from .paths import DESCRIPTOR

__all__ = ["Stack", "free_port", "gateway_auth", "mesh_auth_env", "start_envoy", "start_mesh", "start_stack", "stop",
           "wait_serving"]


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
    except (RuntimeError, TimeoutError) as error:
        stop(proc)
        raise type(error)(f"{error}; the end of its log ({log_path}):\n{log_tail(log_path)}") from None
    except BaseException:
        stop(proc)
        raise
    return proc


def log_tail(path: Path, max_bytes: int = 4000) -> str:
    """The last `max_bytes` of a log, for an error that says why a process did not start."""
    try:
        with open(path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - max_bytes))
            return log.read().decode(errors="replace")
    except OSError as error:
        return f"(unreadable: {error})"


def start_retraining_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """One retraining worker process (`ml-serving-retraining-worker`), logging to `log_path`. It
    has no port: it is running once it has started (its claims show in the runs it takes)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "ml_serving_server.services.pipeline.worker_main"],
                                env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def gateway_auth(keys: devauth.DevKeys) -> generate.JwtAuth:
    """Envoy's token check for tokens signed with ``keys``."""
    return generate.JwtAuth(issuer=keys.issuer, audiences=(keys.audience,), jwks_file=keys.jwks)


def mesh_auth_env(keys: devauth.DevKeys) -> dict[str, str]:
    """The mesh's settings (AUTH_*) for tokens signed with ``keys``, and the tokens the Inference
    service (registry.read) and the Router (registry.read, registry.write and registry.promote: its
    canaries promote and archive versions) show the Registry, the retraining workers show the
    Registry and the Router's monitor feed shows the Pipeline, in files beside the keys."""
    return {"AUTH_ENABLED": "true", "AUTH_JWKS_FILE": str(keys.jwks), "AUTH_ISSUER": keys.issuer,
            "AUTH_AUDIENCE": keys.audience, "INFERENCE_REGISTRY_TOKEN_FILE": str(service_token_file(keys)),
            "ROUTER_REGISTRY_TOKEN_FILE": str(service_token_file(keys, subject="router", scopes=ROUTER_SCOPES)),
            "PIPELINE_RETRAINING_REGISTRY_TOKEN_FILE": str(service_token_file(keys, subject="retraining",
                                                                             scopes=RETRAINING_SCOPES)),
            "ROUTER_PIPELINE_TOKEN_FILE": str(service_token_file(keys, subject="router-monitor-feed",
                                                                 scopes=("pipeline.write",)))}


ROUTER_SCOPES = ("registry.read", "registry.write", "registry.promote")
RETRAINING_SCOPES = ("registry.read", "registry.write")  # workers register the versions they train


def service_token_file(keys: devauth.DevKeys, subject: str = "inference", scopes: tuple[str, ...] = ("registry.read",),
                       ttl_seconds: int = 30 * 86_400) -> Path:
    """A fresh token for one mesh service calling another, written (0600) beside the keys."""
    path = keys.jwks.parent / f"{subject}-service.token"
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(devauth.mint_token(keys, list(scopes), subject=subject, ttl_seconds=ttl_seconds))
    return path


def start_envoy(state_dir: Path, listen: str, upstream: str, admin: str, base_id: int, *,
                auth: devauth.DevKeys | generate.JwtAuth | None = None, **gateway_options) -> subprocess.Popen:
    """Envoy in front of ``upstream``; returns once it is ready.

    ``auth``: development keys or a ``JwtAuth`` (None: no token check, with a warning);
    ``gateway_options``: the generator's other options (limits, cors_origins, tls, upstream_tls).
    """
    if isinstance(auth, devauth.DevKeys):
        auth = gateway_auth(auth)
    config = generate.write(DESCRIPTOR, state_dir / f"envoy-{base_id}.yaml", listen, upstream, admin, auth=auth,
                            **gateway_options)
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
    keys: devauth.DevKeys | None = None  # what tokens are signed with (None: Envoy checks none)
    token: str | None = None  # a token with every scope, when keys are set
    log_path: Path | None = None  # the mesh server's log

    def mint(self, scopes: list[str] | None = None, subject: str = "test", **claims) -> str:
        """Another token signed with the stack's keys (default: every scope)."""
        if self.keys is None:
            raise RuntimeError("this stack was started without keys")
        return devauth.mint_token(self.keys, scopes=scopes, subject=subject, **claims)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            stop(proc)


def start_stack(state_dir: Path, env: dict[str, str], grpc_addr: str, front_door: str, admin_addr: str,
                metrics_addr: str, base_id: int, *, auth: devauth.DevKeys | None = None, retraining_workers: int = 0,
                **gateway_options) -> Stack:
    """A mesh server hosting every service, Envoy in front of it, and `retraining_workers` workers
    (registering what they train in this mesh's Registry).

    With ``auth`` (development keys) both check tokens signed with them (the caller's env
    wins for the mesh's AUTH_* settings) and the Stack carries a token with every scope.
    ``gateway_options`` go to the Envoy config generator (limits, cors_origins, tls, ...).
    """
    stack = Stack(grpc_addr, front_door, admin_addr, metrics_addr, keys=auth, log_path=state_dir / "mesh.log")
    mesh_env = {**env, "MESH_GRPC_ADDR": grpc_addr, "MESH_METRICS_ADDR": metrics_addr}
    if auth is not None:
        mesh_env = {**mesh_auth_env(auth), **mesh_env}
        stack.token = devauth.mint_token(auth, subject="stack")
    try:
        stack.processes.append(start_mesh(mesh_env, stack.log_path))
        stack.processes.append(start_envoy(state_dir, front_door, grpc_addr, admin_addr, base_id, auth=auth,
                                           **gateway_options))
        for index in range(retraining_workers):
            stack.processes.append(start_retraining_worker(
                {**mesh_env, "PIPELINE_RETRAINING_REGISTRY_ADDR": grpc_addr},
                state_dir / f"retraining-worker-{index + 1}.log"))
    except BaseException:
        stack.stop()
        raise
    return stack

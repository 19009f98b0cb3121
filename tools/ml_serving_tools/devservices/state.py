"""The state directory: a record of each embedded server (``devservices.json`` plus
``redis.pid`` / ``postgres.pid`` / ``s3.pid`` / ``mlflow.pid``), the lock that serialises
find-or-start, and stopping or reusing what is recorded there."""

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
KINDS = ("redis", "postgres", "s3", "mlflow", "torchserve")
_CMDLINE_MARKS = {"redis": "redis-server", "postgres": "postgres", "s3": "weed", "mlflow": "mlflow"}
"""What a recorded pid's command line must contain (besides the port) to still be our server."""
_STOP = {  # first signal and grace period before SIGKILL of the process group
    "postgres": (signal.SIGINT, 15.0),  # "fast shutdown"
    "redis": (signal.SIGTERM, 5.0),  # no persistence configured
    # weed mini stops in ~1 s, except that once its admin server has run maintenance scans
    # (after about a minute) it waits 10 s for the admin to finish: not worth waiting for, as
    # S3 has stopped by then and the rest survives a kill (its stores recover at start).
    "s3": (signal.SIGTERM, 3.0),
    "mlflow": (signal.SIGTERM, 10.0),  # forwarded to its uvicorn child
}
_AFTER_STOP: dict[str, Callable[["Embedded"], None]] = {}


def after_stop(kind: str, cleanup: Callable[["Embedded"], None]) -> None:
    """Run ``cleanup(rec)`` whenever a ``kind`` server has been stopped (what it leaves behind)."""
    _AFTER_STOP[kind] = cleanup


@dataclass
class Embedded:
    kind: str  # one of KINDS
    pid: int
    port: int
    url: str
    binary: str
    data_dir: str
    log_file: str
    started_at: float = field(default_factory=time.time)
    config: str = ""  # what it was started with, when that decides whether it can be reused


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
    return _CMDLINE_MARKS.get(rec.kind, rec.kind) in cmd and str(rec.port) in cmd


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
    sig, grace = _STOP.get(rec.kind, (signal.SIGTERM, 5.0))
    log(f"stopping embedded {rec.kind} (pid {rec.pid}, port {rec.port})")
    terminate(rec.pid, sig, grace=grace, proc=proc)
    cleanup = _AFTER_STOP.get(rec.kind)
    if cleanup is not None:
        with contextlib.suppress(OSError):
            cleanup(rec)


def stop_state_dir(state_dir: Path) -> list[str]:
    """Stop the embedded servers recorded in ``state_dir`` (by any process), the newest first
    (MLflow before the PostgreSQL and S3 it uses)."""
    stopped = []
    for kind, rec in sorted(load_state(state_dir).items(), key=lambda item: -item[1].started_at):
        if looks_like(rec):
            stop_record(rec)
            stopped.append(f"{kind} pid {rec.pid} port {rec.port}")
        forget(state_dir, kind)
    for kind in KINDS:  # stray pid files without a state entry
        with contextlib.suppress(FileNotFoundError):
            (Path(state_dir) / f"{kind}.pid").unlink()
    return stopped


def reuse(state_dir: Path, kind: str, answers: Callable[[str], bool], config: Optional[str] = None) -> Optional[str]:
    """The URL of the recorded ``kind`` server if it still ``answers`` (and, when ``config`` is
    given, was started with that config); else forget (and stop) it."""
    rec = load_state(state_dir).get(kind)
    if rec is None:
        return None
    if config is not None and rec.config != config:
        if looks_like(rec):
            log(f"embedded {kind} in {state_dir} (pid {rec.pid}) was started with another configuration; "
                "replacing it")
            stop_record(rec)
        forget(state_dir, kind)
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

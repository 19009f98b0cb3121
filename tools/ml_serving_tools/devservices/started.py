"""The embedded servers this process started: stopped by ``stop_all`` (also at exit)
unless ``detach`` hands them over to whoever reads the state directory next.

Private servers (``track``: e.g. an MLflow a test kills and restarts) are not recorded in the
state directory and never handed over: ``stop_all`` and the exit stop them even when detached."""

from __future__ import annotations

import atexit
import subprocess
import threading
from pathlib import Path
from typing import Optional, Protocol

from .state import Embedded, forget, record, stop_record


class Stoppable(Protocol):
    def stop(self) -> None: ...


class _Started:
    def __init__(self) -> None:
        self.items: list[tuple[Path, Embedded, Optional[subprocess.Popen]]] = []
        self.private: list[Stoppable] = []
        self.detached = False
        self.lock = threading.Lock()


_STARTED = _Started()


def remember(state_dir: Path, rec: Embedded, proc: Optional[subprocess.Popen]) -> None:
    """Record a server we just started, in the state dir and for ``stop_all``."""
    with _STARTED.lock:
        _STARTED.items.append((Path(state_dir), rec, proc))
    record(state_dir, rec)


def track(server: Stoppable) -> None:
    """Stop ``server`` (a private server, not in any state dir) in ``stop_all`` and at exit."""
    with _STARTED.lock:
        if not any(s is server for s in _STARTED.private):
            _STARTED.private.append(server)


def untrack(server: Stoppable) -> None:
    with _STARTED.lock:
        _STARTED.private = [s for s in _STARTED.private if s is not server]


def detach() -> None:
    """Keep the servers started so far running after this process exits."""
    _STARTED.detached = True


def _stop_private() -> None:
    with _STARTED.lock:
        private, _STARTED.private = _STARTED.private, []
    for server in reversed(private):
        server.stop()


def stop_all() -> None:
    """Stop every embedded server that this process started (and forget them)."""
    _stop_private()  # they may use the others (a private MLflow uses PostgreSQL and S3)
    with _STARTED.lock:
        items, _STARTED.items = _STARTED.items, []
    for state_dir, rec, proc in reversed(items):
        stop_record(rec, proc)
        forget(state_dir, rec.kind)


def _stop_at_exit() -> None:
    if _STARTED.detached:
        _stop_private()
    else:
        stop_all()


atexit.register(_stop_at_exit)

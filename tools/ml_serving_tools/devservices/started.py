"""The embedded servers this process started: stopped by ``stop_all`` (also at exit)
unless ``detach`` hands them over to whoever reads the state directory next."""

from __future__ import annotations

import atexit
import subprocess
import threading
from pathlib import Path
from typing import Optional

from .state import Embedded, forget, record, stop_record


class _Started:
    def __init__(self) -> None:
        self.items: list[tuple[Path, Embedded, Optional[subprocess.Popen]]] = []
        self.detached = False
        self.lock = threading.Lock()


_STARTED = _Started()


def remember(state_dir: Path, rec: Embedded, proc: Optional[subprocess.Popen]) -> None:
    """Record a server we just started, in the state dir and for ``stop_all``."""
    with _STARTED.lock:
        _STARTED.items.append((Path(state_dir), rec, proc))
    record(state_dir, rec)


def detach() -> None:
    """Keep the servers started so far running after this process exits."""
    _STARTED.detached = True


def stop_all() -> None:
    """Stop every embedded server that this process started (and forget them)."""
    with _STARTED.lock:
        items, _STARTED.items = _STARTED.items, []
    for state_dir, rec, proc in reversed(items):
        stop_record(rec, proc)
        forget(state_dir, rec.kind)


def _stop_at_exit() -> None:
    if not _STARTED.detached:
        stop_all()


atexit.register(_stop_at_exit)

"""Label values of the domain metrics, bounded: a label taken from a user-defined name (a model,
an experiment, a bandit, an arm, a feature view) admits its first `MAX_VALUES_PER_LABEL`
distinct values per metric, and maps every later one to "other", so a caller creating names
in a loop cannot grow Prometheus' series without end. Values are also cut to the longest name
the mesh accepts (`MAX_VALUE_CHARS`: model names), a safety net for names checked elsewhere.

Admission is per process and first come, first served: a replica restarted later may admit
another set; "other" then says how much traffic falls outside the admitted names.
"""

from __future__ import annotations

import threading

MAX_VALUES_PER_LABEL = 200
MAX_VALUE_CHARS = 256  # the mesh's longest name (a registry model name); bandit and arm names are shorter
OTHER = "other"


class LabelBounds:
    """Remembers, per (metric, label), the values admitted so far."""

    def __init__(self, max_values: int = MAX_VALUES_PER_LABEL, max_chars: int = MAX_VALUE_CHARS):
        self.max_values, self.max_chars = max_values, max_chars
        self._admitted: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()  # collectors run on the metrics endpoint's thread

    def __call__(self, metric: str, label: str, value: str) -> str:
        value = value[:self.max_chars]
        admitted = self._admitted.get((metric, label))
        if admitted is not None and value in admitted:  # the common case: no lock
            return value
        with self._lock:
            admitted = self._admitted.setdefault((metric, label), set())
            if value in admitted:
                return value
            if len(admitted) >= self.max_values:
                return OTHER
            admitted.add(value)
            return value


BOUNDS = LabelBounds()
"""The process-wide bounds every service's metrics share."""


def bounded(metric: str, label: str, value: str) -> str:
    """`value` if admitted for that metric's label (it is, while fewer than the limit are), else "other"."""
    return BOUNDS(metric, label, value)

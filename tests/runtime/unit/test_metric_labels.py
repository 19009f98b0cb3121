"""The bound on label values taken from user-defined names: the first N distinct values of a
metric's label pass, later ones become "other", values are cut to the mesh's longest name."""

from __future__ import annotations

import threading

from ml_serving_server.runtime import metric_labels
from ml_serving_server.runtime.metric_labels import OTHER, LabelBounds


def test_the_first_values_pass_and_later_ones_are_other():
    bounds = LabelBounds(max_values=3)
    assert [bounds("m", "model", v) for v in ("a", "b", "a", "c", "d", "e")] == ["a", "b", "a", "c", OTHER, OTHER]
    assert bounds("m", "model", "b") == "b"  # admitted values stay admitted


def test_each_metric_and_label_has_its_own_allowance():
    bounds = LabelBounds(max_values=1)
    assert bounds("m1", "model", "a") == "a"
    assert bounds("m1", "model", "b") == OTHER
    assert bounds("m1", "version", "b") == "b"
    assert bounds("m2", "model", "b") == "b"


def test_values_are_cut_to_the_longest_name():
    bounds = LabelBounds(max_values=10, max_chars=5)
    assert bounds("m", "view", "abcdefgh") == "abcde"
    assert bounds("m", "view", "abcdeXYZ") == "abcde"  # the same cut value: one series, not two


def test_the_shared_bounds_are_the_documented_ones():
    assert metric_labels.BOUNDS.max_values == metric_labels.MAX_VALUES_PER_LABEL == 200
    assert metric_labels.bounded("test_metric_labels_total", "x", "y" * 1000) == "y" * metric_labels.MAX_VALUE_CHARS


def test_concurrent_callers_admit_no_more_than_the_limit():
    bounds = LabelBounds(max_values=50)
    seen: list[str] = []
    lock = threading.Lock()

    def admit(start: int) -> None:
        got = [bounds("m", "arm", f"arm-{i}") for i in range(start, start + 100)]
        with lock:
            seen.extend(got)

    threads = [threading.Thread(target=admit, args=(n * 25,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen) - {OTHER}) == 50

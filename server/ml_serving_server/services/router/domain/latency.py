"""Latency histograms with log-spaced buckets: plain Python, no I/O.

A latency is counted in one bucket; quantiles are read back from the bucket counts alone,
so a histogram is a few hundred integers however many calls it holds, and histograms of
any number of replicas simply add up.

The scheme (a **stored format**: histograms written under one scheme cannot be read under
another, so changing any constant here breaks every stored histogram):

* buckets grow by ``GROWTH = 1.02``; bucket ``i`` holds ``[MIN_MS * 1.02**i, MIN_MS * 1.02**(i+1))``
  with ``MIN_MS = 0.01`` ms, i.e. ``bucket_of(x) = floor(ln(x / 0.01) / ln(1.02))``;
* clamped at both ends: anything below ``MIN_MS * 1.02`` (including 0, negative values and
  NaN) is bucket 0, and anything from ``MAX_MS = 600_000`` ms (10 minutes) up, infinity
  included, is ``LAST_BUCKET = 904`` (the bucket that holds 10 minutes);
* a bucket's representative latency is its geometric middle, ``MIN_MS * 1.02**(i + 0.5)``
  (capped at ``MAX_MS``), within about 1% of any latency the bucket holds: quantiles have
  about 2% relative resolution between 0.01 ms and 10 minutes.
"""

from __future__ import annotations

import math
from typing import Mapping

__all__ = ["GROWTH", "LAST_BUCKET", "MAX_MS", "MIN_MS", "bucket_of", "quantile", "representative"]

MIN_MS = 0.01
MAX_MS = 600_000.0
GROWTH = 1.02
_LOG_GROWTH = math.log(GROWTH)
LAST_BUCKET = math.floor(math.log(MAX_MS / MIN_MS) / _LOG_GROWTH)  # 904


def bucket_of(latency_ms: float) -> int:
    """The bucket a latency is counted in (see the module docstring)."""
    if not latency_ms >= MIN_MS:  # also NaN
        return 0
    if latency_ms >= MAX_MS:
        return LAST_BUCKET
    return min(LAST_BUCKET, max(0, math.floor(math.log(latency_ms / MIN_MS) / _LOG_GROWTH)))


def representative(bucket: int) -> float:
    """The latency a bucket stands for: its geometric middle."""
    bucket = min(max(bucket, 0), LAST_BUCKET)
    return min(MIN_MS * GROWTH ** (bucket + 0.5), MAX_MS)


def quantile(histogram: Mapping[int, int], q: float) -> float:
    """The representative latency of the bucket holding the q-th sample (the ceil(q * total)-th
    smallest, at least the first); 0.0 for an empty histogram. Non-positive counts are ignored."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q!r}")
    counts = sorted((bucket, count) for bucket, count in histogram.items() if count > 0)
    total = sum(count for _, count in counts)
    if total == 0:
        return 0.0
    # Rounded first, so that 0.99 * 100 (99.00000000000001) is the 99th sample, not the 100th.
    rank = max(1, math.ceil(round(q * total, 9)))
    seen = 0
    for bucket, count in counts:
        seen += count
        if seen >= rank:
            return representative(bucket)
    return representative(counts[-1][0])  # not reached: rank <= total

"""The metric names a PromQL expression reads, without a PromQL parser: strip what cannot be a
metric name (strings, label matchers, ranges, grouping clauses, numbers), then drop functions
and keywords. Enough for the expressions of our rules and dashboard; a test checks it on them."""

from __future__ import annotations

import re

FUNCTIONS_AND_KEYWORDS = {
    "sum", "min", "max", "avg", "count", "group", "topk", "bottomk", "quantile", "stddev", "stdvar",
    "rate", "irate", "increase", "delta", "deriv", "changes", "resets", "histogram_quantile", "label_replace",
    "label_join", "vector", "scalar", "absent", "absent_over_time", "abs", "clamp_min", "clamp_max", "time",
    "max_over_time", "min_over_time", "avg_over_time", "sum_over_time", "count_over_time", "last_over_time",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "offset", "bool",
}
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_OFFSETS = re.compile(r"\boffset\s+\w+")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)")


def metric_names(expr: str) -> set[str]:
    for pattern in (_STRINGS, _MATCHERS, _RANGES, _GROUPING, _OFFSETS):
        expr = pattern.sub(" ", expr)
    names = set(_IDENTIFIER.findall(expr)) - FUNCTIONS_AND_KEYWORDS
    return {name for name in names if not re.fullmatch(r"\d+[smhdwy]?|e\d*|Inf|NaN", name)}

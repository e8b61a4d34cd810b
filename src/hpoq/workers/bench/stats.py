"""Latency statistics without numpy (the cheap runner must stay light)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from hpoq.workers.bench.result import LatencySummary


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not sorted_values:
        raise ValueError("no values")
    position = (len(sorted_values) - 1) * q / 100.0
    lower = math.floor(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    low, high = sorted_values[lower], sorted_values[upper]
    # Clamped so that rounding never breaks p50 <= p95 <= p99 when neighbours are equal.
    return min(max(low + (high - low) * (position - lower), low), high)


def summarise(latencies_ms: Sequence[float]) -> LatencySummary:
    ordered = sorted(latencies_ms)
    return LatencySummary(
        p50=percentile(ordered, 50),
        p95=percentile(ordered, 95),
        p99=percentile(ordered, 99),
        mean=sum(ordered) / len(ordered),
        min=ordered[0],
        max=ordered[-1],
    )

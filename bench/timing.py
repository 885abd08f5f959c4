"""What the benchmarks share: latency percentiles, defined once so every table reports the same p95."""
from __future__ import annotations

import statistics


def percentiles(values_ms: list[float], digits: int | None = None) -> dict:
    """n, p50 (median), p95 (nearest rank) and max of latencies in milliseconds; rounded to ``digits``."""
    values = sorted(values_ms)
    if not values:
        return {"n": 0}
    figures = {"p50_ms": statistics.median(values), "p95_ms": values[min(len(values) - 1, int(0.95 * len(values)))],
               "max_ms": values[-1]}
    if digits is not None:
        figures = {key: round(value, digits) for key, value in figures.items()}
    return {"n": len(values), **figures}

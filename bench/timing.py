"""What the benchmarks share: latency percentiles, defined once so every table reports the same p95."""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path


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


def cpu_seconds(pid: int | None = None) -> float | None:
    """CPU time (user + system, all threads) used so far by process ``pid``, or by this process when None.

    Read from /proc on Linux; None where that cannot be read. The load benchmark takes the difference
    over its run to show where the machine's cores went: the server, or its own client threads.
    """
    if pid is None:
        times = os.times()
        return times.user + times.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def wait_until_idle(pid: int | None, quiet_fraction: float = 0.2, timeout_s: float = 30.0) -> float:
    """Wait until process ``pid`` uses less than ``quiet_fraction`` of a core over a second (at most
    ``timeout_s``); return the seconds waited. Where its CPU time cannot be read, wait 5 s instead.

    A server that has just answered may still be busy starting up (the app imports its CAM library in a
    background thread); calls timed meanwhile measure that work, not the call.
    """
    start = time.perf_counter()
    if pid is None or cpu_seconds(pid) is None:
        time.sleep(5.0)
        return time.perf_counter() - start
    while time.perf_counter() - start < timeout_s:
        before = cpu_seconds(pid)
        time.sleep(1.0)
        after = cpu_seconds(pid)
        if before is None or after is None or after - before < quiet_fraction:
            break
    return time.perf_counter() - start

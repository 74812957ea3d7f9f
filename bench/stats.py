"""Pure statistics for the benchmarks: percentiles and latency summaries (no I/O)."""
from __future__ import annotations

import math
from typing import Iterable, Sequence


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0..100) by linear interpolation between closest ranks.

    >>> percentile([1, 2, 3, 4], 50)
    2.5
    >>> percentile([5], 99.9)
    5.0
    >>> percentile([], 50) is None
    True
    """
    if not values:
        return None
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    data = sorted(values)
    if len(data) == 1:
        return float(data[0])
    rank = (len(data) - 1) * p / 100.0
    lo = math.floor(rank)
    hi = math.ceil(rank)
    if lo == hi:
        return float(data[lo])
    return data[lo] + (data[hi] - data[lo]) * (rank - lo)


def summarize_ms(latencies_s: Iterable[float]) -> dict:
    """p50/p99/p99.9/max/mean in milliseconds of latencies given in seconds, plus the count."""
    data = sorted(latencies_s)
    if not data:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None, "mean_ms": None}
    ms = [x * 1000.0 for x in data]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "p999_ms": round(percentile(ms, 99.9), 3),
        "max_ms": round(ms[-1], 3),
        "mean_ms": round(sum(ms) / len(ms), 3),
    }


def join_latencies(sent: dict, received: dict) -> tuple[list[float], int]:
    """Latencies (received - sent) of the keys both sides saw, and how many sent keys were never received."""
    lat = [received[k] - t for k, t in sent.items() if k in received]
    return lat, sum(1 for k in sent if k not in received)


def loss_pct(before: float, after: float) -> float | None:
    """Percentage lost going from `before` to `after` (negative = a gain)."""
    if not before:
        return None
    return round((before - after) / before * 100.0, 2)


def highest_passing(steps: Sequence[dict], key: str, limit: float) -> dict | None:
    """The step with the highest achieved rate whose `key` is below `limit` (ramp result)."""
    ok = [s for s in steps if s.get(key) is not None and s[key] < limit and not s.get("lost")]
    return max(ok, key=lambda s: s.get("achieved_rate", 0), default=None)

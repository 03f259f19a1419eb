"""The benchmarks' arithmetic and how a figure is shown: medians, percentiles, rates, and a
number (or its absence) in a table cell."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def median(values: Sequence[float | None]) -> float | None:
    """The median of runs' figures; None when any run lacks the figure, since a median over
    the runs that happened to finish would flatter the rest."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known and len(known) == len(values) else None


def fmt(value: float | None, digits: int = 2, suffix: str = "", *, grouped: bool = False) -> str:
    """A figure with ``digits`` decimals (thousands grouped with commas if ``grouped``); a
    dash for one not measured."""
    if value is None:
        return "—"
    return f"{value:{',' if grouped else ''}.{digits}f}{suffix}"


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    """p50, p90, p99, max and mean of latencies in seconds, as milliseconds."""
    if not values:
        return {"p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    ms = sorted(v * 1000 for v in values)
    # quantiles() needs two points; one request is its own every percentile.
    q = ms * 99 if len(ms) == 1 else statistics.quantiles(ms, n=100, method="inclusive")
    return {"p50": q[49], "p90": q[89], "p99": q[98], "max": ms[-1], "mean": statistics.fmean(ms)}


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of sorted values by the nearest-rank method: always a value that
    occurred (the moment a given share of terminals was back), never an interpolation."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def per_second(events: int, window_s: float | None) -> float | None:
    """Events per second over the window from the first to the last: n − 1 intervals."""
    if window_s is None or window_s <= 0 or events < 2:
        return None
    return (events - 1) / window_s

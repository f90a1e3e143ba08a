"""Brute-force reference of the documented window semantics, in plain Python.

Written from the README's definitions, not from the product's code: lateness by a
watermark per partition over the record sequence, windows (ceil(t/B)*B - W, t], lifetime
(-inf, t], filters, and every aggregation function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    seq: int  # position in its partition (the offset)
    ts: int  # event time, epoch ms
    key: Any
    values: dict[str, Any]


@dataclass(frozen=True)
class Agg:
    name: str
    column: str
    function: str
    window_ms: int | None  # None: lifetime
    tile_ms: int
    where: str | None = None
    k: int | None = None


def late_flags(events: list[Event], lateness_ms: int | None) -> list[bool]:
    """An event is late when it is more than the lateness behind the newest event before it."""
    newest: int | None = None
    flags = []
    for e in events:
        flags.append(lateness_ms is not None and newest is not None and e.ts < newest - lateness_ms)
        newest = e.ts if newest is None else max(newest, e.ts)
    return flags


def aggregate(events: list[Event], key: Any, t: int, agg: Agg) -> Any:
    """The value of one aggregation for one entity at instant t over the given events."""
    if agg.window_ms is None:
        lo = -math.inf
    else:
        lo = -(-t // agg.tile_ms) * agg.tile_ms - agg.window_ms
    chosen = [
        e for e in events
        if e.key == key and lo < e.ts <= t and e.values[agg.column] is not None
        and (agg.where is None or e.values[agg.where] is True)
    ]
    chosen.sort(key=lambda e: (e.ts, e.seq))
    vals = [e.values[agg.column] for e in chosen]
    f = agg.function
    if f == "count":
        return len(vals)
    if f == "count_distinct":
        return len(set(vals))
    if f == "sum":
        return math.fsum(vals) if any(isinstance(v, float) for v in vals) else sum(vals)
    if not vals:
        return None
    if f == "mean":
        return math.fsum(vals) / len(vals)
    if f in ("variance", "stddev"):
        mean = math.fsum(vals) / len(vals)
        var = math.fsum((v - mean) ** 2 for v in vals) / len(vals)
        return var if f == "variance" else math.sqrt(var)
    if f == "min":
        return min(vals)
    if f == "max":
        return max(vals)
    if f == "first":
        return vals[0]
    if f == "last":
        return vals[-1]
    if f == "last_n":
        return list(reversed(vals))[: agg.k]
    raise ValueError(f)


def close(a: Any, b: Any, rel: float = 1e-9, abs_tol: float = 1e-9) -> bool:
    """Equal, numbers within a tolerance (float sums depend on the order of additions)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, rel, abs_tol) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)
    return bool(a == b)

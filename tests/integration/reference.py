"""Plain-Python reference for feature values: written from the documented semantics, not
from the product's code, so the product is checked against an independent computation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Ev:
    ts: int  # epoch ms
    key: Any
    values: dict[str, Any]


def window_lower_bound(t: int, window: int, tile: int) -> int:
    """Documented: the window read at t covers events with ceil(t/B)*B - W < ts <= t."""
    ceil_t = -(-t // tile) * tile
    return ceil_t - window


def expected(events: list[Ev], key: Any, t: int, ttl: int | None, spec: dict[str, tuple]) -> dict[str, Any]:
    """spec: feature -> ("row", column) or ("agg", column, function, window_ms, tile_ms)."""
    mine = [e for e in events if e.key == key and e.ts <= t]
    if not mine:
        return {f: None for f in spec}
    newest = max(mine, key=lambda e: e.ts)
    if ttl is not None and t - newest.ts > ttl:
        return {f: None for f in spec}
    out: dict[str, Any] = {}
    for name, s in spec.items():
        if s[0] == "row":
            out[name] = newest.values[s[1]]
            continue
        _, col, fn, window, tile = s
        lo = window_lower_bound(t, window, tile)
        inwin = sorted((e for e in mine if e.ts > lo), key=lambda e: e.ts)
        vals = [e.values[col] for e in inwin if e.values[col] is not None]
        if fn == "count":
            out[name] = len(vals)
        elif fn == "sum":
            out[name] = sum(vals) if vals else 0
        elif fn == "mean":
            out[name] = sum(vals) / len(vals) if vals else None
        elif fn == "min":
            out[name] = min(vals) if vals else None
        elif fn == "max":
            out[name] = max(vals) if vals else None
        elif fn == "last":
            out[name] = vals[-1] if vals else None
    return out

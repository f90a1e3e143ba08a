"""Which tile sets a view keeps in Redis, derived from its plan (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from featurestore.plan import ViewPlan
from featurestore.plan.windows import STATS_FOR_FUNCTION


@dataclass(frozen=True)
class TileSet:
    """Tiles of one input column at one tile size, with the statistics its aggregations need."""

    column: str
    tile_ms: int
    stats: tuple[str, ...]
    max_window_ms: int


def tile_sets(view: ViewPlan) -> list[TileSet]:
    """Tile sets of a view: aggregations of the same column and tile size share one."""
    stats: dict[tuple[str, int], set[str]] = {}
    longest: dict[tuple[str, int], int] = {}
    for agg in view.aggregations:
        key = (agg.column, agg.tile_ms)
        stats.setdefault(key, set()).update(STATS_FOR_FUNCTION[agg.function])
        longest[key] = max(longest.get(key, 0), agg.window_ms)
    order = "csmMl"
    return [
        TileSet(col, tile, tuple(sorted(s, key=order.index)), longest[(col, tile)])
        for (col, tile), s in sorted(stats.items())
    ]


def fields_per_entity(view: ViewPlan, skew_ms: int) -> int:
    """Upper bound of the live hash fields of one entity (meta + rows + tiles in window)."""
    total = 3 + len(view.row_features)
    for ts in tile_sets(view):
        tiles = ts.max_window_ms // ts.tile_ms + 1 + -(-skew_ms // ts.tile_ms)
        total += tiles * sum(2 if s == "l" else 1 for s in ts.stats)
    return total

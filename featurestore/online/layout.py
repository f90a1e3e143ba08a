"""Which tile sets a view keeps in Redis, derived from its plan (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from featurestore.aggregations import stats_of
from featurestore.online.keys import tile_prefix
from featurestore.online.packed import packed_stats
from featurestore.plan import ViewPlan
from featurestore.plan.windows import LIFETIME_TILE_MS

#: Unfolded one-day tiles a lifetime tile set keeps beyond its lateness/skew slack.
LIFETIME_EXTRA_TILES = 2


@dataclass(frozen=True)
class TileSet:
    """Tiles of one input column (and filter) at one tile size, with the statistics its
    aggregations need. `max_window_ms` None: a lifetime set (old tiles folded, not dropped)."""

    key: str
    column: str
    where: str | None
    tile_ms: int
    stats: tuple[str, ...]
    max_window_ms: int | None
    last_n: int = 0

    @property
    def lifetime(self) -> bool:
        return self.max_window_ms is None

    @cached_property
    def prefix(self) -> str:
        return tile_prefix(self.key, self.tile_ms, self.lifetime)

    @cached_property
    def packed(self) -> str:
        """Its statistics kept packed (one field for all tiles), in column order."""
        return packed_stats(self.stats)

    @cached_property
    def per_tile_fields(self) -> tuple[str, ...]:
        """Its statistics kept as one hash field per tile."""
        return tuple(s for s in self.stats if s not in self.packed)

    def live_tiles(self, slack_ms: int) -> int:
        """Upper bound of the tiles that a read can still reach (from the entity's newest
        event, with `slack_ms` of lateness and future skew)."""
        if self.max_window_ms is None:  # base + [tile(newest - slack) - 1 - extra, tile(newest)]
            return 1 + -(-slack_ms // LIFETIME_TILE_MS) + LIFETIME_EXTRA_TILES + 2
        return self.max_window_ms // self.tile_ms + 1 + -(-slack_ms // self.tile_ms)


def tile_sets(view: ViewPlan) -> list[TileSet]:
    """Tile sets of a view: aggregations of the same column, filter and tile size share one
    (lifetime aggregations get their own set even when a window uses one-day tiles)."""
    functions: dict[tuple[str, int, bool], list[str]] = {}
    longest: dict[tuple[str, int, bool], int] = {}
    ks: dict[tuple[str, int, bool], int] = {}
    cols: dict[str, tuple[str, str | None]] = {}
    for agg in view.aggregations:
        life = agg.window_ms is None
        key = (agg.tiles_key, agg.tile_ms, life)
        cols[agg.tiles_key] = (agg.column, agg.where)
        functions.setdefault(key, []).append(agg.function)
        longest[key] = max(longest.get(key, 0), agg.window_ms or 0)
        if agg.k:
            ks[key] = max(ks.get(key, 0), agg.k)
    return [
        TileSet(name, cols[name][0], cols[name][1], tile, stats_of(fs),
                None if life else longest[(name, tile, life)], ks.get((name, tile, life), 0))
        for (name, tile, life), fs in sorted(functions.items())
    ]

"""Window and tile arithmetic shared by the stream runtime, the online reader and DuckDB.

Time is integer milliseconds since the epoch (UTC). A tile of size B holds the events
whose event time `ts` lies in `(k*B, (k+1)*B]`, k = ceil(ts / B) - 1. A window W read at
time t merges the W/B tiles ending with the tile that contains t, so it covers event
times in `(ceil(t / B) * B - W, t]`: the window's upper edge is exact, its lower edge is
rounded up to a tile boundary (at most B of the oldest part of the window is left
out; when t falls on a tile boundary the window is exactly (t - W, t]).
"""

from __future__ import annotations

import datetime as dt

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
SECOND_MS = 1000
#: Tile sizes a window may use, smallest first.
NICE_TILE_MS: tuple[int, ...] = tuple(
    s * SECOND_MS
    for s in (1, 5, 10, 15, 30, 60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400)
)
#: A window is split into at least this many tiles when a nice tile size allows it.
MIN_TILES_PER_WINDOW = 48
#: Lifetime aggregations keep one-day tiles for recent days and fold older ones into a base.
LIFETIME_TILE_MS = 86_400_000
#: Index of the base tile of a lifetime aggregation (below every real tile index).
LIFETIME_BASE_INDEX = -(2**40)


def choose_tile_ms(window_ms: int) -> int:
    """The largest nice tile size dividing the window into at least 48 tiles.

    1h -> 1 min (60 tiles), 1d -> 30 min (48), 7d -> 3 h (56), 30d -> 12 h (60);
    windows too short for 48 one-second tiles use 1-second tiles.
    """
    best = SECOND_MS
    for size in NICE_TILE_MS:
        if window_ms % size == 0 and window_ms // size >= MIN_TILES_PER_WINDOW:
            best = size
    return best


def tile_index(ts_ms: int, tile_ms: int) -> int:
    """Index k of the tile `(k*B, (k+1)*B]` holding event time `ts_ms`."""
    return -((-ts_ms) // tile_ms) - 1


def effective_window_start(t_ms: int, window_ms: int, tile_ms: int) -> int:
    """Exclusive lower bound of the window read at `t_ms`: events with ts > this count."""
    return (tile_index(t_ms, tile_ms) + 1) * tile_ms - window_ms


def window_tiles(t_ms: int, window_ms: int, tile_ms: int) -> range:
    """Indices of the tiles merged for a read of this window at `t_ms`."""
    last = tile_index(t_ms, tile_ms)
    return range(last - window_ms // tile_ms + 1, last + 1)


def to_epoch_ms(value: dt.datetime) -> int:
    """An instant in integer ms since the epoch (floor), naive datetimes taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return (value - EPOCH) // dt.timedelta(milliseconds=1)

"""Tile arithmetic: the documented window edges hold for any instant."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from featurestore.plan.windows import choose_tile_ms, effective_window_start, tile_index, window_tiles

MIN = 60_000
windows = st.sampled_from([1_000, 7_000, 60_000, 10 * MIN, 3_600_000, 86_400_000, 7 * 86_400_000, 90 * 86_400_000])
instants = st.integers(min_value=0, max_value=4_000_000_000_000)


def test_documented_tile_sizes() -> None:
    assert choose_tile_ms(3_600_000) == MIN
    assert choose_tile_ms(86_400_000) == 30 * MIN
    assert choose_tile_ms(7 * 86_400_000) == 3 * 3_600_000
    assert choose_tile_ms(30 * 86_400_000) == 12 * 3_600_000
    assert choose_tile_ms(10 * MIN) == 10_000
    assert choose_tile_ms(7_000) == 1_000


@given(windows)
def test_tiles_divide_the_window(window: int) -> None:
    tile = choose_tile_ms(window)
    assert window % tile == 0
    assert window // tile >= 48 or tile == 1_000


@given(instants, st.sampled_from([1_000, 60_000, 1_800_000]))
def test_tiles_are_left_open_right_closed(ts: int, tile: int) -> None:
    k = tile_index(ts, tile)
    assert k * tile < ts <= (k + 1) * tile


@given(instants, windows)
def test_window_covers_at_most_w_and_at_least_w_minus_b(t: int, window: int) -> None:
    tile = choose_tile_ms(window)
    lo = effective_window_start(t, window, tile)
    assert t - window <= lo < t - window + tile
    if t % tile == 0:
        assert lo == t - window  # exact on tile boundaries
    tiles = window_tiles(t, window, tile)
    assert len(tiles) == window // tile
    # the merged tiles hold exactly the event times in (lo, ceil(t/B)*B]
    assert tiles[0] * tile == lo
    assert tiles[-1] == tile_index(t, tile)


@given(instants, windows, st.integers(min_value=-200_000_000, max_value=200_000_000))
def test_event_in_window_iff_its_tile_is_merged(t: int, window: int, delta: int) -> None:
    tile = choose_tile_ms(window)
    ts = t - delta
    in_window = effective_window_start(t, window, tile) < ts <= t
    in_tiles = tile_index(ts, tile) in window_tiles(t, window, tile) and ts <= t
    assert in_window == in_tiles

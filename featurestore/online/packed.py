"""Packed numeric tile statistics: one float64 row per tile (pure layout and decoding).

A tile set's numeric statistics (c count, s sum, q sum of squares, m min, M max) live in
one hash field as little-endian float64 rows `[index, stat columns...]`, sorted by tile
index: a read fetches one value per tile set and decodes every entity's rows at once.
Sums and sums of squares take two columns, the first two terms (hi, lo) of the canonical
expansion of their exact value; the rare further terms go to the overflow field, one line
`index stat x3 x4 ...` each. A tile's count is exact up to 2^53, as are int min/max.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

#: Statistics kept packed, in column order.
NUMERIC_STATS = "csqmM"
_WIDTH = {"c": 1, "s": 2, "q": 2, "m": 1, "M": 1}


def packed_stats(stats: Collection[str]) -> str:
    """The packed statistics among `stats`, in column order ("" when none)."""
    return "".join(s for s in NUMERIC_STATS if s in stats)


def columns(stats: str) -> dict[str, int]:
    """Column of each packed statistic in a row (column 0 is the tile index)."""
    out, col = {}, 1
    for s in stats:
        out[s] = col
        col += _WIDTH[s]
    return out


def row_width(stats: str) -> int:
    """Float64 values per row: the index and the statistics' columns."""
    return 1 + sum(_WIDTH[s] for s in stats)


def decode_rows(blob: bytes | None, stats: str) -> np.ndarray:
    """The rows of a packed field as an (n, width) float64 array."""
    return np.frombuffer(blob or b"", dtype="<f8").reshape(-1, row_width(stats))


def parse_overflow(raw: bytes | None) -> dict[tuple[int, str], list[float]]:
    """The further terms of exact sums: (tile index, stat) -> [x3, x4, ...]."""
    out: dict[tuple[int, str], list[float]] = {}
    for line in (raw or b"").decode().splitlines():
        idx, stat, *terms = line.split()
        out[(int(float(idx)), stat)] = [float(t) for t in terms]
    return out

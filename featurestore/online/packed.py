"""Packed numeric tile statistics: float64 rows per tile (pure layout and decoding).

A tile set's numeric statistics (c count, s sum, q sum of squares, m min, M max) live in
one hash field as little-endian float64 rows `[index, stat columns...]`: a read fetches one
value per tile set and decodes every entity's rows at once. A tile's statistics are the sum
of its rows (the writer appends rows; compacted, a field has one row per tile, sorted).
Sums and sums of squares take two columns, the first two terms (hi, lo) of the canonical
expansion of their exact value; the rare further terms go to the overflow field, one line
`index stat x3 x4 ...` each. A tile's count is exact up to 2^53, as are int min/max.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

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


def tile_stats(blob: bytes | None, overflow: bytes | None, stats: str) -> dict[int, dict[str, Any]]:
    """Each tile's statistics, its rows combined (as a compaction leaves them): c an int,
    s / q the canonical expansion of the exact sum (a tuple of terms), m / M a float."""
    out: dict[int, dict[str, Any]] = {}
    cols = columns(stats)
    for row in decode_rows(blob, stats).tolist():
        tile = out.setdefault(int(row[0]), {})
        for stat, col in cols.items():
            x = row[col]
            if stat == "c":
                tile["c"] = tile.get("c", 0) + int(x)
            elif stat in "sq":
                tile.setdefault(stat, []).extend(t for t in row[col : col + 2] if t)
            else:
                tile[stat] = x if stat not in tile else (min if stat == "m" else max)(tile[stat], x)
    for (idx, stat), terms in parse_overflow(overflow).items():
        out.setdefault(idx, {}).setdefault(stat, []).extend(terms)
    for tile in out.values():
        for stat in "sq":
            if stat in tile:
                tile[stat] = tuple(canonical_expansion(tile[stat]))
    return out


def canonical_expansion(xs: list[float]) -> list[float]:
    """The exact sum of the finite values `xs` as e1 = its correctly rounded value, e2 = the
    rounded remainder, ... (empty when it is zero; [±inf] when it overflows). `xs` is extended."""
    terms: list[float] = []
    try:
        e = math.fsum(xs)
    except OverflowError:
        return [sum(xs)]
    while e != 0.0 and len(terms) < 64:
        terms.append(e)
        xs.append(-e)
        e = math.fsum(xs)
    return terms

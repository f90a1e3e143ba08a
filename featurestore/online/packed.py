"""Packed numeric tile statistics: float64 rows per tile (pure layout and decoding).

A tile set's numeric statistics (c count, s sum, q sum of squares, m min, M max) are kept as
little-endian float64 rows `[index, stat columns...]`, one per tile, sorted by index (in an
entity's state, `featurestore.online.state`): a read decodes every entity's rows at once and
merges those of the entity's partitions by summing rows per tile. Sums and sums of squares
take two columns, the first two terms (hi, lo) of the canonical expansion of their exact
value; the rare further terms are listed apart in the state. A tile's count is exact up to
2^53, as are int min/max.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import numpy as np

from featurestore.aggregations import PACKED_STATS

_WIDTH = {"c": 1, "s": 2, "q": 2, "m": 1, "M": 1}


def packed_stats(stats: Collection[str]) -> str:
    """The packed statistics among `stats`, in column order ("" when none)."""
    return "".join(s for s in PACKED_STATS if s in stats)


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

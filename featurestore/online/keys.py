"""Redis key and hash-field layout of the online store.

One hash per (project, view, entity): `fs:{project}:{view}:{key}`, where `key` is the join
key value (several keys joined with `|`). Fields:

- `_v`: the storage layout version the hash was written in (`LAYOUT_VERSION`);
- `_ts`, `_p`, `_o`: event time (ms), partition and offset of the newest event applied;
- `r:{feature}`: the latest value of a row-level feature (JSON);
- `{column}|{tile_ms}|P`: the numeric tile statistics of a tile set, packed (see
  `featurestore.online.packed`): little-endian float64 rows, each a tile index, then per
  statistic c (count), s (exact sum: hi, lo), q (exact sum of squares: hi, lo), m (min), M
  (max), those of the set in that order. A tile's statistics are the sum of its rows: the
  writer appends a row per tile and batch, and compacts the field (one row per tile, sorted
  by index) once it holds more rows than its bound;
- `{column}|{tile_ms}|X`: the rare third and further terms of exact sums, one line
  `index stat x3 x4 ...` per tile and statistic (absent when no sum needs them);
- `{column}|{tile_ms}|{index}|{stat}`: the other tile statistics, stat one of f / l (first
  / last value, JSON) with fo / lo (the order of that value: "ts partition offset"), n (the
  newest values: a JSON list of [ts, partition, offset, value JSON], newest first) and d
  (marks that the tile's HyperLogLog exists, under the key `<entity key>|<field>`).

A filtered aggregation's column is written `{column}?{where}`; lifetime tiles use
`L{tile_ms}`, their folded base tile the index -2^40.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from featurestore.errors import OnlineLayoutError

#: Version of this layout, in each entity hash's `_v` (tiles.lua checks the same value).
LAYOUT_VERSION = "3"
#: Layouts this version reads and writes: 2 (packed rows unique and sorted) is a case of 3.
READABLE_LAYOUTS = frozenset({"2", "3"})
LAYOUT_FIELD = "_v"


def layout_error(key: str, found: bytes | str | None) -> OnlineLayoutError:
    """The error for an entity hash written in another layout."""
    was = found.decode() if isinstance(found, bytes) else found
    return OnlineLayoutError(
        f"online state of {key} is in storage layout {was or '1'}, this version reads and writes layout "
        f"{LAYOUT_VERSION}: stop the processors and run `featurestore rebuild-online`"
    )


def key_string(values: Sequence[Any]) -> str:
    """Join key values as they appear in a Redis key."""
    return "|".join(map(str, values))


def entity_key(project: str, view: str, values: Sequence[Any]) -> str:
    return f"fs:{project}:{view}:{key_string(values)}"


def entity_keys(project: str, view: str, keys: Sequence[Sequence[Any]]) -> list[bytes]:
    """The Redis keys of many entities of one view, encoded."""
    prefix = f"fs:{project}:{view}:"
    return [(prefix + key_string(values)).encode() for values in keys]


def tile_prefix(tiles_key: str, tile_ms: int, lifetime: bool = False) -> str:
    """Prefix of a tile set's fields (`tiles_key`: the column, or `column?where`)."""
    return f"{tiles_key}|{'L' if lifetime else ''}{tile_ms}"


def tile_field(prefix: str, index: int, stat: str) -> str:
    return f"{prefix}|{index}|{stat}"


def packed_field(prefix: str) -> str:
    """Field of a tile set's packed numeric statistics."""
    return f"{prefix}|P"


def overflow_field(prefix: str) -> str:
    """Field of the further terms of a tile set's exact sums."""
    return f"{prefix}|X"


def hll_key(entity: str, field: str) -> str:
    """Key of the HyperLogLog of a count_distinct tile of an entity."""
    return f"{entity}|{field}"


def row_field(feature: str) -> str:
    return f"r:{feature}"

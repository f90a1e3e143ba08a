"""Redis key and hash-field layout of the online store.

One hash per (project, view, entity): `fs:{project}:{view}:{key}`, where `key` is the join
key value (several keys joined with `|`). Fields:

- `_ts`, `_p`, `_o`: event time (ms), partition and offset of the newest event applied;
- `r:{feature}`: the latest value of a row-level feature (JSON);
- `{column}|{tile_ms}|{index}|{stat}`: tile statistics, stat one of c (count), s (sum),
  m (min), M (max), l (last value, JSON) and lo (order of that value: "ts partition offset").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def key_string(values: Sequence[Any]) -> str:
    """Join key values as they appear in a Redis key."""
    return "|".join(str(v) for v in values)


def entity_key(project: str, view: str, values: Sequence[Any]) -> str:
    return f"fs:{project}:{view}:{key_string(values)}"


def tile_prefix(column: str, tile_ms: int) -> str:
    return f"{column}|{tile_ms}"


def tile_field(column: str, tile_ms: int, index: int, stat: str) -> str:
    return f"{column}|{tile_ms}|{index}|{stat}"


def row_field(feature: str) -> str:
    return f"r:{feature}"

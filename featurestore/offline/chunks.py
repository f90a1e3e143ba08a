"""Cut a key-sorted stream of history rows into tables of whole entities (pure)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def entity_starts(table: pa.Table, keys: list[str]) -> np.ndarray:
    """Index of the first row of each entity in rows sorted by join keys."""
    n = table.num_rows
    changed = np.zeros(n, dtype=bool)
    if n:
        changed[0] = True
    for name in keys:
        col = table[name].combine_chunks()
        changed[1:] |= pc.not_equal(col.slice(1), col.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    return np.flatnonzero(changed)


def chunks_of_whole_entities(batches: Iterator[pa.RecordBatch], keys: list[str]) -> Iterator[pa.Table]:
    """Tables of rows sorted by join keys, cut only between entities."""
    carry: pa.Table | None = None
    for batch in batches:
        table = pa.Table.from_batches([batch]) if carry is None else pa.concat_tables([carry, pa.Table.from_batches([batch])])
        starts = entity_starts(table, keys)
        last = int(starts[-1]) if len(starts) else 0
        if last == 0:
            carry = table
            continue
        yield table.slice(0, last)
        carry = table.slice(last)
    if carry is not None and carry.num_rows:
        yield carry

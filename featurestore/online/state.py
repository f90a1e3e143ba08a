"""The online state of one entity of a view from one source partition (its format, magic
`F5`, is unchanged since storage layout 5; layout 6 keeps an entity's states in one value,
`featurestore.online.entity_value`): its binary format (pure). How a batch folds into states: `featurestore.online.fold`.

A source partition has one consumer at a time, so the state an entity holds from one
partition is a deterministic function of that partition's events up to an offset: the
processor owning the partition computes it in Python, vectorised over a batch, and writes
it whole, guarded by that offset (a replay or a former owner writes nothing older). Redis
only stores it; reads merge an entity's states from its partitions.

A state is one value: a fixed header (`FIXED`: the lengths of the JSON parts, the
offset applied, the newest event's time and offset), the row count (u32) of each tile set's
packed rows and of each item table, then JSON parts: the row feature values, the rare
further terms of exact sums, the values of the item tables (one list, table after table; a
read that needs none skips it); padded to 8 bytes, then the binary tables: little-endian
float64 rows of the packed tile sets (`featurestore.online.packed`), set after set, then
the int64 rows of the item tables:

- applied: the highest offset of this partition applied to the entity;
- ts, offset: the newest event (event time, offset), whose `row` (row feature values,
  JSON) the entity serves;
- per packed set: its row count and the third and further terms of its exact sums
  `[[index, stat, x3, ...], ...]`;
- per set with first / last / last_n / count_distinct, one item table per statistic (in
  `TileSet.per_tile_fields` order), set after set. Rows of `f`, `l`, `n` are
  `(tile index, event time, offset)`, each with its value in the values list: the
  oldest event of each tile, the newest, and the k newest. Rows of `d` are `(tile index,
  64-bit hash of a distinct value)`, the `DISTINCT_KEEP` smallest hashes of each tile
  (exact up to that many distinct values, an estimate beyond). Rows are sorted by tile.

Every tile a read can still reach from the newest event is kept; older ones are dropped,
or folded into the base tile for lifetime sets. Sums are canonical expansions of their
exact value and tiles are sorted, so the same events give the same bytes however they were
batched (stream, backfill and rebuild agree byte for byte).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import orjson

from featurestore.errors import OnlineLayoutError
from featurestore.online.layout import TileSet
from featurestore.online.packed import row_width

MAGIC = b"F5"
#: Distinct values kept per tile (their smallest hashes): count_distinct is exact up to this
#: many distinct values in a window, a k-minimum-values estimate beyond (standard error ~3%).
DISTINCT_KEEP = 1024
FIXED = struct.Struct("<2sxxIIIqqq")
"""MAGIC, the bytes of the row JSON, of the overflow JSON and of the item values JSON, then
the state's offset, newest event time and newest event offset."""


_MAGIC_WORD = int.from_bytes(MAGIC + b"\0\0", "little")

#: int64 columns of an item table's rows, per statistic.
ITEM_COLUMNS = {"f": 3, "l": 3, "n": 3, "d": 2}


@dataclass
class PartState:
    """What an entity holds from one source partition."""

    applied: int = -1
    ts: int = 0
    offset: int = -1
    row: list[Any] | None = None
    """Row feature values of the newest event (None: no event yet)."""
    packed: list[bytes] = field(default_factory=list)
    """Per tile set: its packed rows, little-endian float64 (empty for sets without packed stats)."""
    overflow: list[list[list[Any]]] = field(default_factory=list)
    items: list[list[tuple[bytes, list[Any]]]] = field(default_factory=list)
    """Per tile set, per statistic of `per_tile_fields`: (its int64 rows, their values)."""


@dataclass(frozen=True)
class StateCodec:
    """What decoding a view's states needs: the bytes of a packed row of each tile set, and
    the item statistics of each."""

    widths: tuple[int, ...]
    stats: tuple[str, ...]

    @classmethod
    def of(cls, sets: Sequence[TileSet]) -> StateCodec:
        return cls(tuple(8 * row_width(s.packed) for s in sets), tuple("".join(s.per_tile_fields) for s in sets))

    @property
    def tables(self) -> str:
        """The statistic of each item table, set after set."""
        return "".join(self.stats)

    @property
    def counts_size(self) -> int:
        """Bytes of the row counts after the fixed header."""
        return 4 * (len(self.widths) + len(self.tables))


_DAMAGED = ("an online state in Redis is not one of this version (damaged, or written by something else): rewrite the "
            "online store from the history with `featurestore rebuild-online`")


def empty_state(codec: StateCodec) -> PartState:
    return PartState(packed=[b""] * len(codec.widths), overflow=[[] for _ in codec.widths],
                     items=[[(b"", []) for _ in stats] for stats in codec.stats])


class StoredState(NamedTuple):
    """A stored state's parts, decoded only as far as a read needs."""

    applied: int
    ts: int
    offset: int
    row: bytes
    """The row feature values, JSON (parsed by the caller, for many states at once)."""
    overflow: bytes
    """Per tile set, the further terms of exact sums, JSON (b"": there are none)."""
    packed: list[bytes]
    items: list[list[tuple[bytes, list[Any]]]] | None


def decode_state(blob: bytes, codec: StateCodec) -> PartState:
    """A stored state (see the module docstring)."""
    st = state_tables(blob, codec)
    return PartState(st.applied, st.ts, st.offset, orjson.loads(st.row), st.packed,
                     orjson.loads(st.overflow) if st.overflow else [[] for _ in codec.widths], st.items or [])


def _parts(blob: bytes, codec: StateCodec) -> tuple[tuple[int, int, int], bytes, bytes, bytes, list[int], list[int]]:
    """The fixed fields (applied, ts, offset), the row, overflow and item values JSON, where
    each tile set's packed rows start (one more: where the item tables start), and the row
    count of each item table."""
    magic, row_size, overflow_size, items_size, applied, ts, offset = FIXED.unpack_from(blob)
    if magic != MAGIC:
        raise OnlineLayoutError(_DAMAGED)
    n_sets = len(codec.widths)
    counts = struct.unpack_from(f"<{n_sets + len(codec.tables)}I", blob, FIXED.size)
    at = FIXED.size + codec.counts_size
    row = blob[at : at + row_size]
    overflow = blob[at + row_size : at + row_size + overflow_size]
    items = blob[at + row_size + overflow_size : at + row_size + overflow_size + items_size]
    starts = [padded(at + row_size + overflow_size + items_size)]
    for width, n in zip(codec.widths, counts):
        starts.append(starts[-1] + n * width)
    return (applied, ts, offset), row, overflow, items, starts, list(counts[n_sets:])


def state_tables(blob: bytes, codec: StateCodec, with_items: bool = True) -> StoredState:
    """A stored state's fixed fields, raw row JSON and packed rows, and (`with_items`) per set
    and statistic the raw item rows and their values. Reads that need no first / last /
    last_n / count_distinct skip the item tables (and their JSON); see also `packed_of`."""
    (applied, ts, offset), row, overflow, values_json, starts, table_rows = _parts(blob, codec)
    packed = [blob[a:b] for a, b in zip(starts, starts[1:])]
    if not with_items:
        return StoredState(applied, ts, offset, row, overflow, packed, None)
    values = orjson.loads(values_json) if values_json else []
    items = []
    at, taken, table = starts[-1], 0, 0
    for stats in codec.stats:
        set_items = []
        for stat in stats:
            n = table_rows[table]
            end = at + 8 * ITEM_COLUMNS[stat] * n
            has_values = stat != "d"
            set_items.append((blob[at:end], values[taken : taken + n] if has_values else []))
            taken += n if has_values else 0
            at, table = end, table + 1
        items.append(set_items)
    return StoredState(applied, ts, offset, row, overflow, packed, items)


class StateBlock:
    """Encoded states side by side: one buffer of 8-byte words (a state's length is a multiple
    of 8), each header field an array over the states (the fold reads a batch's states so,
    and a read its entities')."""

    def __init__(self, blobs: Sequence[bytes], codec: StateCodec) -> None:
        n_sets = len(codec.widths)
        sizes = np.fromiter(map(len, blobs), np.int64, len(blobs))
        self.buf = b"".join(blobs)
        self.words = np.frombuffer(self.buf, "<i8")
        start = np.cumsum(sizes) - sizes
        u32 = np.frombuffer(self.buf, "<u4")
        at4 = start // 4
        if (u32[at4] != _MAGIC_WORD).any():
            raise OnlineLayoutError(_DAMAGED)
        fixed = [u32[at4 + i].astype(np.int64) for i in (1, 2, 3)]
        self.row_size, self.overflow_size, self.items_size = fixed
        at8 = start // 8
        self.applied, self.ts, self.offset = self.words[at8 + 2], self.words[at8 + 3], self.words[at8 + 4]
        all_counts = u32[(at4 + FIXED.size // 4)[:, None] + np.arange(codec.counts_size // 4)].astype(np.int64)
        all_counts = all_counts.reshape(len(blobs), -1)
        self.counts = all_counts[:, :n_sets]
        """(states, sets) packed rows of each tile set."""
        self.table_counts = all_counts[:, n_sets:]
        """(states, tables) rows of each item table."""
        self.json_at = start + FIXED.size + codec.counts_size
        packed_at = start + padded(self.json_at - start + self.row_size + self.overflow_size + self.items_size)
        set_words = self.counts * (np.array(codec.widths, dtype=np.int64) // 8)
        self.set_words = set_words
        self.set_at = packed_at[:, None] // 8 + np.cumsum(set_words, axis=1) - set_words
        """Word index of each state's rows of each tile set."""
        self.items_at = packed_at // 8 + set_words.sum(axis=1)

    def take(self, at: np.ndarray) -> None:
        """Keep only the states at positions `at` (the buffer stays)."""
        for name in ("row_size", "overflow_size", "items_size", "applied", "ts", "offset", "counts", "table_counts", "json_at",
                     "set_words", "set_at", "items_at"):
            setattr(self, name, getattr(self, name)[at])

    def json(self, at: np.ndarray, size: np.ndarray) -> list[bytes]:
        return [self.buf[a : a + n] for a, n in zip(at.tolist(), size.tolist())]

    def overflows(self, states: np.ndarray) -> dict[int, list[list[list[Any]]]]:
        """Per state among `states` with further terms of exact sums (rare): its lists of them
        per tile set (`[[tile, stat, x3, ...], ...]`)."""
        has = states[self.overflow_size[states] > 0]
        texts = self.json(self.json_at[has] + self.row_size[has], self.overflow_size[has])
        return {int(s): orjson.loads(text) for s, text in zip(has.tolist(), texts)}


def word_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The indices of the ranges [starts[i], starts[i] + counts[i]), concatenated."""
    total = int(counts.sum())
    if not total:
        return np.zeros(0, dtype=np.int64)
    return np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(total)


def tile_indices(state: PartState, k: int, codec: StateCodec) -> set[int]:
    """The tiles tile set `k` of a state holds (packed or in item tables)."""
    out = set(np.frombuffer(state.packed[k], dtype="<f8")[:: codec.widths[k] // 8].astype(np.int64).tolist())
    for stat, (raw, _) in zip(codec.stats[k], state.items[k]):
        out.update(np.frombuffer(raw, dtype="<i8")[:: ITEM_COLUMNS[stat]].tolist())
    return out


def packed_of(blob: bytes, codec: StateCodec, wanted: Sequence[int]) -> tuple[int, int, bytes, bytes, list[bytes]]:
    """What a read of numeric and row features needs, and nothing more: (newest event time,
    its offset, the row JSON, the overflow JSON (b"" when none), the packed rows of the sets
    at `wanted`)."""
    (_, ts, offset), row, overflow, _, starts, _ = _parts(blob, codec)
    return ts, offset, row, overflow, [blob[starts[k] : starts[k + 1]] for k in wanted]


def encode_state(state: PartState, codec: StateCodec) -> bytes:
    """The stored form of a state (see the module docstring)."""
    row = orjson.dumps(state.row)
    overflow = orjson.dumps(state.overflow) if any(state.overflow) else b""
    tables = [table for set_items in state.items for table in set_items]
    values = [v for _, vals in tables for v in vals]
    items = orjson.dumps(values) if values else b""
    counts = [len(p) // w for p, w in zip(state.packed, codec.widths)]
    counts += [len(raw) // (8 * ITEM_COLUMNS[stat]) for stat, (raw, _) in zip(codec.tables, tables)]
    head = b"".join([FIXED.pack(MAGIC, len(row), len(overflow), len(items), state.applied, state.ts, state.offset),
                     struct.pack(f"<{len(counts)}I", *counts), row, overflow, items])
    return b"".join([head, b" " * (padded(len(head)) - len(head)), *state.packed, *(raw for raw, _ in tables)])


def padded(n: int) -> int:
    return -(-n // 8) * 8


def value_hash(value: Any) -> int:
    """The 64-bit hash of a value count_distinct counts (of its JSON text: 1 and 1.0 differ)."""
    return int.from_bytes(hashlib.blake2b(orjson.dumps(value), digest_size=8).digest(), "little")


def distinct_count(tiles: Sequence[Sequence[int]]) -> int:
    """count_distinct of tiles from their kept hashes (int64 bits of unsigned 64-bit hashes):
    exact while no tile and no union is over `DISTINCT_KEEP`, else the k-minimum-values
    estimate (k - 1) / (k-th smallest / 2^64)."""
    union: set[int] = set()
    full = False
    for hs in tiles:
        union.update(hs)
        full = full or len(hs) >= DISTINCT_KEEP
    if not full and len(union) < DISTINCT_KEEP:
        return len(union)
    kth = sorted(h % 2**64 for h in union)[DISTINCT_KEEP - 1]
    return round((DISTINCT_KEEP - 1) / ((kth + 1) / 2.0**64))

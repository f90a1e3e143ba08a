"""The online state of one entity of a view from one source partition (storage layout 4), and
how a batch of events folds into it (pure).

A source partition has one consumer at a time, so the state an entity holds from one
partition is a deterministic function of that partition's events up to an offset: the
processor owning the partition computes it in Python, vectorised over a batch, and writes
it whole, guarded by that offset (a replay or a former owner writes nothing older). Redis
only stores it; reads merge an entity's states from its partitions.

A state is one value: a fixed header (`_FIXED`: the lengths of the JSON parts, the
offset applied, the newest event's time and offset), the row count of each tile set's
packed rows, then JSON parts: the row feature values, the rare further terms of exact sums,
the item tables' row counts and values (a read that needs none skips it); padded to 8
bytes, then the binary tables: little-endian float64 rows of the packed tile sets
(`featurestore.online.packed`), set after set, then the int64 rows of the item tables:

- applied: the highest offset of this partition applied to the entity;
- ts, offset: the newest event (event time, offset), whose `row` (row feature values,
  JSON) the entity serves;
- per packed set: its row count and the third and further terms of its exact sums
  `[[index, stat, x3, ...], ...]`;
- per set with first / last / last_n / count_distinct, one item table per statistic (in
  `TileSet.per_tile_fields` order): `[row count, values]`. Rows of `f`, `l`, `n` are
  `(tile index, event time, offset)` with the value at the same position in `values`: the
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
import pandas as pd

from featurestore.collector import collector_paused
from featurestore.online.layout import LIFETIME_EXTRA_TILES, TileSet
from featurestore.online.packed import columns, row_width
from featurestore.online.sums import exact_sums
from featurestore.plan import ViewPlan
from featurestore.plan.windows import LIFETIME_BASE_INDEX, LIFETIME_TILE_MS

MAGIC = b"F4"
#: Distinct values kept per tile (their smallest hashes): count_distinct is exact up to this
#: many distinct values in a window, a k-minimum-values estimate beyond (standard error ~3%).
DISTINCT_KEEP = 1024
_FIXED = struct.Struct("<2sxxIIIqqq")
"""MAGIC, the bytes of the row JSON, of the overflow JSON and of the items JSON, then the
state's offset, newest event time and newest event offset."""


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


def _parts(blob: bytes, codec: StateCodec) -> tuple[tuple[int, int, int], bytes, bytes, bytes, list[int]]:
    """The fixed fields (applied, ts, offset), the row, overflow and items JSON, and where each
    tile set's packed rows start (one more: where the item tables start)."""
    magic, row_size, overflow_size, items_size, applied, ts, offset = _FIXED.unpack_from(blob)
    if magic != MAGIC:
        raise ValueError("not an online state of layout 4")
    n_sets = len(codec.widths)
    counts = struct.unpack_from(f"<{n_sets}I", blob, _FIXED.size)
    at = _FIXED.size + 4 * n_sets
    row = blob[at : at + row_size]
    overflow = blob[at + row_size : at + row_size + overflow_size]
    items = blob[at + row_size + overflow_size : at + row_size + overflow_size + items_size]
    starts = [_padded(at + row_size + overflow_size + items_size)]
    for width, n in zip(codec.widths, counts):
        starts.append(starts[-1] + n * width)
    return (applied, ts, offset), row, overflow, items, starts


def state_tables(blob: bytes, codec: StateCodec, with_items: bool = True) -> StoredState:
    """A stored state's fixed fields, raw row JSON and packed rows, and (`with_items`) per set
    and statistic the raw item rows and their values. Reads that need no first / last /
    last_n / count_distinct skip the item tables (and their JSON); see also `packed_of`."""
    (applied, ts, offset), row, overflow, items_json, starts = _parts(blob, codec)
    packed = [blob[a:b] for a, b in zip(starts, starts[1:])]
    if not with_items:
        return StoredState(applied, ts, offset, row, overflow, packed, None)
    items = []
    at = starts[-1]
    for stats, tables in zip(codec.stats, orjson.loads(items_json) if items_json else [[] for _ in codec.stats]):
        set_items = []
        for stat, (n, vals) in zip(stats, tables):
            end = at + 8 * ITEM_COLUMNS[stat] * n
            set_items.append((blob[at:end], vals))
            at = end
        items.append(set_items)
    return StoredState(applied, ts, offset, row, overflow, packed, items)


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
    (_, ts, offset), row, overflow, _, starts = _parts(blob, codec)
    return ts, offset, row, overflow, [blob[starts[k] : starts[k + 1]] for k in wanted]


def encode_state(state: PartState, codec: StateCodec) -> bytes:
    """The stored form of a state (see the module docstring)."""
    row = orjson.dumps(state.row)
    overflow = orjson.dumps(state.overflow) if any(state.overflow) else b""
    items = orjson.dumps([[[len(raw) // (8 * ITEM_COLUMNS[stat]), vals] for stat, (raw, vals) in zip(stats, set_items)]
                          for stats, set_items in zip(codec.stats, state.items)]) if any(codec.stats) else b""
    counts = [len(p) // w for p, w in zip(state.packed, codec.widths)]
    head = b"".join([_FIXED.pack(MAGIC, len(row), len(overflow), len(items), state.applied, state.ts, state.offset),
                     struct.pack(f"<{len(counts)}I", *counts), row, overflow, items])
    return b"".join([head, b" " * (_padded(len(head)) - len(head)), *state.packed,
                     *(raw for set_items in state.items for raw, _ in set_items)])


def _padded(n: int) -> int:
    return -(-n // 8) * 8


@dataclass(frozen=True)
class Bounds:
    """Where a tile set stops: tiles below `tile_index(newest - shift) - back` are dropped,
    or folded into the base tile (`fold`, lifetime sets)."""

    shift_ms: int
    back: int
    fold: bool


def set_bounds(view: ViewPlan, sets: Sequence[TileSet], skew_ms: int) -> list[Bounds]:
    slack = skew_ms + (view.allowed_lateness_ms or 0)
    out = []
    for s in sets:
        if s.max_window_ms is None:
            out.append(Bounds(slack, 1 + LIFETIME_EXTRA_TILES, True))
        else:
            out.append(Bounds(skew_ms, s.max_window_ms // s.tile_ms, False))
    return out


@dataclass
class Groups:
    """A batch's rows of one view ordered by (entity, partition, event time, offset), and its
    groups: the runs of one entity and partition."""

    row: np.ndarray
    """Positions in the batch, in group order."""
    ts: np.ndarray
    off: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    keys: list[tuple[Any, ...]]
    partitions: list[int]


def group_rows(keys: Sequence[tuple[Any, ...]], ts: np.ndarray, part: np.ndarray, off: np.ndarray,
               picked: np.ndarray) -> Groups:
    """Order the rows at `picked` by (entity, partition, event time, offset) and cut them into groups."""
    if keys and len(keys[0]) == 1:  # one join key: factorised in C
        column = np.empty(len(picked), dtype=object)
        column[:] = [keys[i][0] for i in picked.tolist()]
        entity = pd.factorize(column)[0].astype(np.int64)
    else:
        ids: dict[tuple[Any, ...], int] = {}
        entity = np.fromiter((ids.setdefault(keys[i], len(ids)) for i in picked.tolist()), np.int64, len(picked))
    order = np.lexsort((off[picked], ts[picked], part[picked], entity))
    row = picked[order]
    entity, p = entity[order], part[row]
    n = len(row)
    start = np.flatnonzero(np.append(True, (entity[1:] != entity[:-1]) | (p[1:] != p[:-1]))) if n else np.zeros(0, np.int64)
    stop = np.append(start[1:], n).astype(np.int64)
    firsts = row[start].tolist()
    return Groups(row, ts[row], off[row], start, stop, [keys[i] for i in firsts], p[start].tolist())


@collector_paused
def fold(view: ViewPlan, sets: Sequence[TileSet], bounds: Sequence[Bounds], groups: Groups,
         states: list[PartState], values: dict[str, list[Any]]) -> list[PartState]:
    """The states after applying each group's events (those above its state's `applied`
    offset) to it; `states` holds one state per group, `values` the batch's history columns
    (indexed by batch position)."""
    n_groups = len(states)
    applied = np.fromiter((s.applied for s in states), np.int64, n_groups)
    group_of = np.repeat(np.arange(n_groups), groups.stop - groups.start)
    fresh = groups.off > applied[group_of]
    if not fresh.all():  # a replay: keep only what each state has not applied yet
        keep = np.flatnonzero(fresh)
        kept_group = group_of[keep]
        counts = np.bincount(kept_group, minlength=n_groups)
        stop = np.cumsum(counts)
        groups = Groups(groups.row[keep], groups.ts[keep], groups.off[keep], stop - counts, stop, groups.keys,
                        groups.partitions)
        group_of = kept_group
    counts = groups.stop - groups.start
    live = counts > 0
    out = [PartState(s.applied, s.ts, s.offset, s.row, list(s.packed), list(s.overflow), list(s.items)) for s in states]
    if not live.any():
        return out
    live_groups = np.flatnonzero(live)
    last = groups.stop[live_groups] - 1  # the newest event of each group with events
    last_off = np.maximum.reduceat(groups.off, groups.start[live_groups])  # empty groups lie between: no gaps
    row_names = [f.name for f in view.row_features]
    for g, t, o, i, high in zip(live_groups.tolist(), groups.ts[last].tolist(), groups.off[last].tolist(),
                                groups.row[last].tolist(), last_off.tolist()):
        s = out[g]
        s.applied = max(s.applied, high)
        if s.row is None or (t, o) > (s.ts, s.offset):
            s.ts, s.offset, s.row = t, o, [values[name][i] for name in row_names]
    newest = np.fromiter((s.ts for s in out), np.int64, n_groups)
    batch = _Columns(values)
    for k, (tset, bound) in enumerate(zip(sets, bounds)):
        tile = LIFETIME_TILE_MS if bound.fold else tset.tile_ms
        low = -((-(newest - bound.shift_ms)) // tile) - 1 - bound.back  # per group: the lowest tile kept
        rows_k = _set_rows(tset, groups, batch)
        if tset.packed:
            _fold_packed(out, k, tset, bound, low, groups, rows_k, batch, live)
        if tset.per_tile_fields:
            _fold_tiles(out, k, tset, bound, low, groups, rows_k, batch, live)
    return out


class _Columns:
    """The batch's history columns as numpy arrays, each made once per batch (several tile
    sets read the same column)."""

    def __init__(self, values: dict[str, list[Any]]) -> None:
        self.values = values
        self._made: dict[tuple[str, str], np.ndarray] = {}

    def _get(self, name: str, kind: str) -> np.ndarray:
        got = self._made.get((name, kind))
        if got is None:
            col = self.values[name]
            if kind == "present":
                got = np.fromiter((v is not None for v in col), dtype=bool, count=len(col))
            elif kind == "true":
                got = np.fromiter((v is True for v in col), dtype=bool, count=len(col))
            elif kind == "float":
                got = np.fromiter((np.nan if v is None else v for v in col), dtype=np.float64, count=len(col))
            else:
                got = np.empty(len(col), dtype=object)
                got[:] = col
            self._made[(name, kind)] = got
        return got

    def present(self, name: str) -> np.ndarray:
        return self._get(name, "present")

    def true(self, name: str) -> np.ndarray:
        return self._get(name, "true")

    def floats(self, name: str) -> np.ndarray:
        return self._get(name, "float")

    def objects(self, name: str) -> np.ndarray:
        return self._get(name, "object")


def _set_rows(tset: TileSet, groups: Groups, batch: _Columns) -> np.ndarray:
    """Positions (in group order) of the rows a tile set takes: a value, and the filter True."""
    keep = batch.present(tset.column)[groups.row]
    if tset.where is not None:
        keep &= batch.true(tset.where)[groups.row]
    return np.flatnonzero(keep)


def _fold_packed(out: list[PartState], k: int, tset: TileSet, bound: Bounds, low: np.ndarray, groups: Groups,
                 at: np.ndarray, batch: _Columns, live: np.ndarray) -> None:
    stats = tset.packed
    cols = columns(stats)
    width = row_width(stats)
    touched = np.flatnonzero(live)
    # the stored rows of the groups with events, and their further sum terms as extra rows
    touched_list = touched.tolist()
    old = [out[g].packed[k] for g in touched_list]
    row_size = 8 * width
    old_group = np.repeat(touched, [len(r) // row_size for r in old])
    extra = [(g, _neutral_row(stats, t[0], cols[t[1]], t[j : j + 2]))
             for g in touched_list for t in out[g].overflow[k] for j in range(2, len(t), 2)]
    parts = [np.frombuffer(b"".join(old), dtype="<f8").reshape(-1, width)]
    owners = [old_group]
    if extra:
        parts.append(np.array([r for _, r in extra], dtype="<f8"))
        owners.append(np.array([g for g, _ in extra], dtype=np.int64))
    # the batch's rows: one per event (a tile's count 1, its value as sum, square, min, max)
    if len(at):
        group_at = _owner(groups, at)
        idx = -((-groups.ts[at]) // tset.tile_ms) - 1
        new = np.zeros((len(at), width), dtype="<f8")
        new[:, 0] = idx
        x = batch.floats(tset.column)[groups.row[at]] if set(stats) - {"c"} else None
        for st, c in cols.items():
            if st == "c":
                new[:, c] = 1
            elif st == "s":
                new[:, c] = x  # type: ignore[index]
            elif st == "q":
                new[:, c] = x * x  # type: ignore[operator]
            else:
                new[:, c] = x  # type: ignore[index]
        parts.append(new)
        owners.append(group_at)
    rows = np.concatenate(parts)
    owner = np.concatenate(owners)
    idx = rows[:, 0].copy()
    below = idx < low[owner]
    if bound.fold:
        idx[below & (idx != LIFETIME_BASE_INDEX)] = LIFETIME_BASE_INDEX
    else:
        rows, owner, idx = rows[~below], owner[~below], idx[~below]
    order = np.lexsort((idx, owner))
    rows, owner, idx = rows[order], owner[order], idx[order]
    n = len(rows)
    first = np.flatnonzero(np.append(True, (owner[1:] != owner[:-1]) | (idx[1:] != idx[:-1]))) if n else np.zeros(0, np.int64)
    stop = np.append(first[1:], n).astype(np.int64)
    merged = np.zeros((len(first), width), dtype="<f8")
    merged[:, 0] = idx[first] if n else merged[:, 0]
    more_rows: dict[int, list[list[Any]]] = {}
    for st, c in cols.items():
        if not n:
            break
        if st == "c":
            merged[:, c] = np.add.reduceat(rows[:, c], first)
        elif st == "m":
            merged[:, c] = np.minimum.reduceat(rows[:, c], first)
        elif st == "M":
            merged[:, c] = np.maximum.reduceat(rows[:, c], first)
        else:  # exact sum of every term (hi, lo) of the tile's rows
            terms = rows[:, c : c + 2].ravel()
            hi, lo, more = exact_sums(terms, 2 * first, 2 * stop)
            merged[:, c], merged[:, c + 1] = hi, lo
            for t, xs in more.items():
                more_rows.setdefault(t, []).append([int(merged[t, 0]), st, *xs])
    tile_owner = owner[first] if n else np.zeros(0, np.int64)
    cuts = np.searchsorted(tile_owner, touched) * row_size
    ends = np.searchsorted(tile_owner, touched, side="right") * row_size
    blob = merged.tobytes()
    for g, a, b in zip(touched_list, cuts.tolist(), ends.tolist()):
        s = out[g]
        s.packed[k] = blob[a:b]
        s.overflow[k] = [x for t in range(a // row_size, b // row_size) for x in more_rows.get(t, ())] if more_rows else []


def _owner(groups: Groups, at: np.ndarray) -> np.ndarray:
    """The group of each position (in group order)."""
    return np.searchsorted(groups.start, at, side="right") - 1


def _neutral_row(stats: str, index: float, col: int, terms: list[float]) -> np.ndarray:
    """A row adding nothing but `terms` to the sum at `col` of tile `index`."""
    cols = columns(stats)
    row = np.zeros(row_width(stats), dtype="<f8")
    row[0] = index
    if "m" in cols:
        row[cols["m"]] = np.inf
    if "M" in cols:
        row[cols["M"]] = -np.inf
    row[col : col + len(terms)] = terms
    return row


def _fold_tiles(out: list[PartState], k: int, tset: TileSet, bound: Bounds, low: np.ndarray, groups: Groups,
                at: np.ndarray, batch: _Columns, live: np.ndarray) -> None:
    """first / last / last_n / count_distinct: each item table of the touched groups merged with
    the batch's events, vectorised (sort by group and tile, keep what each statistic keeps)."""
    touched = np.flatnonzero(live)
    touched_list = touched.tolist()
    for g in touched_list:  # this set's tables are replaced: copy the list they sit in
        out[g].items[k] = list(out[g].items[k])
    owner = _owner(groups, at)
    vals = batch.objects(tset.column)[groups.row[at]]
    idx = -((-groups.ts[at]) // tset.tile_ms) - 1
    ts, off = groups.ts[at], groups.off[at]
    for j, stat in enumerate(tset.per_tile_fields):
        width = ITEM_COLUMNS[stat]
        old = [out[g].items[k][j] for g in touched_list]
        old_rows = np.frombuffer(b"".join(raw for raw, _ in old), dtype="<i8").reshape(-1, width)
        old_owner = np.repeat(touched, [len(raw) // (8 * width) for raw, _ in old])
        if stat == "d":
            hashes = np.fromiter(map(_Hashes(), vals), dtype=np.uint64, count=len(vals)).view(np.int64)
            tile = np.concatenate([old_rows[:, 0], idx])
            key = np.concatenate([old_rows[:, 1], hashes])
            owners = np.concatenate([old_owner, owner])
            tile = _trimmed(tile, owners, low, bound)
            keep = tile != _DROP
            tile, key, owners = tile[keep], key[keep], owners[keep]
            order = np.lexsort((key.view(np.uint64), tile, owners))
            tile, key, owners = tile[order], key[order], owners[order]
            new = _run_starts(owners, tile, key)
            tile, key, owners = tile[new], key[new], owners[new]
            pick = _rank_in_runs(owners, tile) < DISTINCT_KEEP
            rows = np.stack([tile[pick], key[pick]], axis=1)
            kept_owner, kept_vals = owners[pick], None
        else:
            old_vals = np.empty(len(old_rows), dtype=object)
            old_vals[:] = [v for _, vs in old for v in vs]
            tile = np.concatenate([old_rows[:, 0], idx])
            t = np.concatenate([old_rows[:, 1], ts])
            o = np.concatenate([old_rows[:, 2], off])
            v = np.concatenate([old_vals, vals])
            owners = np.concatenate([old_owner, owner])
            tile = _trimmed(tile, owners, low, bound)
            keep = tile != _DROP
            tile, t, o, v, owners = tile[keep], t[keep], o[keep], v[keep], owners[keep]
            order = np.lexsort((o, t, tile, owners))
            tile, t, o, v, owners = tile[order], t[order], o[order], v[order], owners[order]
            if stat == "f":  # the oldest of each tile
                pick = _run_starts(owners, tile)
            elif stat == "l":  # the newest of each tile
                pick = _run_starts(owners[::-1], tile[::-1])[::-1]
            else:  # the k newest of each tile
                pick = _rank_in_runs(owners[::-1], tile[::-1])[::-1] < tset.last_n
            rows = np.stack([tile[pick], t[pick], o[pick]], axis=1)
            kept_owner, kept_vals = owners[pick], v[pick].tolist()
        raw = rows.astype("<i8").tobytes()
        size = 8 * width
        starts = np.searchsorted(kept_owner, touched)
        ends = np.searchsorted(kept_owner, touched, side="right")
        for g, a, b in zip(touched_list, starts.tolist(), ends.tolist()):
            out[g].items[k][j] = (raw[a * size : b * size], [] if kept_vals is None else kept_vals[a:b])


_DROP = np.iinfo(np.int64).min


def _trimmed(tile: np.ndarray, owners: np.ndarray, low: np.ndarray, bound: Bounds) -> np.ndarray:
    """Tile indices after the set's bound: below it, `_DROP` (windowed sets) or the base tile (lifetime)."""
    below = (tile < low[owners]) & (tile != LIFETIME_BASE_INDEX)
    if not below.any():
        return tile
    tile = tile.copy()
    tile[below] = LIFETIME_BASE_INDEX if bound.fold else _DROP
    return tile


def _run_starts(*columns: np.ndarray) -> np.ndarray:
    """Whether each row starts a run of equal values in all `columns` (rows sorted by them)."""
    n = len(columns[0])
    start = np.ones(n, dtype=bool)
    if n:
        start[1:] = np.logical_or.reduce([c[1:] != c[:-1] for c in columns])
    return start


def _rank_in_runs(owners: np.ndarray, tile: np.ndarray) -> np.ndarray:
    """Position of each row within its run of equal (owner, tile) (rows sorted by them)."""
    n = len(owners)
    if not n:
        return np.zeros(0, dtype=np.int64)
    start = _run_starts(owners, tile)
    first = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    return np.arange(n) - first


class _Hashes(dict[Any, int]):
    """64-bit hashes of values' JSON text, each distinct value hashed once per batch."""

    def __call__(self, value: Any) -> int:
        key = (type(value), value)
        h = self.get(key)
        if h is None:
            h = self[key] = value_hash(value)
        return h


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

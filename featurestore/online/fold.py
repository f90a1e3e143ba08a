"""How a batch of events folds into the stored states of its entities (pure, vectorised).

A batch of one view is grouped by (entity, source partition) (`group_rows`). The groups'
states arrive encoded (`featurestore.online.state`) and are read side by side: joined into
one buffer of 8-byte words whose headers are parsed all at once (`featurestore.online.state.StateBlock`). For each tile
set, the groups' stored rows and the batch's new ones are merged by numpy sorts and
reductions (numeric tiles: counts, exact sums, min/max; item tables: first, last, last_n,
count_distinct hashes), tiles out of reach are dropped (or folded into the base tile of a
lifetime set), and the new states are assembled into one buffer again (`_assemble`). What
remains per state in Python is its JSON: the row values, the item values, and the rare
further terms of exact sums.

The same events give the same bytes however they were batched; events at or below a
state's applied offset are skipped, so a replay changes nothing.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import orjson
import pandas as pd

from featurestore.collector import collector_paused
from featurestore.online.layout import LIFETIME_EXTRA_TILES, TileSet
from featurestore.online.packed import columns, row_width
from featurestore.online.state import (
    DISTINCT_KEEP,
    FIXED,
    ITEM_COLUMNS,
    MAGIC,
    StateBlock,
    StateCodec,
    empty_state,
    encode_state,
    padded,
    value_hash,
    word_ranges,
)
from featurestore.online.sums import exact_sums
from featurestore.plan import ViewPlan
from featurestore.plan.windows import LIFETIME_BASE_INDEX, LIFETIME_TILE_MS

_FIXED_DTYPE = np.dtype([("magic", "S4"), ("row", "<u4"), ("overflow", "<u4"), ("items", "<u4"),
                         ("applied", "<i8"), ("ts", "<i8"), ("offset", "<i8")])
assert _FIXED_DTYPE.itemsize == FIXED.size


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
    order = sort_order(off[picked], ts[picked], part[picked], entity)
    row = picked[order]
    entity, p = entity[order], part[row]
    n = len(row)
    start = np.flatnonzero(np.append(True, (entity[1:] != entity[:-1]) | (p[1:] != p[:-1]))) if n else np.zeros(0, np.int64)
    stop = np.append(start[1:], n).astype(np.int64)
    firsts = row[start].tolist()
    return Groups(row, ts[row], off[row], start, stop, [keys[i] for i in firsts], p[start].tolist())


def sort_order(*keys: np.ndarray) -> np.ndarray:
    """`np.lexsort(keys)` (the last key the most significant; stable), faster: the two most
    significant keys, when they are non-negative-major int64 whose pair fits in one int64,
    are sorted as one."""
    if len(keys) >= 2 and len(keys[-1]) and keys[-1].dtype == np.int64 and keys[-2].dtype == np.int64:
        major, minor = keys[-1], keys[-2]
        low, high, top = int(minor.min()), int(minor.max()), int(major.max())
        if int(major.min()) >= 0 and (top + 1) * (high - low + 1) < 2**62:
            both = major * (high - low + 1) + (minor - low)
            rest = keys[:-2]
            return np.lexsort((*rest, both)) if rest else np.argsort(both, kind="stable")
    return np.lexsort(keys)


@functools.lru_cache(maxsize=64)
def _empty(codec: StateCodec) -> bytes:
    return encode_state(empty_state(codec), codec)


@dataclass
class _SetOut:
    """A tile set's new rows of every state (ordered by state), and each state's row count."""

    rows: np.ndarray
    counts: np.ndarray


class Folded(NamedTuple):
    """The states a batch changed: their groups' positions, applied offsets and new states."""

    groups: list[int]
    applied: list[int]
    states: list[bytes]


@collector_paused
def fold_states(view: ViewPlan, sets: Sequence[TileSet], bounds: Sequence[Bounds], codec: StateCodec, groups: Groups,
                stored: Sequence[bytes | None], values: dict[str, list[Any]]) -> Folded:
    """Fold each group's events above its state's applied offset into that state; returns
    the states that changed. `stored` holds each group's encoded state
    (None: none yet), `values` the batch's history columns (indexed by batch position)."""
    empty = _empty(codec)
    block = StateBlock([b if b else empty for b in stored], codec)
    n_groups = len(stored)
    group_of = np.repeat(np.arange(n_groups), groups.stop - groups.start)
    fresh = groups.off > block.applied[group_of]
    if not fresh.all():  # a replay: keep only what each state has not applied yet
        keep = np.flatnonzero(fresh)
        counts = np.bincount(group_of[keep], minlength=n_groups)
        stop = np.cumsum(counts)
        groups = Groups(groups.row[keep], groups.ts[keep], groups.off[keep], stop - counts, stop, groups.keys,
                        groups.partitions)
    live = np.flatnonzero(groups.stop > groups.start)
    if not len(live):
        return Folded([], [], [])
    block.take(live)
    groups = Groups(groups.row, groups.ts, groups.off, groups.start[live], groups.stop[live],
                    [groups.keys[g] for g in live.tolist()], [groups.partitions[g] for g in live.tolist()])
    last = groups.stop - 1  # each state's newest new event
    applied = np.maximum(block.applied, np.maximum.reduceat(groups.off, groups.start))
    t, o = groups.ts[last], groups.off[last]
    no_row = np.frombuffer(block.buf, np.uint8)[block.json_at] == ord("n")  # the row JSON is null
    newer = no_row | (t > block.ts) | ((t == block.ts) & (o > block.offset))
    ts = np.where(newer, t, block.ts)
    offset = np.where(newer, o, block.offset)
    row_cols = [values[f.name] for f in view.row_features]
    buf = block.buf
    if row_cols:
        rows_json = [orjson.dumps([c[i] for c in row_cols]) if new else buf[a : a + size]  # a state's own row, or its kept one
                     for new, i, a, size in zip(newer.tolist(), groups.row[last].tolist(), block.json_at.tolist(),
                                                block.row_size.tolist())]
    else:  # no row features: every row is the empty list
        rows_json = [_NO_ROW] * len(live)
    overflow_in = block.overflows(np.arange(len(live)))
    items_in = _items_in(block, codec)
    batch = _Columns(values)
    packed_out: list[_SetOut] = []
    tables_out: list[tuple[_SetOut, np.ndarray | None]] = []
    overflow_out: dict[int, list[list[list[Any]]]] = {}
    table = 0
    for k, (tset, bound) in enumerate(zip(sets, bounds)):
        tile = LIFETIME_TILE_MS if bound.fold else tset.tile_ms
        low = -((-(ts - bound.shift_ms)) // tile) - 1 - bound.back  # per state: the lowest tile kept
        at = _set_rows(tset, groups, batch)
        packed_out.append(_fold_packed(block, k, len(sets), tset, bound, low, groups, at, batch, overflow_in, overflow_out))
        for stat in tset.per_tile_fields:
            tables_out.append(_fold_table(block, items_in, table, stat, tset, bound, low, groups, at, batch))
            table += 1
    blobs = _assemble(codec, applied, ts, offset, rows_json, overflow_out, packed_out, tables_out, len(sets))
    return Folded(live.tolist(), applied.tolist(), blobs)


class _Items:
    """The item tables of states: each table's row counts per state, word positions and values."""

    def __init__(self, counts: np.ndarray, at: np.ndarray, values: list[np.ndarray | None]) -> None:
        self.counts = counts
        """(states, tables) rows per table."""
        self.at = at
        """(states, tables) word index of each table."""
        self.values = values
        """Per table, its values of every state, state after state (None: count_distinct, no values)."""


def _items_in(block: StateBlock, codec: StateCodec) -> _Items:
    tables = codec.tables
    counts = block.table_counts
    words = counts * np.array([ITEM_COLUMNS[s] for s in tables], dtype=np.int64)
    at = block.items_at[:, None] + np.cumsum(words, axis=1) - words
    with_values = np.array([s != "d" for s in tables], dtype=bool)
    value_counts = counts * with_values  # values of each table, per state
    if not value_counts.any():
        return _Items(counts, at, [None if s == "d" else np.empty(0, dtype=object) for s in tables])
    has = np.flatnonzero(block.items_size > 0)
    texts = block.json(block.json_at[has] + block.row_size[has] + block.overflow_size[has], block.items_size[has])
    flat = np.empty(int(value_counts.sum()), dtype=object)
    flat[:] = list(itertools.chain.from_iterable(orjson.loads(b"[" + b",".join(texts) + b"]")))
    state_base = np.cumsum(value_counts.sum(axis=1)) - value_counts.sum(axis=1)
    within = np.cumsum(value_counts, axis=1) - value_counts  # where each table's values start in its state's
    values: list[np.ndarray | None] = []
    for t, stat in enumerate(tables):
        values.append(None if stat == "d" else flat[word_ranges(state_base + within[:, t], counts[:, t])])
    return _Items(counts, at, values)


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
                got = np.fromiter(map(operator.is_not, col, itertools.repeat(None)), dtype=bool, count=len(col))
            elif kind == "true":
                got = np.fromiter(map(operator.is_, col, itertools.repeat(True)), dtype=bool, count=len(col))
            elif kind == "float":
                got = np.array(col, dtype=np.float64)  # None becomes NaN (such rows are not taken)
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


def _owner(groups: Groups, at: np.ndarray) -> np.ndarray:
    """The group of each position (in group order)."""
    return np.searchsorted(groups.start, at, side="right") - 1


def _fold_packed(block: StateBlock, k: int, n_sets: int, tset: TileSet, bound: Bounds, low: np.ndarray, groups: Groups,
                 at: np.ndarray, batch: _Columns, overflow_in: dict[int, list[list[list[Any]]]],
                 overflow_out: dict[int, list[list[list[Any]]]]) -> _SetOut:
    """The numeric tiles of set `k`: stored rows and the batch's merged per tile (count, exact
    sums, min, max); the third and further terms of a sum go to `overflow_out`."""
    stats = tset.packed
    n = len(block.applied)
    width = row_width(stats)
    if not stats:
        return _SetOut(np.zeros((0, width)), np.zeros(n, np.int64))
    cols = columns(stats)
    counts = block.counts[:, k]
    floats = np.frombuffer(block.buf, "<f8")
    parts = [floats[word_ranges(block.set_at[:, k], block.set_words[:, k])].reshape(-1, width)]
    owners = [np.repeat(np.arange(n), counts)]
    extra = [(s, _neutral_row(stats, term[0], cols[term[1]], term[j : j + 2]))
             for s, per_set in overflow_in.items() for term in per_set[k] for j in range(2, len(term), 2)]
    if extra:
        parts.append(np.array([r for _, r in extra], dtype="<f8"))
        owners.append(np.array([s for s, _ in extra], dtype=np.int64))
    if len(at):  # the batch's rows: one per event (a tile's count 1, its value as sum, square, min, max)
        new = np.zeros((len(at), width), dtype="<f8")
        new[:, 0] = -((-groups.ts[at]) // tset.tile_ms) - 1
        x = batch.floats(tset.column)[groups.row[at]] if set(stats) - {"c"} else np.zeros(0)
        for st, c in cols.items():
            if st == "c":
                new[:, c] = 1
            elif st == "q":
                with np.errstate(over="ignore"):  # the square of a value over ~1e154 is inf, as the sum of squares is
                    new[:, c] = x * x
            else:
                new[:, c] = x
        parts.append(new)
        owners.append(_owner(groups, at))
    rows = np.concatenate(parts)
    owner = np.concatenate(owners)
    idx = rows[:, 0].copy()
    below = idx < low[owner]
    if bound.fold:
        idx[below & (idx != LIFETIME_BASE_INDEX)] = LIFETIME_BASE_INDEX
    else:
        rows, owner, idx = rows[~below], owner[~below], idx[~below]
    order = sort_order(idx.astype(np.int64), owner)  # tile indices are whole numbers
    rows, owner, idx = rows[order], owner[order], idx[order]
    m = len(rows)
    if not m:
        return _SetOut(np.zeros((0, width)), np.zeros(n, np.int64))
    first = np.flatnonzero(np.append(True, (owner[1:] != owner[:-1]) | (idx[1:] != idx[:-1])))
    stop = np.append(first[1:], m).astype(np.int64)
    merged = np.zeros((len(first), width), dtype="<f8")
    merged[:, 0] = idx[first]
    tile_owner = owner[first]
    more_rows: dict[int, list[list[Any]]] = {}
    for st, c in cols.items():
        if st == "c":
            merged[:, c] = np.add.reduceat(rows[:, c], first)
        elif st == "m":
            merged[:, c] = np.minimum.reduceat(rows[:, c], first)
        elif st == "M":
            merged[:, c] = np.maximum.reduceat(rows[:, c], first)
        else:  # exact sum of every term (hi, lo) of the tile's rows
            hi, lo, more = exact_sums(rows[:, c : c + 2].ravel(), 2 * first, 2 * stop)
            merged[:, c], merged[:, c + 1] = hi, lo
            for t, xs in more.items():
                more_rows.setdefault(t, []).append([int(merged[t, 0]), st, *xs])
    for t in sorted(more_rows):  # per state and set: by tile, then statistic
        overflow_out.setdefault(int(tile_owner[t]), [[] for _ in range(n_sets)])[k].extend(more_rows[t])
    return _SetOut(merged, np.bincount(tile_owner, minlength=n))


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


def _fold_table(block: StateBlock, items: _Items, table: int, stat: str, tset: TileSet, bound: Bounds, low: np.ndarray,
                groups: Groups, at: np.ndarray, batch: _Columns) -> tuple[_SetOut, np.ndarray | None]:
    """One item table (first / last / last_n / count_distinct) of every state merged with the
    batch's events: sorted by state and tile, each statistic keeping what it keeps. Returns
    the new rows and, but for count_distinct, their values."""
    n = len(block.applied)
    width = ITEM_COLUMNS[stat]
    old_counts = items.counts[:, table]
    old_rows = block.words[word_ranges(items.at[:, table], old_counts * width)].reshape(-1, width)
    old_owner = np.repeat(np.arange(n), old_counts)
    owner = _owner(groups, at)
    vals = batch.objects(tset.column)[groups.row[at]]
    idx = -((-groups.ts[at]) // tset.tile_ms) - 1
    if stat == "d":
        hashes = _value_hashes(vals)
        tile = np.concatenate([old_rows[:, 0], idx])
        key = np.concatenate([old_rows[:, 1], hashes])
        owners = np.concatenate([old_owner, owner])
        tile = _trimmed(tile, owners, low, bound)
        keep = tile != _DROP
        tile, key, owners = tile[keep], key[keep], owners[keep]
        order = sort_order(key.view(np.uint64), tile, owners)
        tile, key, owners = tile[order], key[order], owners[order]
        new = _run_starts(owners, tile, key)
        tile, key, owners = tile[new], key[new], owners[new]
        pick = _rank_in_runs(owners, tile) < DISTINCT_KEEP
        rows = np.stack([tile[pick], key[pick]], axis=1)
        return _SetOut(rows, np.bincount(owners[pick], minlength=n)), None
    old_vals = items.values[table]
    assert old_vals is not None
    tile = np.concatenate([old_rows[:, 0], idx])
    t = np.concatenate([old_rows[:, 1], groups.ts[at]])
    o = np.concatenate([old_rows[:, 2], groups.off[at]])
    v = np.concatenate([old_vals, vals])
    owners = np.concatenate([old_owner, owner])
    tile = _trimmed(tile, owners, low, bound)
    keep = tile != _DROP
    tile, t, o, v, owners = tile[keep], t[keep], o[keep], v[keep], owners[keep]
    order = sort_order(o, t, tile, owners)
    tile, t, o, v, owners = tile[order], t[order], o[order], v[order], owners[order]
    if stat == "f":  # the oldest of each tile
        pick = _run_starts(owners, tile)
    elif stat == "l":  # the newest of each tile
        pick = _run_starts(owners[::-1], tile[::-1])[::-1]
    else:  # the k newest of each tile
        pick = _rank_in_runs(owners[::-1], tile[::-1])[::-1] < tset.last_n
    rows = np.stack([tile[pick], t[pick], o[pick]], axis=1)
    return _SetOut(rows, np.bincount(owners[pick], minlength=n)), v[pick]


def _assemble(codec: StateCodec, applied: np.ndarray, ts: np.ndarray, offset: np.ndarray, rows_json: list[bytes],
              overflow: dict[int, list[list[list[Any]]]], packed: list[_SetOut],
              tables: list[tuple[_SetOut, np.ndarray | None]], n_sets: int) -> list[bytes]:
    """The encoded states (`featurestore.online.state.encode_state`'s bytes), built in one
    buffer: headers and JSON per state, the binary rows copied by numpy."""
    n = len(applied)
    items_json = _items_json(tables, n)
    overflow_json = [orjson.dumps(overflow[s]) if s in overflow and any(overflow[s]) else b"" for s in range(n)] \
        if overflow else [b""] * n
    fixed = np.zeros(n, dtype=_FIXED_DTYPE)
    fixed["magic"] = MAGIC
    fixed["row"] = np.fromiter(map(len, rows_json), np.int64, n)
    fixed["overflow"] = np.fromiter(map(len, overflow_json), np.int64, n)
    fixed["items"] = np.fromiter(map(len, items_json), np.int64, n)
    fixed["applied"], fixed["ts"], fixed["offset"] = applied, ts, offset
    all_counts = [p.counts for p in packed] + [out.counts for out, _ in tables]
    set_counts = np.stack(all_counts, axis=1).astype("<u4") if all_counts else np.zeros((n, 0), "<u4")
    heads_fixed = np.concatenate([fixed.view(np.uint8).reshape(n, -1), set_counts.view(np.uint8).reshape(n, -1)], axis=1)
    head_size = FIXED.size + codec.counts_size + fixed["row"].astype(np.int64) + fixed["overflow"] + fixed["items"]
    pads = map(_PADS.__getitem__, (padded(head_size) - head_size).tolist())
    fixed_bytes = heads_fixed.tobytes()
    step = heads_fixed.shape[1]
    fixed_parts = map(fixed_bytes.__getitem__, map(slice, range(0, n * step, step), range(step, n * step + 1, step)))
    heads = b"".join(itertools.chain.from_iterable(zip(fixed_parts, rows_json, overflow_json, items_json, pads)))
    sizes: list[np.ndarray] = [np.asarray(padded(head_size) // 8)]  # words of each piece of each state, in state order
    sources = [np.frombuffer(heads, "<i8")]
    for k, p in enumerate(packed):
        sizes.append(p.counts * (codec.widths[k] // 8))
        sources.append(p.rows.view("<i8").ravel())
    for out, _ in tables:
        sizes.append(out.counts * out.rows.shape[1])
        sources.append(out.rows.astype("<i8").ravel())
    size = np.stack(sizes, axis=1)
    ends = np.cumsum(size.ravel()).reshape(size.shape)
    dest = ends - size
    words = np.empty(int(size.sum()), dtype="<i8")
    for piece, source in enumerate(sources):
        words[word_ranges(dest[:, piece], size[:, piece])] = source
    data = words.tobytes()
    bounds = (ends[:, -1] * 8).tolist()
    return [data[a:b] for a, b in zip([0, *bounds[:-1]], bounds)]


def _items_json(tables: list[tuple[_SetOut, np.ndarray | None]], n: int) -> list[bytes]:
    """Each state's item values JSON: its values of every table, table after table (b"": none)."""
    with_values = [(out.counts, vals) for out, vals in tables if vals is not None]
    if not with_values:
        return [b""] * n
    counts = np.stack([c for c, _ in with_values], axis=1)
    per_state = counts.sum(axis=1)
    state_end = np.cumsum(per_state)
    state_base = state_end - per_state
    within = np.cumsum(counts, axis=1) - counts
    flat = np.empty(int(state_end[-1]) if n else 0, dtype=object)
    for t, (table_counts, vals) in enumerate(with_values):
        flat[word_ranges(state_base + within[:, t], table_counts)] = vals
    values = flat.tolist()
    return [orjson.dumps(values[a:b]) if b > a else b"" for a, b in zip(state_base.tolist(), state_end.tolist())]


_DROP = np.iinfo(np.int64).min
_NO_ROW = orjson.dumps([])
_PADS = [b" " * p for p in range(8)]
"""Spaces padding a state's head to whole 8-byte words."""


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


def _value_hashes(values: np.ndarray) -> np.ndarray:
    """`value_hash` of each value (int64 bits), each distinct value hashed once: strings
    found distinct in C; other values keyed by (type, value), as 1 and 1.0 hash apart."""
    if set(map(type, values.tolist())) == {str}:
        codes, uniques = pd.factorize(values)
        distinct = np.fromiter(map(value_hash, uniques.tolist()), dtype=np.uint64, count=len(uniques))
        return distinct.view(np.int64)[codes]
    return np.fromiter(map(_Hashes(), values), dtype=np.uint64, count=len(values)).view(np.int64)


class _Hashes(dict[Any, int]):
    """64-bit hashes of values' JSON text, each distinct value hashed once per batch."""

    def __call__(self, value: Any) -> int:
        key = (type(value), value)
        h = self.get(key)
        if h is None:
            h = self[key] = value_hash(value)
        return h

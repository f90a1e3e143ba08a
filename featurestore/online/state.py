"""The online state of one entity of a view from one source partition (storage layout 4), and
how a batch of events folds into it (pure).

A source partition has one consumer at a time, so the state an entity holds from one
partition is a deterministic function of that partition's events up to an offset: the
processor owning the partition computes it in Python, vectorised over a batch, and writes
it whole, guarded by that offset (a replay or a former owner writes nothing older). Redis
only stores it; reads merge an entity's states from its partitions.

A state is one value: `MAGIC`, the length of a JSON header, the header (padded to 8 bytes),
then little-endian float64 rows of the packed tile sets (`featurestore.online.packed`), set
after set. The header is
`[applied, ts, offset, row, rows per set, overflow per set, tiles per set]`:

- applied: the highest offset of this partition applied to the entity;
- ts, offset: the newest event (event time, offset), whose `row` (row feature values,
  JSON) the entity serves;
- per packed set: its row count and the third and further terms of its exact sums
  `[[index, stat, x3, ...], ...]`;
- per set with per-tile statistics, its tiles `[[index, last, first, newest, distinct], ...]`
  sorted by index: last / first `[ts, offset, value]` (or null), newest the k newest
  `[ts, offset, value]`, newest first, distinct the sorted 64-bit hashes of the distinct
  values (the `DISTINCT_KEEP` smallest: exact up to that many, an estimate beyond).

Every tile a read can still reach from the newest event is kept; older ones are dropped,
or folded into the base tile for lifetime sets. Sums are canonical expansions of their
exact value and tiles are sorted, so the same events give the same bytes however they were
batched (stream, backfill and rebuild agree byte for byte).
"""

from __future__ import annotations

import functools
import gc
import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

import numpy as np
import orjson

from featurestore.online.layout import LIFETIME_EXTRA_TILES, TileSet
from featurestore.online.packed import columns, row_width
from featurestore.online.sums import exact_sums
from featurestore.plan import ViewPlan
from featurestore.plan.windows import LIFETIME_BASE_INDEX, LIFETIME_TILE_MS

P = ParamSpec("P")
R = TypeVar("R")
MAGIC = b"F4"
#: Distinct values kept per tile (their smallest hashes): count_distinct is exact up to this
#: many distinct values in a window, a k-minimum-values estimate beyond (standard error ~3%).
DISTINCT_KEEP = 1024
_HEAD = struct.Struct("<2sI")


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
    tiles: list[Any] = field(default_factory=list)
    """Per tile set: its tiles as stored ([[index, last, first, newest, distinct], ...]), or,
    once folded, a dict tile index -> [last, first, newest, distinct]."""


def row_bytes(sets: Sequence[TileSet]) -> list[int]:
    """Bytes of one packed row of each tile set (what decoding a state needs)."""
    return [8 * row_width(s.packed) for s in sets]


def empty_state(n_sets: int) -> PartState:
    return PartState(packed=[b""] * n_sets, overflow=[[] for _ in range(n_sets)], tiles=[[] for _ in range(n_sets)])


def decode_state(blob: bytes, widths: Sequence[int]) -> PartState:
    """A stored state (see the module docstring); `widths`: `row_bytes` of the view's sets."""
    head, packed = packed_rows(blob, widths)
    return PartState(head[0], head[1], head[2], head[3], packed, head[5], head[6])


def packed_rows(blob: bytes, widths: Sequence[int]) -> tuple[list[Any], list[bytes]]:
    """The header and, per tile set, the raw packed rows of a stored state."""
    magic, size = _HEAD.unpack_from(blob)
    if magic != MAGIC:
        raise ValueError("not an online state of layout 4")
    start = _HEAD.size
    head = orjson.loads(blob[start : start + size])
    at = _padded(start + size)
    out = []
    for width, n in zip(widths, head[4]):
        end = at + n * width
        out.append(blob[at:end])
        at = end
    return head, out


def tile_dict(tiles: Any) -> dict[int, list[Any]]:
    """A set's tiles as a dict (index -> [last, first, newest, distinct])."""
    return tiles if isinstance(tiles, dict) else {t[0]: t[1:] for t in tiles}


def encode_state(state: PartState, widths: Sequence[int]) -> bytes:
    tiles = [[[idx, *t[idx]] for idx in sorted(t)] if isinstance(t, dict) else t for t in state.tiles]
    head = orjson.dumps([state.applied, state.ts, state.offset, state.row,
                         [len(p) // w for p, w in zip(state.packed, widths)], state.overflow, tiles])
    pad = _padded(_HEAD.size + len(head)) - _HEAD.size - len(head)
    return b"".join([_HEAD.pack(MAGIC, len(head)), head, b" " * pad, *state.packed])


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


def collector_paused(fn: Callable[P, R]) -> Callable[P, R]:
    """Run `fn` with the cyclic garbage collector paused: a batch allocates many small lists
    that all die with it (freed by reference counting), and collections triggered by them
    would scan every live object of the process again and again (measured: 3x the fold)."""
    @functools.wraps(fn)
    def paused(*args: P.args, **kwargs: P.kwargs) -> R:
        was = gc.isenabled()
        gc.disable()
        try:
            return fn(*args, **kwargs)
        finally:
            if was:
                gc.enable()
    return paused


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
    out = [PartState(s.applied, s.ts, s.offset, s.row, list(s.packed), list(s.overflow), list(s.tiles)) for s in states]
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
    for k, (tset, bound) in enumerate(zip(sets, bounds)):
        tile = LIFETIME_TILE_MS if bound.fold else tset.tile_ms
        low = -((-(newest - bound.shift_ms)) // tile) - 1 - bound.back  # per group: the lowest tile kept
        rows_k = _set_rows(tset, groups, group_of, values)
        if tset.packed:
            _fold_packed(out, k, tset, bound, low, groups, rows_k, values, live)
        if tset.per_tile_fields:
            _fold_tiles(out, k, tset, bound, low, groups, rows_k, values, live)
    return out


def _set_rows(tset: TileSet, groups: Groups, group_of: np.ndarray, values: dict[str, list[Any]]) -> np.ndarray:
    """Positions (in group order) of the rows a tile set takes: a value, and the filter True."""
    col = values[tset.column]
    rows = groups.row.tolist()
    if tset.where is None:
        keep = [col[i] is not None for i in rows]
    else:
        flag = values[tset.where]
        keep = [col[i] is not None and flag[i] is True for i in rows]
    return np.flatnonzero(np.fromiter(keep, bool, len(rows)))


def _fold_packed(out: list[PartState], k: int, tset: TileSet, bound: Bounds, low: np.ndarray, groups: Groups,
                 at: np.ndarray, values: dict[str, list[Any]], live: np.ndarray) -> None:
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
        col = values[tset.column]
        x = np.array([col[i] for i in groups.row[at].tolist()], dtype=np.float64) if set(stats) - {"c"} else None
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


_LAST, _FIRST, _NEWEST, _DISTINCT = 0, 1, 2, 3


def _fold_tiles(out: list[PartState], k: int, tset: TileSet, bound: Bounds, low: np.ndarray, groups: Groups,
                at: np.ndarray, values: dict[str, list[Any]], live: np.ndarray) -> None:
    """first / last / last_n / count_distinct tiles. The batch's tiles (runs of one group and
    tile index) are found with numpy; each is merged into its group's stored tile in Python."""
    stats = set(tset.per_tile_fields)
    keep_n = tset.last_n
    col = values[tset.column]
    owner = _owner(groups, at)
    idx = -((-groups.ts[at]) // tset.tile_ms) - 1
    n = len(at)
    first = np.flatnonzero(np.append(True, (owner[1:] != owner[:-1]) | (idx[1:] != idx[:-1]))) if n else np.zeros(0, np.int64)
    stop = np.append(first[1:], n).astype(np.int64)
    ts, off = groups.ts[at].tolist(), groups.off[at].tolist()
    vals = [col[i] for i in groups.row[at].tolist()]
    starts, ends = first.tolist(), stop.tolist()
    lasts = [[ts[j], off[j], vals[j]] for j in (stop - 1).tolist()] if "l" in stats else [None] * len(starts)
    firsts = [[ts[j], off[j], vals[j]] for j in starts] if "f" in stats else [None] * len(starts)
    if keep_n:
        newest = [[[ts[j], off[j], vals[j]] for j in range(b - 1, max(a, b - keep_n) - 1, -1)] for a, b in zip(starts, ends)]
    else:
        newest = [[] for _ in starts]
    if "d" in stats:
        hash_of = _Hashes()
        hashes = [hash_of(v) for v in vals]
        distinct = [sorted(set(hashes[a:b]))[:DISTINCT_KEEP] for a, b in zip(starts, ends)]
    else:
        distinct = [[] for _ in starts]
    run_owner, run_idx = owner[first].tolist(), idx[first].tolist()
    by_group: dict[int, list[int]] = {}
    for r, g in enumerate(run_owner):
        by_group.setdefault(g, []).append(r)
    lows = low.tolist()
    for g in np.flatnonzero(live).tolist():
        s = out[g]
        tiles = dict(tile_dict(s.tiles[k]))
        for r in by_group.get(g, ()):
            i = run_idx[r]
            batch = [lasts[r], firsts[r], newest[r], distinct[r]]
            old = tiles.get(i)
            tiles[i] = batch if old is None else merge_tile(old, batch, keep_n)
        lowest = lows[g]
        if tiles and min(tiles) < lowest:
            for i in sorted(i for i in tiles if i < lowest and i != LIFETIME_BASE_INDEX):
                entry = tiles.pop(i)
                if bound.fold:
                    base = tiles.get(LIFETIME_BASE_INDEX)
                    tiles[LIFETIME_BASE_INDEX] = entry if base is None else merge_tile(base, entry, keep_n)
        s.tiles[k] = tiles


def merge_tile(a: list[Any], b: list[Any], keep_n: int) -> list[Any]:
    """Two tiles' per-tile statistics as one: the newer last, the older first, the newest
    values, the union of the distinct hashes (the smallest `DISTINCT_KEEP`)."""
    last = a[_LAST] if b[_LAST] is None or (a[_LAST] is not None and a[_LAST][:2] > b[_LAST][:2]) else b[_LAST]
    first = a[_FIRST] if b[_FIRST] is None or (a[_FIRST] is not None and a[_FIRST][:2] < b[_FIRST][:2]) else b[_FIRST]
    newest = sorted(a[_NEWEST] + b[_NEWEST], key=_order, reverse=True)[:keep_n] if keep_n else []
    distinct = sorted(set(a[_DISTINCT]) | set(b[_DISTINCT]))[:DISTINCT_KEEP] if a[_DISTINCT] or b[_DISTINCT] else []
    return [last, first, newest, distinct]


def _order(item: list[Any]) -> tuple[int, int]:
    return item[0], item[1]


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


def distinct_count(hash_lists: Sequence[Sequence[int]]) -> int:
    """count_distinct of tiles from their kept hashes: exact while no tile and no union is
    over `DISTINCT_KEEP`, else the k-minimum-values estimate (k - 1) / (k-th smallest / 2^64)."""
    union: set[int] = set()
    full = False
    for hs in hash_lists:
        union.update(hs)
        full = full or len(hs) >= DISTINCT_KEEP
    if not full and len(union) < DISTINCT_KEEP:
        return len(union)
    kth = sorted(union)[DISTINCT_KEEP - 1]
    return round((DISTINCT_KEEP - 1) / ((kth + 1) / 2.0**64))


"""The online state of whole entities computed at once from their complete history (pure).

The streaming writer merges each batch into the stored state with one Lua call per entity.
When every event of an entity is at hand and the store holds nothing for it (a rebuild),
its final state can be computed directly, vectorised over all the entities of a batch:

- the newest event by (event time, partition, offset): `_ts`, `_p`, `_o` and the row features;
- per source partition the highest offset applied (`_a:<p>`): what the script's marks say
  after streaming the same events, so a processor started afterwards skips them;
- per tile set the statistics of every tile a read can still reach from the newest event.
  Older tiles are dropped, or folded into the base tile for lifetime sets: what the
  script's trim does. Exact sums come out as the same canonical expansion, so the packed
  rows are the bytes streaming writes once it has compacted and trimmed.

Rows must be sorted by (join keys, event time, partition, offset), hold only events that
were applied online (not late), and hold all of an entity's events. `featurestore.runtime.rebuild`
reads them from the history and writes the fields this module computes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.online.keys import (
    LAYOUT_FIELD,
    LAYOUT_VERSION,
    overflow_field,
    packed_field,
    row_field,
    tile_field,
)
from featurestore.online.layout import LIFETIME_EXTRA_TILES, TileSet, tile_sets
from featurestore.online.packed import canonical_expansion, columns, row_width
from featurestore.plan import ViewPlan
from featurestore.plan.windows import LIFETIME_BASE_INDEX

_CASCADE_MAX = 64
"""Runs up to this long are summed exactly by vectorised TwoSum passes (longer: math.fsum)."""


@dataclass
class EntityState:
    """The hash fields of one entity and the values of its count_distinct tiles."""

    key: tuple[Any, ...]
    """The join key values."""
    fields: list[str | bytes] = field(default_factory=list)
    """Its hash fields: name, value, name, value, ..."""
    distinct: dict[str, list[str]] = field(default_factory=dict)
    """Hash field of a count_distinct tile -> the JSON values its HyperLogLog holds."""


def entity_starts(table: pa.Table, keys: list[str]) -> np.ndarray:
    """Index of the first row of each entity in rows sorted by join keys."""
    n = table.num_rows
    changed = np.zeros(n, dtype=bool)
    if n:
        changed[0] = True
    for name in keys:
        col = table[name].combine_chunks()
        changed[1:] |= _numpy(pc.not_equal(col.slice(1), col.slice(0, n - 1)))
    return np.flatnonzero(changed)


def entity_states(view: ViewPlan, table: pa.Table, skew_ms: int) -> list[EntityState]:
    """The state of every entity in `table` (columns: join keys, history columns, `_ts`,
    `_partition`, `_offset`; sorted and complete as the module says)."""
    n = table.num_rows
    if n == 0:
        return []
    keys = [k.name for k in view.join_keys]
    starts = entity_starts(table, keys)
    ends = np.append(starts[1:], n)
    entity = np.repeat(np.arange(len(starts)), ends - starts)
    ts = _numpy(table["_ts"]).astype(np.int64)
    part = _numpy(table["_partition"]).astype(np.int64)
    off = _numpy(table["_offset"]).astype(np.int64)
    newest = ends - 1
    key_values = [table[k].take(pa.array(starts)).to_pylist() for k in keys]
    states = [EntityState(vals) for vals in zip(*key_values)]

    newest_ts = ts[newest]
    meta = {
        LAYOUT_FIELD: [LAYOUT_VERSION] * len(states),
        "_ts": _ints(newest_ts),
        "_p": _ints(part[newest]),
        "_o": _ints(off[newest]),
    }
    for f in view.row_features:
        meta[row_field(f.name)] = [json_text(v) for v in table[f.name].take(pa.array(newest)).to_pylist()]
    for name, values in meta.items():
        for state, value in zip(states, values):
            state.fields += (name, value)
    _marks(states, entity, part, off)
    slack = skew_ms + (view.allowed_lateness_ms or 0)
    for tset in tile_sets(view):
        _tile_set(states, tset, table, entity, ts, part, off, newest_ts, skew_ms, slack)
    return states


def _marks(states: list[EntityState], entity: np.ndarray, part: np.ndarray, off: np.ndarray) -> None:
    """`_a:<p>`: the highest offset of each entity's events from partition p."""
    order = np.lexsort((off, part, entity))
    e, p = entity[order], part[order]
    last = np.flatnonzero(np.append((e[1:] != e[:-1]) | (p[1:] != p[:-1]), True))
    for i, pi, o in zip(e[last].tolist(), p[last].tolist(), off[order][last].tolist()):
        states[i].fields += (f"_a:{pi}", str(o))


def _tile_set(states: list[EntityState], tset: TileSet, table: pa.Table, entity: np.ndarray, ts: np.ndarray,
              part: np.ndarray, off: np.ndarray, newest_ts: np.ndarray, skew_ms: int, slack_ms: int) -> None:
    col = table[tset.column]
    ok = _numpy(pc.is_valid(col))
    if tset.where is not None:  # the filter must be exactly True, as for the streaming writer
        flag = table[tset.where]
        ok &= _numpy(pc.fill_null(flag, False)) if pa.types.is_boolean(flag.type) else False
    rows = np.flatnonzero(ok)
    if not len(rows):
        return
    tile = tset.tile_ms
    e = entity[rows]
    idx = -((-ts[rows]) // tile) - 1
    if tset.lifetime:  # what no allowed event can reach any more is folded into the base tile
        shift, back = slack_ms, 1 + LIFETIME_EXTRA_TILES
    else:
        shift, back = skew_ms, tset.max_window_ms // tile  # type: ignore[operator]
    lowest = -((-(newest_ts[e] - shift)) // tile) - 1 - back
    if tset.lifetime:
        idx = np.where(idx < lowest, LIFETIME_BASE_INDEX, idx)
    else:
        keep = idx >= lowest
        rows, e, idx = rows[keep], e[keep], idx[keep]
        if not len(rows):
            return
    # tiles: runs of equal (entity, index); events are in time order within an entity
    first = np.flatnonzero(np.append(True, (e[1:] != e[:-1]) | (idx[1:] != idx[:-1])))
    stop = np.append(first[1:], len(rows))
    tile_entity, tile_index = e[first], idx[first]
    if tset.packed:
        values = _numpy(pc.cast(col.take(pa.array(rows)), pa.float64()))
        _packed(states, tset, values, first, stop, tile_entity, tile_index)
    if tset.per_tile_fields:
        _per_tile(states, tset, col, rows, ts, part, off, first, stop, tile_entity, tile_index)


def _packed(states: list[EntityState], tset: TileSet, values: np.ndarray, first: np.ndarray, stop: np.ndarray,
            tile_entity: np.ndarray, tile_index: np.ndarray) -> None:
    stats = tset.packed
    cols = columns(stats)
    table = np.empty((len(first), row_width(stats)), dtype="<f8")
    table[:, 0] = tile_index
    extra: dict[int, list[str]] = {}
    for st in stats:
        c = cols[st]
        if st == "c":
            table[:, c] = stop - first
        elif st == "m":
            table[:, c] = np.minimum.reduceat(values, first)
        elif st == "M":
            table[:, c] = np.maximum.reduceat(values, first)
        else:
            hi, lo, more = exact_sums(values if st == "s" else values * values, first, stop)
            table[:, c], table[:, c + 1] = hi, lo
            for g, terms in more.items():
                extra.setdefault(int(tile_entity[g]), []).append(
                    " ".join([_fmt(float(tile_index[g])), st, *(_fmt(t) for t in terms)]))
    name, over = packed_field(tset.prefix), overflow_field(tset.prefix)
    blob = table.tobytes()
    width = table.shape[1] * 8
    bounds = np.flatnonzero(np.append(True, tile_entity[1:] != tile_entity[:-1]))
    ends = np.append(bounds[1:], len(first))
    for i, a, b in zip(tile_entity[bounds].tolist(), bounds.tolist(), ends.tolist()):
        states[i].fields += (name, blob[a * width : b * width])
    for i, lines in extra.items():
        states[i].fields += (over, "\n".join(sorted(lines)))


def exact_sums(values: np.ndarray, first: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[int, list[float]]]:
    """Per run [first, stop) of `values`, the canonical expansion of its exact sum (the
    correctly rounded sum, the rounded remainder, ...): the first two terms as arrays, the
    further ones per run that has them. The same terms as tiles.lua keeps, whatever the batching."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf / nan sums stay inf / nan, as in the script
        return _exact_sums(values, first, stop)


def _exact_sums(values: np.ndarray, first: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[int, list[float]]]:
    counts = stop - first
    hi = np.zeros(len(first))
    lo = np.zeros(len(first))
    one = counts == 1
    hi[one] = values[first[one]] + 0.0  # the script adds to a zero: -0.0 becomes 0.0
    two = np.flatnonzero(counts == 2)
    if len(two):  # two-sum: (a + b, its exact rounding error) is already canonical
        s, err = _two_sum(values[first[two]] + 0.0, values[first[two] + 1])
        hi[two] = s
        lo[two] = np.where(np.isfinite(s), err, 0.0) + 0.0
    more: dict[int, list[float]] = {}
    many = np.flatnonzero((counts > 2) & (counts <= _CASCADE_MAX))
    slow = np.flatnonzero(counts > _CASCADE_MAX)
    if len(many):
        h, lo_, exact = _cascade(values, first[many], counts[many])
        hi[many], lo[many] = h, lo_
        slow = np.concatenate([slow, many[~exact]])
    if len(slow):
        xs = values.tolist()
        finite = np.logical_and.reduceat(np.isfinite(values), first)[slow].tolist()
        for g, a, b, ok in zip(slow.tolist(), first[slow].tolist(), stop[slow].tolist(), finite):
            terms = canonical_expansion(xs[a:b]) if ok else [sum(xs[a:b])]  # inf / nan: no exact remainder
            hi[g] = terms[0] if terms else 0.0
            lo[g] = terms[1] if len(terms) > 1 else 0.0
            if len(terms) > 2:
                more[g] = terms[2:]
    return hi, lo, more


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a + b rounded, and its exact rounding error (Knuth's TwoSum)."""
    s = a + b
    bv = s - a
    return s, (a - (s - bv)) + (b - bv)


def _cascade(values: np.ndarray, first: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per run, (hi, lo) of its exact sum, and whether they are exact: the running sum p and
    the sum sigma of p's exact rounding errors, both by TwoSum; when sigma's own additions
    were exact, the sum is exactly p + sigma and TwoSum(p, sigma) is its canonical pair."""
    p = values[first] + 0.0
    sigma = np.zeros(len(first))
    exact = np.ones(len(first), dtype=bool)
    for k in range(1, int(counts.max())):
        active = np.flatnonzero(counts > k)
        p_k, err = _two_sum(p[active], values[first[active] + k])
        sigma_k, lost = _two_sum(sigma[active], err)
        p[active], sigma[active] = p_k, sigma_k
        exact[active] &= lost == 0
    hi, lo = _two_sum(p, sigma)
    return hi, lo + 0.0, exact & np.isfinite(hi)


def _per_tile(states: list[EntityState], tset: TileSet, col: pa.ChunkedArray, rows: np.ndarray, ts: np.ndarray,
              part: np.ndarray, off: np.ndarray, first: np.ndarray, stop: np.ndarray, tile_entity: np.ndarray,
              tile_index: np.ndarray) -> None:
    # each distinct value JSON-encoded once
    encoded = pc.dictionary_encode(col.take(pa.array(rows))).combine_chunks()
    code = _numpy(encoded.indices).astype(np.int64)
    text = [json_text(v) for v in encoded.dictionary.to_pylist()]
    src_ts, src_p, src_o = ts[rows], part[rows], off[rows]
    owners = [states[i].fields for i in tile_entity.tolist()]
    indexes = tile_index.tolist()
    for st in tset.per_tile_fields:
        names = [tile_field(tset.prefix, index, st) for index in indexes]
        if st == "l" or st == "f":
            at = stop - 1 if st == "l" else first
            order = [f"{t} {p} {o}" for t, p, o in zip(src_ts[at].tolist(), src_p[at].tolist(), src_o[at].tolist())]
            for fields, name, c, o in zip(owners, names, code[at].tolist(), order):
                fields += (name, text[c], name + "o", o)
        elif st == "n":  # the k newest, newest first
            kept = np.minimum(stop - first, tset.last_n)
            at = _ranges(stop - kept, kept)[::-1]
            items = [[t, p, o, text[c]] for t, p, o, c in
                     zip(src_ts[at].tolist(), src_p[at].tolist(), src_o[at].tolist(), code[at].tolist())]
            ends = np.cumsum(kept[::-1]).tolist()
            lists = [json_text(items[a:b]) for a, b in zip([0, *ends[:-1]], ends)][::-1]
            for fields, name, value in zip(owners, names, lists):
                fields += (name, value)
        elif st == "d":  # the distinct values of each tile, for its HyperLogLog
            tile_of_row = np.repeat(np.arange(len(first)), stop - first)
            pairs = np.unique(tile_of_row * len(text) + code)
            tiles, codes = pairs // len(text), (pairs % len(text)).tolist()
            bounds = np.append(np.flatnonzero(np.append(True, tiles[1:] != tiles[:-1])), len(pairs)).tolist()
            for i, name, a, b in zip(tile_entity.tolist(), names, bounds[:-1], bounds[1:]):
                states[i].fields += (name, "1")
                states[i].distinct[name] = [text[c] for c in codes[a:b]]


def _ranges(begin: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The indices begin[i] .. begin[i] + lengths[i] - 1 of every i, concatenated."""
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(begin - offsets, lengths) + np.arange(int(lengths.sum()))


def _fmt(x: float) -> str:
    """A number as tiles.lua writes it in the overflow field."""
    return "%d" % x if x == math.floor(x) and abs(x) < 1e15 else "%.17g" % x


def _ints(values: np.ndarray) -> list[str]:
    return [str(v) for v in values.tolist()]


def json_text(value: Any) -> str:
    """`value` as JSON text (a str: orjson's bytes results each keep a 4 KiB buffer)."""
    return orjson.dumps(value).decode()


def _numpy(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return col.to_numpy(zero_copy_only=False)


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

"""The script calls of one batch of a view's rows: per entity the tokens tiles.lua applies.

The batch is ordered once by (entity, source partition, event time, offset). Groups (an
entity's events from one partition), tiles (runs of one tile index within a group) and
their statistics (counts, exact sums, minima, maxima, first / last / newest values,
distinct values) are computed with numpy over the whole batch; only the tokens are
assembled per entity. tiles.lua's header documents the tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from featurestore.online.bulk import exact_sums, json_text
from featurestore.online.keys import row_field
from featurestore.online.layout import TileSet
from featurestore.online.packed import columns, row_width
from featurestore.plan import ViewPlan
from featurestore.records import ViewRows


@dataclass
class EntityPayload:
    """One entity's script call: its tokens, and the rows of each group (to resend after a
    'partial' reply)."""

    key: tuple[Any, ...]
    groups: dict[int, list[int]]
    """Source partition -> the row indices of its events, in (event time, offset) order."""
    tokens: list[Any]
    """The script's arguments: str, and bytes for packed rows."""


def build_payloads(view: ViewPlan, sets: Sequence[TileSet], rows: ViewRows,
                   selection: Sequence[int] | None = None) -> list[EntityPayload]:
    """The payloads of `rows` (or of the rows at `selection`), late rows left out (the
    writer ends each with the view's trim tokens)."""
    picked = np.arange(len(rows)) if selection is None else np.asarray(selection, dtype=np.int64)
    if rows.late:
        late = np.asarray(rows.late, dtype=bool)
        picked = picked[~late[picked]]
    if not len(picked):
        return []
    keys = rows.keys
    ids: dict[tuple[Any, ...], int] = {}
    entity = np.fromiter((ids.setdefault(keys[i], len(ids)) for i in picked.tolist()), np.int64, len(picked))
    ts = np.asarray(rows.ts, dtype=np.int64)[picked]
    part = np.asarray(rows.partition, dtype=np.int64)[picked]
    off = np.asarray(rows.offset, dtype=np.int64)[picked]
    order = np.lexsort((off, ts, part, entity))
    row, entity, ts, part, off = picked[order], entity[order], ts[order], part[order], off[order]
    n = len(row)
    start = np.flatnonzero(np.append(True, (entity[1:] != entity[:-1]) | (part[1:] != part[:-1])))
    stop = np.append(start[1:], n)
    tokens = _group_tokens(view, rows, row, ts, part, off, start, stop)  # per group, tile sets appended below
    for tset in sets:
        _tile_tokens(tokens, tset, rows, row, ts, part, off, start)

    out: list[EntityPayload] = []
    row_list = row.tolist()
    group_entity = entity[start].tolist()
    for g, (a, b, p) in enumerate(zip(start.tolist(), stop.tolist(), part[start].tolist())):
        if g == 0 or group_entity[g] != group_entity[g - 1]:
            payload = EntityPayload(keys[row_list[a]], {}, tokens[g])
            out.append(payload)
        else:
            payload.tokens += tokens[g]
        payload.groups[p] = row_list[a:b]
    return out


def _group_tokens(view: ViewPlan, rows: ViewRows, row: np.ndarray, ts: np.ndarray, part: np.ndarray, off: np.ndarray,
                  start: np.ndarray, stop: np.ndarray) -> list[list[Any]]:
    """Per group: G (partition, offsets) and R (the newest event's row features)."""
    first_off = np.minimum.reduceat(off, start).tolist()
    last_off = np.maximum.reduceat(off, start).tolist()
    newest = stop - 1
    newest_rows = row[newest].tolist()
    width = str(len(view.row_features))
    features = [(row_field(f.name), rows.values[f.name]) for f in view.row_features]
    out: list[list[Any]] = []
    for p, lo, hi, t, o, i in zip(part[start].tolist(), first_off, last_off, ts[newest].tolist(), off[newest].tolist(),
                                  newest_rows):
        tokens = ["G", str(p), str(lo), str(hi), "R", str(t), str(p), str(o), width]
        for name, values in features:
            tokens += (name, json_text(values[i]))
        out.append(tokens)
    return out


def _tile_tokens(out: list[list[Any]], tset: TileSet, rows: ViewRows, row: np.ndarray, ts: np.ndarray,
                 part: np.ndarray, off: np.ndarray, group_start: np.ndarray) -> None:
    """Append to each group's tokens those of one tile set: A (the packed statistics of its
    tiles), then per tile L / F / N / H (first / last / newest / distinct values)."""
    col = rows.values[tset.column]
    row_list = row.tolist()
    if tset.where is None:
        keep = [col[i] is not None for i in row_list]
    else:
        flag = rows.values[tset.where]
        keep = [col[i] is not None and flag[i] is True for i in row_list]
    at = np.flatnonzero(np.fromiter(keep, bool, len(row_list)))  # positions in batch order
    if not len(at):
        return
    group = np.searchsorted(group_start, at, side="right") - 1
    index = -((-ts[at]) // tset.tile_ms) - 1
    first = np.flatnonzero(np.append(True, (group[1:] != group[:-1]) | (index[1:] != index[:-1])))
    stop = np.append(first[1:], len(at))
    tile_group = group[first]
    if tset.packed:
        values = np.array([col[i] for i in row[at].tolist()], dtype=np.float64) if set(tset.packed) - {"c"} else None
        _packed(out, tile_group, index[first], tset, values, first, stop)
    if tset.per_tile_fields:
        tiles = [out[g] for g in tile_group.tolist()]  # each tile's group tokens
        _per_tile(tiles, [str(i) for i in index[first].tolist()], tset, col, row[at].tolist(), ts[at].tolist(),
                  part[at].tolist(), off[at].tolist(), first.tolist(), stop.tolist())


def _packed(out: list[list[Any]], tile_group: np.ndarray, tile_index: np.ndarray, tset: TileSet,
            values: np.ndarray | None, first: np.ndarray, stop: np.ndarray) -> None:
    """Per group, one A op: the rows of its tiles' packed statistics (a row per tile; sums
    whose exact value needs more than two terms get further rows with the other terms and
    neutral statistics), appended by the script to the stored rows."""
    stats = tset.packed
    cols = columns(stats)
    rows = np.zeros((len(first), row_width(stats)), dtype="<f8")
    rows[:, 0] = tile_index
    extra: dict[int, list[np.ndarray]] = {}
    for st in stats:
        c = cols[st]
        if st == "c":
            rows[:, c] = stop - first
        elif st == "m" or st == "M":
            assert values is not None
            rows[:, c] = (np.minimum if st == "m" else np.maximum).reduceat(values, first)
        else:
            assert values is not None
            hi, lo, more = exact_sums(values if st == "s" else values * values, first, stop)
            rows[:, c], rows[:, c + 1] = hi, lo
            for t, terms in more.items():
                for j in range(0, len(terms), 2):
                    row = _neutral_row(stats, float(tile_index[t]))
                    row[c : c + len(terms[j : j + 2])] = terms[j : j + 2]
                    extra.setdefault(t, []).append(row)
    blob = rows.tobytes()
    width = rows.shape[1] * 8
    head = ("A", tset.prefix, stats)
    starts = np.flatnonzero(np.append(True, tile_group[1:] != tile_group[:-1]))
    ends = np.append(starts[1:], len(first))
    for g, a, b in zip(tile_group[starts].tolist(), starts.tolist(), ends.tolist()):
        part = blob[a * width : b * width]
        n = b - a
        if extra:
            more_rows = [r for t in range(a, b) for r in extra.get(t, ())]
            if more_rows:
                part += np.concatenate(more_rows).tobytes()
                n += len(more_rows)
        out[g] += (*head, str(n), part)


def _neutral_row(stats: str, index: float) -> np.ndarray:
    """A row adding nothing to a tile: zero counts and sums, infinite min / max."""
    row = np.zeros(row_width(stats), dtype="<f8")
    row[0] = index
    cols = columns(stats)
    if "m" in cols:
        row[cols["m"]] = np.inf
    if "M" in cols:
        row[cols["M"]] = -np.inf
    return row


def _per_tile(tiles: list[list[Any]], tile_index: list[str], tset: TileSet, col: list[Any], row: list[int],
              ts: list[int], part: list[int], off: list[int], first: list[int], stop: list[int]) -> None:
    prefix, k = tset.prefix, tset.last_n
    json = _JsonMemo()
    for tokens, index, a, b in zip(tiles, tile_index, first, stop):
        for st in tset.per_tile_fields:
            name = f"{prefix}|{index}|{st}"  # keys.tile_field
            if st == "l" or st == "f":
                j = b - 1 if st == "l" else a
                tokens += ("L" if st == "l" else "F", name, str(ts[j]), str(part[j]), str(off[j]), json(col[row[j]]))
            elif st == "n":
                newest = [[ts[j], part[j], off[j], json(col[row[j]])] for j in range(b - 1, max(a, b - k) - 1, -1)]
                tokens += ("N", name, str(k), json_text(newest))
            elif st == "d":
                distinct = sorted({json(col[row[j]]) for j in range(a, b)})
                tokens += ("H", name, str(len(distinct)), *distinct)


class _JsonMemo(dict[str, str]):
    """JSON of values, each distinct string encoded once (a column repeats few ids, countries,
    ...). Other values are encoded each time: 1, 1.0 and True, or 0.0 and -0.0, are equal keys."""

    def __call__(self, value: Any) -> str:
        if type(value) is not str:
            return json_text(value)
        text = self.get(value)
        if text is None:
            text = self[value] = json_text(value)
        return text

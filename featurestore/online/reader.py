"""Read features from Redis: all entities and views of a request in one pipelined round trip."""

from __future__ import annotations

import datetime as dt
import math
import struct
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import orjson
import redis

from featurestore.aggregations import FUNCTIONS
from featurestore.online.connection import AsyncOnlineRedis, Keyed, OnlineRedis
from featurestore.online.entity_value import split_values, unpack_value
from featurestore.online.keys import entity_keys, layout_probe, other_layout_error, parse_newest_field, project_key
from featurestore.online.layout import tile_sets
from featurestore.online.packed import columns, decode_rows, row_width
from featurestore.online.state import (
    ITEM_COLUMNS,
    StateBlock,
    StateCodec,
    distinct_count,
    packed_of,
    state_tables,
    word_ranges,
)
from featurestore.plan import AggregationPlan, Plan, ViewPlan
from featurestore.plan.windows import tile_index


@dataclass(frozen=True)
class ViewRequest:
    """The features wanted from one view and the entity key tuples to read them for."""

    view: ViewPlan
    features: Sequence[str]
    keys: Sequence[tuple[Any, ...]]


def decode_value(raw: bytes | None, dtype: str) -> Any:
    """A JSON-encoded row feature value as Python (datetimes back to aware datetime)."""
    if raw is None:
        return None
    value = orjson.loads(raw)
    if dtype == "datetime" and isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    return value


def decode_values(raws: list[bytes | None], dtype: str) -> list[Any]:
    """Many JSON-encoded row feature values at once (one JSON parse)."""
    values: list[Any] = orjson.loads(b"[" + b",".join(b"null" if raw is None else raw for raw in raws) + b"]")
    if dtype == "datetime":
        return [dt.datetime.fromisoformat(v) if isinstance(v, str) else v for v in values]
    return values


def _scatter(col: list[Any], rows: list[int], values: list[Any]) -> None:
    for row, v in zip(rows, values):
        col[row] = v


def _place(cols: list[list[Any]], pos: int, rows: list[int], values: list[Any]) -> None:
    """Put the found entities' values (`rows`: their positions) into column `pos`."""
    if len(rows) == len(cols[pos]):
        cols[pos] = list(values)  # every entity found (the common case)
    else:
        _scatter(cols[pos], rows, values)


#: Requests with at most this many found entities merge packed rows in plain Python (numpy's
#: per-call overhead costs more than the loop below it).
_SMALL = 8


@dataclass
class _PackedSet:
    """The numeric aggregations read from one packed tile set: (position, plan, first and
    last tile index of its window)."""

    set_pos: int
    stats: str
    features: list[tuple[int, AggregationPlan, int, int]]

    def values(self, blobs: list[bytes], extras: dict[int, dict[tuple[int, str], list[float]]]) -> dict[int, list[Any]]:
        """Per feature position, its value for each entity (`blobs`: the entities' packed
        rows; `extras`: entity -> (tile, stat) -> further terms of its exact sums, for the
        few that have them)."""
        if len(blobs) <= _SMALL:
            return self._finish(partial(self._gather_small, blobs), extras)
        rows = decode_rows(b"".join(blobs), self.stats)
        lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs)) // (8 * row_width(self.stats))
        return self.values_of_rows(rows, np.repeat(np.arange(len(blobs)), lengths), len(blobs), extras)

    def values_of_rows(self, rows: np.ndarray, entity: np.ndarray, n: int,
                       extras: dict[int, dict[tuple[int, str], list[float]]]) -> dict[int, list[Any]]:
        """As `values`, from the packed rows of all `n` entities (`entity`: each row's, in order)."""
        return self._finish(partial(self._gather, rows, entity, n), extras)

    def _finish(self, gather: Callable[[int, int, str, dict[int, dict[tuple[int, str], list[float]]]], dict[str, list[Any]]],
                extras: dict[int, dict[tuple[int, str], list[float]]]) -> dict[int, list[Any]]:
        windows: dict[tuple[int, int], list[tuple[int, AggregationPlan]]] = {}
        for pos, agg, first, last in self.features:
            windows.setdefault((first, last), []).append((pos, agg))
        out: dict[int, list[Any]] = {}
        for (first, last), features in windows.items():
            wanted = {stat for _, agg in features for stat in FUNCTIONS[agg.function].stats}
            got = gather(first, last, "".join(stat for stat in self.stats if stat in wanted), extras)
            for pos, agg in features:
                finish = FUNCTIONS[agg.function].finish
                assert finish is not None
                out[pos] = finish(got, agg.dtype)
        return out

    def _gather(self, rows: np.ndarray, entity: np.ndarray, n: int, first: int, last: int, stats: str,
                extras: dict[int, dict[tuple[int, str], list[float]]]) -> dict[str, list[Any]]:
        """Per statistic among `stats`, per entity: the count, the correctly rounded exact sums,
        the min / max (None: no tile in the window) of the rows inside [first, last]
        (vectorised; `rows` of all entities in order, `entity` their owner)."""
        inside = (rows[:, 0] >= first) & (rows[:, 0] <= last)
        ent, sel = entity[inside], rows[inside]
        bounds = np.searchsorted(ent, np.arange(n + 1))
        out: dict[str, list[Any]] = {}
        cols = columns(self.stats)
        for stat in stats:
            col = cols[stat]
            if stat == "c":
                out[stat] = np.bincount(ent, weights=sel[:, col], minlength=n).astype(np.int64).tolist()
            elif stat in "sq":  # the correctly rounded exact sum of each entity's terms (hi, lo)
                terms = sel[:, col : col + 2].ravel().tolist()
                ends = (2 * bounds).tolist()
                out[stat] = list(map(math.fsum, map(terms.__getitem__, map(slice, ends[:-1], ends[1:]))))
                _add_extras(out[stat], extras, stat, first, last, lambda e: terms[ends[e] : ends[e + 1]])
            else:
                present = bounds[1:] > bounds[:-1]
                values: list[Any] = [None] * n
                if len(sel):
                    best = (np.minimum if stat == "m" else np.maximum).reduceat(sel[:, col], bounds[:-1][present])
                    _scatter(values, np.flatnonzero(present).tolist(), best.tolist())
                out[stat] = values
        return out

    def _gather_small(self, blobs: list[bytes], first: int, last: int, stats: str,
                      extras: dict[int, dict[tuple[int, str], list[float]]]) -> dict[str, list[Any]]:
        """As _gather, in plain Python (a few entities)."""
        width, every = row_width(self.stats), columns(self.stats)
        cols = {stat: every[stat] for stat in stats}
        out: dict[str, list[Any]] = {stat: [] for stat in cols}
        terms: dict[str, list[list[float]]] = {stat: [] for stat in cols if stat in "sq"}
        for blob in blobs:
            flat = struct.unpack(f"<{len(blob) // 8}d", blob)
            rows = [flat[r : r + width] for r in range(0, len(flat), width) if first <= flat[r] <= last]
            for stat, col in cols.items():
                if stat == "c":
                    out[stat].append(int(sum(row[col] for row in rows)))
                elif stat in "sq":
                    terms[stat].append([x for row in rows for x in row[col : col + 2]])
                    out[stat].append(math.fsum(terms[stat][-1]))
                elif rows:
                    out[stat].append((min if stat == "m" else max)(row[col] for row in rows))
                else:
                    out[stat].append(None)
        for stat, per_entity in terms.items():
            _add_extras(out[stat], extras, stat, first, last, per_entity.__getitem__)
        return out


def _add_extras(sums: list[float], extras: dict[int, dict[tuple[int, str], list[float]]], stat: str, first: int,
                last: int, terms_of: Callable[[int], list[float]]) -> None:
    """Redo the exact sum of the entities whose tiles in [first, last] have further terms
    (an overflow field: rare), with those terms (`terms_of(entity)`: its hi / lo terms)."""
    for e, more in extras.items():
        further = [x for (idx, st), xs in more.items() if st == stat and first <= idx <= last for x in xs]
        if further:
            sums[e] = math.fsum(terms_of(e) + further)


@dataclass
class _TileFeature:
    """A first / last / last_n / count_distinct feature: its position, plan, tile set and the
    tiles of its window (`first` -inf for lifetime ones)."""

    pos: int
    agg: AggregationPlan
    set_pos: int
    stat: str
    stat_pos: int
    """The statistic's item table among the set's (`TileSet.per_tile_fields`)."""
    first: int
    last: int


@dataclass
class _Layout:
    """How one request's features are read from its entities' states."""

    rows: list[tuple[int, int, str]]
    """Row features: (position, index in the state's row values, dtype)."""
    packed: list[_PackedSet]
    tiles: list[_TileFeature]
    codec: StateCodec
    wanted: list[int] = dataclass_field(default_factory=list)
    """The tile sets whose packed rows the request reads (`packed` order)."""


class OnlineReader:
    """Reads feature values as of a given instant."""

    def __init__(self, client: redis.Redis[bytes] | None, project: str, plan: Plan) -> None:
        self.client = client
        self.redis = OnlineRedis(client) if client is not None else None
        self.project = project
        self.plan = plan
        self._layouts: dict[tuple[Any, ...], _Layout] = {}

    def holds_project(self) -> bool:
        """Whether Redis holds data of the project (its `project_key`, set by every writer)."""
        assert self.redis is not None
        key = project_key(self.project).encode()
        return bool(self.redis.run([(key, ("EXISTS", key))])[0])

    def newest_events(self) -> dict[str, int]:
        """Per view, the event time (ms) of the newest event stored online (of the last batch
        of each source partition; empty when the store holds no data of the project)."""
        assert self.redis is not None
        key = project_key(self.project).encode()
        fields = self.redis.run([(key, ("HGETALL", key))])[0] or {}
        newest: dict[str, int] = {}
        for field, value in (fields.items() if isinstance(fields, dict) else zip(fields[::2], fields[1::2])):
            parsed = parse_newest_field(field.decode())
            if parsed is not None:
                newest[parsed[0]] = max(newest.get(parsed[0], 0), int(value))
        return newest

    def repair_counts(self) -> dict[str, int]:
        """Per view, how many times a processor repaired its online data from the history
        (Redis had lost applied events)."""
        assert self.redis is not None
        key = project_key(self.project).encode()
        fields = self.redis.run([(key, ("HGETALL", key))])[0] or {}
        pairs = fields.items() if isinstance(fields, dict) else zip(fields[::2], fields[1::2])
        return {f.decode().partition("|")[2]: int(v) for f, v in pairs if f.startswith(b"repairs|")}

    def _cached_layout(self, view: ViewPlan, features: Sequence[str], t_ms: int) -> _Layout:
        """The layout depends on t only through the tile holding t, per tile size: cache it."""
        aggs = {a.name: a for a in view.aggregations}
        tiles = tuple(tile_index(t_ms, aggs[f].tile_ms) for f in features if f in aggs)
        key = (view.name, tuple(features), tiles)
        hit = self._layouts.get(key)
        if hit is None:
            if len(self._layouts) >= 256:
                self._layouts.clear()
            hit = self._layouts[key] = self._layout(view, features, t_ms)
        return hit

    @staticmethod
    def _layout(view: ViewPlan, features: Sequence[str], t_ms: int) -> _Layout:
        rows = {r.name: (i, r.dtype) for i, r in enumerate(view.row_features)}
        aggs = {a.name: a for a in view.aggregations}
        sets = tile_sets(view)
        set_of = {(s.key, s.tile_ms, s.lifetime): i for i, s in enumerate(sets)}
        layout = _Layout([], [], [], StateCodec.of(sets))
        packed: dict[int, _PackedSet] = {}
        for pos, name in enumerate(features):
            if name in rows:
                layout.rows.append((pos, *rows[name]))
                continue
            agg = aggs[name]
            k = set_of[(agg.tiles_key, agg.tile_ms, agg.window_ms is None)]
            last = tile_index(t_ms, agg.tile_ms)
            first = -(2**62) if agg.window_ms is None else last - agg.window_ms // agg.tile_ms + 1
            function = FUNCTIONS[agg.function]
            if function.packed:
                if k not in packed:
                    packed[k] = _PackedSet(k, sets[k].packed, [])
                packed[k].features.append((pos, agg, first, last))
            else:
                stat = function.stats[0]
                layout.tiles.append(_TileFeature(pos, agg, k, stat, sets[k].per_tile_fields.index(stat), first, last))
        layout.packed = list(packed.values())
        layout.wanted = [p.set_pos for p in layout.packed]
        return layout

    def read(self, requests: Sequence[ViewRequest], t_ms: int) -> list[dict[str, list[Any]]]:
        """Per request, feature name -> values (one per key), evaluated at `t_ms`."""
        return [r.values for r in self.read_results(requests, t_ms)]

    def read_results(self, requests: Sequence[ViewRequest], t_ms: int, max_staleness_ms: int | None = None) -> list[ViewResult]:
        """Values, statuses and event times per request, over this reader's (synchronous) client."""
        assert self.redis is not None, "a reader without a client reads with aread_results"
        steps = self.steps(requests, t_ms, max_staleness_ms)
        try:
            commands = next(steps)
            while True:
                commands = steps.send(self.redis.run(commands, raise_errors=False))
        except StopIteration as done:
            results: list[ViewResult] = done.value
            return results

    async def aread_results(
        self, client: AsyncOnlineRedis, requests: Sequence[ViewRequest], t_ms: int, max_staleness_ms: int | None = None
    ) -> list[ViewResult]:
        """As read_results, over an asyncio client (`AsyncOnlineRedis` of a `redis.asyncio.Redis`)."""
        steps = self.steps(requests, t_ms, max_staleness_ms)
        try:
            commands = next(steps)
            while True:
                commands = steps.send(await client.run(commands, raise_errors=False))
        except StopIteration as done:
            results: list[ViewResult] = done.value
            return results

    def steps(
        self, requests: Sequence[ViewRequest], t_ms: int, max_staleness_ms: int | None = None
    ) -> Generator[list[Keyed], list[Any], list[ViewResult]]:
        """The read as a dialogue: yields pipelines of commands, receives their replies
        (error replies as exceptions).

        One pipelined GET per (view, entity): its states, one per source partition that fed
        it. The newest event across them gives the row features and the entity's age;
        packed rows are merged for all entities of a request at once, per-tile statistics
        per entity. An entity whose newest event is older than the view's TTL reads as
        `expired`, older than `max_staleness_ms` as `stale`: no values."""
        layouts = [self._cached_layout(req.view, req.features, t_ms) for req in requests]
        commands: list[Keyed] = []
        for req in requests:
            commands += [(k, b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(k), k))
                         for k in entity_keys(self.project, req.view.name, req.keys)]
        got: list[Any] = yield commands
        if not set(map(type, got)) <= _VALUES:
            at, error = next((i, r) for i, r in enumerate(got) if isinstance(r, Exception))
            key = commands[at][0]
            if isinstance(error, redis.ResponseError) and str(error).startswith("WRONGTYPE"):
                raise other_layout_error(key.decode(), (yield [layout_probe(key)])[0])
            raise error
        out: list[ViewResult] = []
        at = 0
        for req, layout in zip(requests, layouts):
            values = got[at : at + len(req.keys)]
            names = [key for key, _ in commands[at : at + len(req.keys)]]
            at += len(req.keys)
            if len(req.keys) > _SMALL and not layout.tiles:  # states of many entities read side by side
                out.append(_read_many(req, layout, values, names, t_ms, max_staleness_ms))
                continue
            n = len(req.keys)
            cols: list[list[Any]] = [[None] * n for _ in req.features]
            event_ms: list[int | None] = []
            states: list[str] = []
            rows: list[int] = []  # the found entities: their positions and states
            found: list[list[_Part]] = []
            row_json: list[bytes] = []
            ttl_ms = req.view.ttl_ms
            for row, (value, name) in enumerate(zip(values, names)):
                parts = _states(value, layout, name)
                if not parts:
                    event_ms.append(None)
                    states.append(NOT_FOUND)
                    continue
                newest = max(parts, key=_newest)
                newest_ms = newest.ts
                event_ms.append(newest_ms)
                state = _entity_state(t_ms - newest_ms, ttl_ms, max_staleness_ms)
                states.append(state)
                if state != FOUND:
                    continue
                rows.append(row)
                found.append(parts)
                row_json.append(newest.row)
                for feat in layout.tiles:
                    cols[feat.pos][row] = _tile_value(feat, parts)
            if rows:
                if layout.rows:  # every found entity's row feature values in one parse
                    values = orjson.loads(b"[" + b",".join(row_json) + b"]")
                    for pos, at, dtype in layout.rows:
                        _place(cols, pos, rows, [_json_value(v[at], dtype) for v in values])
                for j, pset in enumerate(layout.packed):
                    blobs = [b"".join(part.packed[j] for part in parts) for parts in found]
                    extras = {e: x for e, parts in enumerate(found) if (x := _extras(parts, pset.set_pos))}
                    for pos, values in pset.values(blobs, extras).items():
                        _place(cols, pos, rows, values)
            out.append(ViewResult(dict(zip(req.features, cols)), event_ms, states))
        return out


def _read_many(req: ViewRequest, layout: _Layout, values: list[bytes | None], keys: list[bytes], t_ms: int,
               max_staleness_ms: int | None) -> ViewResult:
    """A request of many entities and no item features (`steps` reads others entity by
    entity): every state of every entity parsed at once (`StateBlock`), the newest state of
    each entity picked with numpy, packed rows gathered for all entities together."""
    n = len(req.keys)
    blobs, owner, partition = split_values(values, keys)
    cols: list[list[Any]] = [[None] * n for _ in req.features]
    event_ms: list[int | None] = [None] * n
    states = [NOT_FOUND] * n
    if not blobs:
        return ViewResult(dict(zip(req.features, cols)), event_ms, states)
    block = StateBlock(blobs, layout.codec)
    owners = np.asarray(owner, dtype=np.int64)
    single = bool((owners[1:] > owners[:-1]).all())  # one state per entity (fed by one partition): the common case
    if single:
        newest = np.arange(len(owners))
    else:
        order = np.lexsort((block.offset, np.asarray(partition, dtype=np.int64), block.ts, owners))
        last = np.append(owners[order][1:] != owners[order][:-1], True)
        newest = order[last]  # each entity's newest state, in entity order
    ttl_ms = req.view.ttl_ms
    for e, ts in zip(owners[newest].tolist(), block.ts[newest].tolist()):
        event_ms[e] = ts
        states[e] = _entity_state(t_ms - ts, ttl_ms, max_staleness_ms)
    found = np.fromiter((states[e] == FOUND for e in owners[newest].tolist()), dtype=bool, count=len(newest))
    rows = owners[newest][found].tolist()
    if not rows:
        return ViewResult(dict(zip(req.features, cols)), event_ms, states)
    if layout.rows:  # every found entity's row feature values in one parse
        chosen = newest[found]
        row_values = orjson.loads(b"[" + b",".join(block.json(block.json_at[chosen], block.row_size[chosen])) + b"]")
        for pos, at, dtype in layout.rows:
            _place(cols, pos, rows, [_json_value(v[at], dtype) for v in row_values])
    if layout.packed:
        if single:
            taken = np.flatnonzero(found)
            entity_of = np.arange(len(taken))
        else:
            taken = np.flatnonzero(np.isin(owners, np.asarray(rows, dtype=np.int64)))  # states of found entities
            entity_of = np.searchsorted(np.asarray(rows, dtype=np.int64), owners[taken])
        floats = np.frombuffer(block.buf, "<f8")
        overflow = [(int(entity_of[np.searchsorted(taken, s)]), per_set) for s, per_set in block.overflows(taken).items()]
        for pset in layout.packed:
            k, width = pset.set_pos, row_width(pset.stats)
            packed = floats[word_ranges(block.set_at[taken, k], block.set_words[taken, k])].reshape(-1, width)
            entity = np.repeat(entity_of, block.counts[taken, k])
            extras: dict[int, dict[tuple[int, str], list[float]]] = {}
            for e, per_set in overflow:
                _add_terms(extras.setdefault(e, {}), per_set[k])
            for pos, values in pset.values_of_rows(packed, entity, len(rows), extras).items():
                _place(cols, pos, rows, values)
    return ViewResult(dict(zip(req.features, cols)), event_ms, states)


class _Part(NamedTuple):
    """One state of an entity, as far as a read needs it."""

    partition: int
    ts: int
    offset: int
    row: bytes
    """The row feature values, JSON."""
    overflow: bytes
    """The further terms of exact sums, JSON (b"": none)."""
    packed: list[bytes]
    """The packed rows of the request's packed sets (`_Layout.packed` order)."""
    items: list[list[tuple[bytes, list[Any]]]] | None


def _states(value: bytes | None, layout: _Layout, key: bytes) -> list[_Part]:
    """An entity's states, one per partition (none without a value)."""
    out = []
    for p, state in [] if value is None else unpack_value(value, key):
        if layout.tiles:
            st = state_tables(state, layout.codec)
            out.append(_Part(p, st.ts, st.offset, st.row, st.overflow, [st.packed[k] for k in layout.wanted], st.items))
        else:
            ts, offset, row, overflow, packed = packed_of(state, layout.codec, layout.wanted)
            out.append(_Part(p, ts, offset, row, overflow, packed, None))
    return out


def _newest(part: _Part) -> tuple[int, int, int]:
    """The order of a state's newest event: (event time, partition, offset)."""
    return part.ts, part.partition, part.offset


def _json_value(value: Any, dtype: str) -> Any:
    """A value as stored in a state (JSON), as Python (datetimes back to aware datetimes)."""
    if dtype == "datetime" and isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    return value


def _extras(parts: list[_Part], set_pos: int) -> dict[tuple[int, str], list[float]]:
    out: dict[tuple[int, str], list[float]] = {}
    for part in parts:
        if part.overflow:
            _add_terms(out, orjson.loads(part.overflow)[set_pos])
    return out


def _add_terms(out: dict[tuple[int, str], list[float]], overflow: list[list[Any]]) -> None:
    """Add one state's further sum terms of a tile set (`[[tile, stat, x3, ...], ...]`) by (tile, stat)."""
    for idx, stat, *terms in overflow:
        out.setdefault((int(idx), stat), []).extend(terms)


def _tile_value(feat: _TileFeature, parts: list[_Part]) -> Any:
    """A first / last / last_n / count_distinct feature from the item rows of its window's
    tiles, across the entity's partitions (orders compare as (event time, partition, offset))."""
    f, agg = feat.agg.function, feat.agg
    width = ITEM_COLUMNS[feat.stat]
    found: list[tuple[tuple[int, int, int], Any]] = []
    tiles: dict[int, list[int]] = {}
    for part in parts:
        assert part.items is not None
        p = part.partition
        raw, vals = part.items[feat.set_pos][feat.stat_pos]
        if not raw:
            continue
        flat = struct.unpack(f"<{len(raw) // 8}q", raw)
        for j in range(0, len(flat), width):
            idx = flat[j]
            if feat.first <= idx <= feat.last:
                if width == 2:
                    tiles.setdefault(idx, []).append(flat[j + 1])
                else:
                    found.append(((flat[j + 1], p, flat[j + 2]), vals[j // width]))
    if f == "count_distinct":
        return distinct_count(list(tiles.values()))
    if not found:
        return None
    pick = FUNCTIONS[f].pick
    assert pick is not None
    value = pick(found, agg.k or 0)
    return [_json_value(v, agg.dtype) for v in value] if FUNCTIONS[f].result == "list" else _json_value(value, agg.dtype)


_VALUES = {bytes, type(None)}
"""The types of GET replies of entity keys (anything else is an error)."""

#: Entity states; with a value of None a found entity's feature reads as `null`.
FOUND, NOT_FOUND, EXPIRED, STALE = "present", "not_found", "expired", "stale"


def _entity_state(age: int, ttl_ms: int | None, max_staleness_ms: int | None) -> str:
    """The state of an entity whose newest event is `age` ms old."""
    if ttl_ms is not None and age > ttl_ms:
        return EXPIRED
    if max_staleness_ms is not None and age > max_staleness_ms:
        return STALE
    return FOUND


@dataclass(frozen=True)
class ViewResult:
    """What one ViewRequest read: values per feature, and per key the entity's state and newest event time."""

    values: dict[str, list[Any]]
    event_ms: list[int | None]
    """Per key: event time (epoch ms) of the newest event applied to the entity in this view."""
    states: list[str]
    """Per key: present, not_found, expired (past the view's TTL) or stale (past max_staleness)."""

    def statuses(self, feature: str) -> list[str]:
        """Per key, the status of one feature's value: the entity's state, or `null` for a present entity without a value."""
        return [st if st != FOUND or v is not None else "null" for st, v in zip(self.states, self.values[feature])]

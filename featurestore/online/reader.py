"""Read features from Redis: all entities and views of a request in one pipelined round trip."""

from __future__ import annotations

import datetime as dt
import math
import struct
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import partial
from typing import Any

import numpy as np
import orjson
import redis

from featurestore.online.keys import (
    LAYOUT_FIELD,
    READABLE_LAYOUTS,
    entity_key,
    entity_keys,
    hll_key,
    layout_error,
    overflow_field,
    packed_field,
    row_field,
    tile_field,
    tile_prefix,
)
from featurestore.online.layout import tile_sets
from featurestore.online.packed import NUMERIC_STATS, columns, decode_rows, parse_overflow, row_width
from featurestore.online.streaming import arun_commands, run_commands
from featurestore.plan import AggregationPlan, Plan, ViewPlan
from featurestore.plan.windows import STATS_FOR_FUNCTION, tile_index, window_tiles


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
    values = orjson.loads(b"[" + b",".join(b"null" if raw is None else raw for raw in raws) + b"]")
    if dtype == "datetime":
        return [dt.datetime.fromisoformat(v) if isinstance(v, str) else v for v in values]
    return values  # type: ignore[no-any-return]


def _scatter(col: list[Any], rows: list[int], values: list[Any]) -> None:
    for row, v in zip(rows, values):
        col[row] = v


def _place(cols: list[list[Any]], pos: int, rows: list[int], values: list[Any]) -> None:
    """Put the found entities' values (`rows`: their positions) into column `pos`."""
    if len(rows) == len(cols[pos]):
        cols[pos] = list(values)  # every entity found (the common case)
    else:
        _scatter(cols[pos], rows, values)


class _Acc:
    """Merges the per-tile statistics (first, last, newest values, distinct) of one aggregation for one entity."""

    __slots__ = ("first_order", "first", "last_order", "last", "items", "hlls")

    def __init__(self) -> None:
        self.first_order: tuple[int, ...] | None = None
        self.first: bytes | None = None
        self.last_order: tuple[int, ...] | None = None
        self.last: bytes | None = None
        self.items: list[list[Any]] = []
        self.hlls: list[bytes] = []

    def add(self, stat: str, name: bytes, raw: bytes, got: dict[bytes, bytes]) -> None:
        if stat == "l" or stat == "f":
            extra = got.get(name + b"o")
            if extra is None:
                return
            order = tuple(int(v) for v in extra.split())
            if stat == "l" and (self.last_order is None or order > self.last_order):
                self.last_order, self.last = order, raw
            elif stat == "f" and (self.first_order is None or order < self.first_order):
                self.first_order, self.first = order, raw
        elif stat == "n":
            self.items.extend(orjson.loads(raw))
        elif stat == "d":
            self.hlls.append(name)

    def value(self, agg: AggregationPlan) -> Any:
        f = agg.function
        if f == "first":
            return decode_value(self.first, agg.dtype)
        if f == "last_n":
            if not self.items:
                return None
            self.items.sort(key=lambda it: (it[0], it[1], it[2]), reverse=True)
            return [decode_value(it[3].encode(), agg.dtype) for it in self.items[: agg.k]]
        if f == "count_distinct":
            return 0
        return decode_value(self.last, agg.dtype)


#: Requests with at most this many found entities merge packed rows in plain Python (numpy's
#: per-call overhead costs more than the loop below it).
_SMALL = 8


@dataclass
class _PackedSet:
    """The numeric aggregations read from one packed tile set: (position, plan, first and
    last tile index of its window)."""

    field: bytes
    overflow: bytes
    stats: str
    features: list[tuple[int, AggregationPlan, int, int]]

    def values(self, blobs: list[bytes], overflows: dict[int, bytes]) -> dict[int, list[Any]]:
        """Per feature position, its value for each entity (`blobs`: the entities' packed
        rows; `overflows`: entity -> its overflow field, for the few that have one)."""
        extras = {e: parse_overflow(raw) for e, raw in overflows.items()}
        gather: Callable[[int, int, dict[int, dict[tuple[int, str], list[float]]]], dict[str, list[Any]]]
        if len(blobs) <= _SMALL:
            gather = partial(self._gather_small, blobs)
        else:
            rows = decode_rows(b"".join(blobs), self.stats)
            lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs)) // (8 * row_width(self.stats))
            entity = np.repeat(np.arange(len(blobs)), lengths)
            gather = partial(self._gather, rows, entity, len(blobs))
        windows: dict[tuple[int, int], dict[str, list[Any]]] = {}
        out: dict[int, list[Any]] = {}
        for pos, agg, first, last in self.features:
            got = windows.get((first, last))
            if got is None:
                got = windows[(first, last)] = gather(first, last, extras)
            out[pos] = _finish(agg, got)
        return out

    def _gather(self, rows: np.ndarray, entity: np.ndarray, n: int, first: int, last: int,
                extras: dict[int, dict[tuple[int, str], list[float]]]) -> dict[str, list[Any]]:
        """Per statistic, per entity: the count, the correctly rounded exact sums, the min / max
        (None: no tile in the window) of the rows inside [first, last] (vectorised; `rows` of
        all entities in order, `entity` their owner)."""
        inside = (rows[:, 0] >= first) & (rows[:, 0] <= last)
        ent, sel = entity[inside], rows[inside]
        bounds = np.searchsorted(ent, np.arange(n + 1))
        out: dict[str, list[Any]] = {}
        for stat, col in columns(self.stats).items():
            if stat == "c":
                out[stat] = np.bincount(ent, weights=sel[:, col], minlength=n).astype(np.int64).tolist()
            elif stat in "sq":
                terms = sel[:, col : col + 2].ravel().tolist()
                ends = (2 * bounds).tolist()
                out[stat] = [math.fsum(terms[a:b]) for a, b in zip(ends, ends[1:])]
                _add_extras(out[stat], extras, stat, first, last, lambda e: terms[ends[e] : ends[e + 1]])
            else:
                present = bounds[1:] > bounds[:-1]
                values: list[Any] = [None] * n
                if len(sel):
                    best = (np.minimum if stat == "m" else np.maximum).reduceat(sel[:, col], bounds[:-1][present])
                    _scatter(values, np.flatnonzero(present).tolist(), best.tolist())
                out[stat] = values
        return out

    def _gather_small(self, blobs: list[bytes], first: int, last: int,
                      extras: dict[int, dict[tuple[int, str], list[float]]]) -> dict[str, list[Any]]:
        """As _gather, in plain Python (a few entities)."""
        width, cols = row_width(self.stats), columns(self.stats)
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


def _finish(agg: AggregationPlan, got: dict[str, list[Any]]) -> list[Any]:
    """An aggregation's values from the gathered statistics of its window."""
    f = agg.function
    if f == "count":
        return got["c"]
    integral = agg.dtype in ("int", "bool")  # float64 statistics back to int
    if f in ("min", "max"):
        values = got["m" if f == "min" else "M"]
        return [None if x is None else int(round(x)) for x in values] if integral else values
    if f == "sum":
        return [int(round(x)) for x in got["s"]] if integral else got["s"]
    if f == "mean":
        return [x / c if c else None for x, c in zip(got["s"], got["c"])]
    return [_spread(f, x, q, c) for x, q, c in zip(got["s"], got["q"], got["c"])]  # variance, stddev


def _add_extras(sums: list[float], extras: dict[int, dict[tuple[int, str], list[float]]], stat: str, first: int,
                last: int, terms_of: Callable[[int], list[float]]) -> None:
    """Redo the exact sum of the entities whose tiles in [first, last] have further terms
    (an overflow field: rare), with those terms (`terms_of(entity)`: its hi / lo terms)."""
    for e, more in extras.items():
        further = [x for (idx, st), xs in more.items() if st == stat and first <= idx <= last for x in xs]
        if further:
            sums[e] = math.fsum(terms_of(e) + further)


def _spread(function: str, total: float, squares: float, count: int) -> float | None:
    if not count:
        return None
    var = max(0.0, (squares - total * total / count) / count)
    return var if function == "variance" else math.sqrt(var)


@dataclass
class _Layout:
    """How one request's features are read: the fields to fetch and how to merge them."""

    features: list[tuple[Any, bytes | None]]
    """Per feature: (row feature plan, its field) or (aggregation plan, None)."""
    packed: list[_PackedSet]
    index: dict[bytes, tuple[str, list[int]]]
    """Per-tile field -> (its stat, positions of the features whose window holds the tile)."""
    lifetimes: list[tuple[bytes, int, int, tuple[str, ...]]]
    """Lifetime per-tile features: (tile prefix + b"|", position, last tile index, stats)."""
    names: list[bytes] | None
    """The fields to HMGET, or None: every field (HGETALL, for lifetime per-tile features)."""
    slots: dict[bytes, int] = dataclass_field(default_factory=dict)
    """Position of each HMGET field in the reply."""
    hmget_tail: bytes = b""
    """The HMGET command's field names, RESP-encoded (the same for every entity)."""

    def commands(self, keys: list[bytes]) -> list[tuple[Any, ...] | bytes]:
        """The read of each entity hash: the RESP-encoded HMGET of these fields, or HGETALL."""
        if self.names is None:
            return [("HGETALL", key) for key in keys]
        count, tail = 2 + len(self.names), self.hmget_tail
        return [b"*%d\r\n$5\r\nHMGET\r\n$%d\r\n%b\r\n%b" % (count, len(k), k, tail) for k in keys]


class OnlineReader:
    """Reads feature values as of a given instant."""

    def __init__(self, client: redis.Redis | None, project: str, plan: Plan) -> None:
        self.client = client
        self.project = project
        self.plan = plan
        self._layouts: dict[tuple[Any, ...], _Layout] = {}

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
        rows = {r.name: r for r in view.row_features}
        aggs = {a.name: a for a in view.aggregations}
        layout = _Layout([], [], {}, [], None)
        packed: dict[str, _PackedSet] = {}
        packed_of = {ts.prefix: ts.packed for ts in tile_sets(view)}  # a packed field holds its whole set's stats
        names = [b"_ts", LAYOUT_FIELD.encode()]
        for pos, name in enumerate(features):
            if name in rows:
                layout.features.append((rows[name], row_field(name).encode()))
                names.append(row_field(name).encode())
                continue
            agg = aggs[name]
            layout.features.append((agg, None))
            lifetime = agg.window_ms is None
            prefix = tile_prefix(agg.tiles_key, agg.tile_ms, lifetime)
            stats = STATS_FOR_FUNCTION[agg.function]
            last = tile_index(t_ms, agg.tile_ms)
            if stats[0] in NUMERIC_STATS:
                first = -(2**62) if lifetime else last - agg.window_ms // agg.tile_ms + 1  # type: ignore[operator]
                if prefix not in packed:
                    packed[prefix] = _PackedSet(packed_field(prefix).encode(), overflow_field(prefix).encode(),
                                                packed_of[prefix], [])
                    names += [packed[prefix].field, packed[prefix].overflow]
                packed[prefix].features.append((pos, agg, first, last))
            elif lifetime:
                layout.lifetimes.append(((prefix + "|").encode(), pos, last, stats))
            else:
                for stat in stats:
                    for idx in window_tiles(t_ms, agg.window_ms, agg.tile_ms):  # type: ignore[arg-type]
                        field = tile_field(prefix, idx, stat).encode()
                        if field not in layout.index:
                            layout.index[field] = (stat, [])
                            names += [field, field + b"o"] if stat in "lf" else [field]
                        layout.index[field][1].append(pos)
        layout.packed = list(packed.values())
        if not layout.lifetimes:
            layout.names = names
            layout.slots = {name: i for i, name in enumerate(names)}
            layout.hmget_tail = b"".join(b"$%d\r\n%b\r\n" % (len(name), name) for name in names)
        return layout

    def read(self, requests: Sequence[ViewRequest], t_ms: int) -> list[dict[str, list[Any]]]:
        """Per request, feature name -> values (one per key), evaluated at `t_ms`."""
        return [r.values for r in self.read_results(requests, t_ms)]

    def read_results(self, requests: Sequence[ViewRequest], t_ms: int, max_staleness_ms: int | None = None) -> list[ViewResult]:
        """Values, statuses and event times per request, over this reader's (synchronous) client."""
        assert self.client is not None, "a reader without a client reads with aread_results"
        steps = self.steps(requests, t_ms, max_staleness_ms)
        try:
            commands = next(steps)
            while True:
                commands = steps.send(run_commands(self.client, commands))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def aread_results(
        self, client: Any, requests: Sequence[ViewRequest], t_ms: int, max_staleness_ms: int | None = None
    ) -> list[ViewResult]:
        """As read_results, over an asyncio client (`redis.asyncio.Redis`)."""
        steps = self.steps(requests, t_ms, max_staleness_ms)
        try:
            commands = next(steps)
            while True:
                commands = steps.send(await arun_commands(client, commands))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def steps(
        self, requests: Sequence[ViewRequest], t_ms: int, max_staleness_ms: int | None = None
    ) -> Generator[list[tuple[Any, ...] | bytes], list[Any], list[ViewResult]]:
        """The read as a dialogue: yields pipelines of commands, receives their replies.

        One pipelined HMGET per (view, entity) of the fields the features need: `_ts`, row
        values, the packed numeric tiles of their tile sets and the per-tile fields of their
        windows (HGETALL when a lifetime first/last/last_n/count_distinct is asked for:
        hashes are bounded). Packed rows are merged for all entities of a request at once.
        count_distinct features take a second pipelined round trip (PFCOUNT of the
        window's HyperLogLogs). An entity whose newest event is older than the view's TTL
        reads as `expired`, older than `max_staleness_ms` as `stale`: no values."""
        layouts = [self._cached_layout(req.view, req.features, t_ms) for req in requests]
        commands: list[tuple[Any, ...] | bytes] = []
        for req, layout in zip(requests, layouts):
            commands += layout.commands(entity_keys(self.project, req.view.name, req.keys))
        replies = iter((yield commands))
        out: list[ViewResult] = []
        distinct: list[tuple[list[Any], int, str, list[bytes]]] = []
        for req, layout in zip(requests, layouts):
            n = len(req.keys)
            cols: list[list[Any]] = [[None] * n for _ in req.features]
            event_ms: list[int | None] = []
            states: list[str] = []
            rows: list[int] = []  # the found entities: their positions and fields
            gots: list[Any] = []  # HMGET replies as they are, or field -> value
            positional = layout.names is not None and not layout.index
            ttl_ms = req.view.ttl_ms
            for row, key in enumerate(req.keys):
                reply = next(replies)
                if positional:
                    got, newest, version = reply, reply[0], reply[1]
                else:
                    if layout.names is not None:
                        got = {name: v for name, v in zip(layout.names, reply) if v is not None}
                    else:
                        got = reply if isinstance(reply, dict) else _pairs(reply)
                    newest, version = got.get(b"_ts"), got.get(_VERSION_FIELD)
                if newest is None:
                    event_ms.append(None)
                    states.append(NOT_FOUND)
                    continue
                if version not in _VERSIONS:
                    raise layout_error(entity_key(self.project, req.view.name, key), version)
                newest_ms = int(newest)
                event_ms.append(newest_ms)
                state = _entity_state(t_ms - newest_ms, ttl_ms, max_staleness_ms)
                states.append(state)
                if state != FOUND:
                    continue
                rows.append(row)
                gots.append(got)
                if layout.index or layout.lifetimes:
                    self._merge_tiles(layout, got, cols, row, req, key, distinct)
            if rows:
                def pick(name: bytes) -> list[Any]:
                    if positional:
                        at = layout.slots[name]
                        return [got[at] for got in gots]
                    return [got.get(name) for got in gots]

                for pos, (feat, field_name) in enumerate(layout.features):
                    if field_name is not None:
                        _place(cols, pos, rows, decode_values(pick(field_name), feat.dtype))
                for pset in layout.packed:
                    blobs = [blob or b"" for blob in pick(pset.field)]
                    overflows = {e: raw for e, raw in enumerate(pick(pset.overflow)) if raw is not None}
                    for pos, values in pset.values(blobs, overflows).items():
                        _place(cols, pos, rows, values)
            out.append(ViewResult(dict(zip(req.features, cols)), event_ms, states))
        if distinct:
            counts = yield [("PFCOUNT", *[hll_key(ekey, f.decode()) for f in fields]) for _, _, ekey, fields in distinct]
            for (col, row, _, _), n in zip(distinct, counts):
                col[row] = int(n)
        return out

    def _merge_tiles(self, layout: _Layout, got: dict[bytes, bytes], cols: list[list[Any]], row: int, req: ViewRequest,
                     key: tuple[Any, ...], distinct: list[tuple[list[Any], int, str, list[bytes]]]) -> None:
        """The per-tile features (first, last, last_n, count_distinct) of one entity."""
        accs = [_Acc() if field is None else None for _, field in layout.features]
        for name, raw in got.items():
            hit = layout.index.get(name)
            if hit is None:
                if layout.lifetimes:
                    _add_lifetime(layout.lifetimes, accs, name, raw, got)
                continue
            stat, positions = hit
            for pos in positions:
                accs[pos].add(stat, name, raw, got)  # type: ignore[union-attr]
        for pos, (feat, field) in enumerate(layout.features):
            acc = accs[pos]
            if field is not None or acc is None or feat.function not in ("first", "last", "last_n", "count_distinct"):
                continue
            cols[pos][row] = acc.value(feat)
            if feat.function == "count_distinct" and acc.hlls:
                distinct.append((cols[pos], row, entity_key(self.project, req.view.name, key), acc.hlls))


_VERSION_FIELD, _VERSIONS = LAYOUT_FIELD.encode(), {v.encode() for v in READABLE_LAYOUTS}

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


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    """A raw HGETALL reply ([field, value, ...]) as a dict."""
    it = iter(flat)
    return dict(zip(it, it))


def _add_lifetime(lifetimes: list[tuple[bytes, int, int, tuple[str, ...]]], accs: list[_Acc | None], name: bytes, raw: bytes,
                  got: dict[bytes, bytes]) -> None:
    """Merge a field of a lifetime tile set: every tile up to the one holding t, and the base."""
    for prefix, pos, last, stats in lifetimes:
        if name.startswith(prefix):
            idx, sep, stat = name[len(prefix):].partition(b"|")
            st = stat.decode()
            if sep and st in stats and int(idx) <= last:
                accs[pos].add(st, name, raw, got)  # type: ignore[union-attr]

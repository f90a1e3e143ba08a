"""Read features from Redis: all entities and views of a request in one pipelined round trip."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from featurestore.online.keys import entity_key, hll_key, row_field, tile_field, tile_prefix
from featurestore.online.streaming import run_commands
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


def _cast(x: float, dtype: str) -> Any:
    return int(round(x)) if dtype in ("int", "bool") else x


class _Acc:
    """Merges the tile statistics of one aggregation for one entity."""

    __slots__ = ("count", "sums", "squares", "lo", "hi", "first_order", "first", "last_order", "last", "items", "hlls")

    def __init__(self) -> None:
        self.count = 0
        self.sums: list[float] = []
        self.squares: list[float] = []
        self.lo: float | None = None
        self.hi: float | None = None
        self.first_order: tuple[int, ...] | None = None
        self.first: bytes | None = None
        self.last_order: tuple[int, ...] | None = None
        self.last: bytes | None = None
        self.items: list[list[Any]] = []
        self.hlls: list[bytes] = []

    def add(self, stat: str, name: bytes, raw: bytes, got: dict[bytes, bytes]) -> None:
        if stat == "c":
            self.count += int(raw)
        elif stat == "s":  # an exact sum, as "hi lo ..." (see tiles.lua)
            if b" " in raw:
                self.sums.extend(map(float, raw.split()))
            else:
                self.sums.append(float(raw))
        elif stat == "q":
            self.squares.extend(map(float, raw.split()))
        elif stat == "m":
            x = float(raw)
            self.lo = x if self.lo is None or x < self.lo else self.lo
        elif stat == "M":
            x = float(raw)
            self.hi = x if self.hi is None or x > self.hi else self.hi
        elif stat == "l" or stat == "f":
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

    def value(self, agg: AggregationPlan, distinct: int = 0) -> Any:
        f = agg.function
        if f == "count":
            return self.count
        if f == "sum":
            return _cast(math.fsum(self.sums), agg.dtype)
        if f == "mean":
            return math.fsum(self.sums) / self.count if self.count else None
        if f in ("variance", "stddev"):
            if not self.count:
                return None
            total = math.fsum(self.sums)
            var = max(0.0, (math.fsum(self.squares) - total * total / self.count) / self.count)
            return var if f == "variance" else math.sqrt(var)
        if f == "min":
            return None if self.lo is None else _cast(self.lo, agg.dtype)
        if f == "max":
            return None if self.hi is None else _cast(self.hi, agg.dtype)
        if f == "first":
            return decode_value(self.first, agg.dtype)
        if f == "last_n":
            if not self.items:
                return None
            self.items.sort(key=lambda it: (it[0], it[1], it[2]), reverse=True)
            return [decode_value(it[3].encode(), agg.dtype) for it in self.items[: agg.k]]
        if f == "count_distinct":
            return distinct
        return decode_value(self.last, agg.dtype)


#: Per feature: (row feature plan, its field) or (aggregation plan, None).
_Layout = list[tuple[Any, bytes | None]]
#: Tile field -> (its stat, positions of the features whose window holds the tile).
_Index = dict[bytes, tuple[str, list[int]]]
#: Lifetime features: (tile prefix + b"|", feature position, last tile index, stats).
_Lifetimes = list[tuple[bytes, int, int, tuple[str, ...]]]


class OnlineReader:
    """Reads feature values as of a given instant."""

    def __init__(self, client: redis.Redis | None, project: str, plan: Plan) -> None:
        self.client = client
        self.project = project
        self.plan = plan
        self._layouts: dict[tuple[Any, ...], tuple[_Layout, _Index, _Lifetimes]] = {}

    def _cached_layout(self, view: ViewPlan, features: Sequence[str], t_ms: int) -> tuple[_Layout, _Index, _Lifetimes]:
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
    def _layout(view: ViewPlan, features: Sequence[str], t_ms: int) -> tuple[_Layout, _Index, _Lifetimes]:
        rows = {r.name: r for r in view.row_features}
        aggs = {a.name: a for a in view.aggregations}
        layout: _Layout = []
        index: _Index = {}
        lifetimes: _Lifetimes = []
        for pos, name in enumerate(features):
            if name in rows:
                layout.append((rows[name], row_field(name).encode()))
                continue
            agg = aggs[name]
            layout.append((agg, None))
            if agg.window_ms is None:
                prefix = tile_prefix(agg.tiles_key, agg.tile_ms, lifetime=True)
                lifetimes.append(((prefix + "|").encode(), pos, tile_index(t_ms, agg.tile_ms), STATS_FOR_FUNCTION[agg.function]))
                continue
            prefix = tile_prefix(agg.tiles_key, agg.tile_ms)
            for stat in STATS_FOR_FUNCTION[agg.function]:
                for idx in window_tiles(t_ms, agg.window_ms, agg.tile_ms):
                    index.setdefault(tile_field(prefix, idx, stat).encode(), (stat, []))[1].append(pos)
        return layout, index, lifetimes

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
                pipe = client.pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)
                commands = steps.send(await pipe.execute())
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def steps(
        self, requests: Sequence[ViewRequest], t_ms: int, max_staleness_ms: int | None = None
    ) -> Generator[list[tuple[Any, ...]], list[Any], list[ViewResult]]:
        """The read as a dialogue: yields pipelines of commands, receives their replies.

        One pipelined HGETALL per (view, entity): hashes are bounded (expired tiles are
        trimmed), and each is scanned once, merging the tiles inside each window.
        count_distinct features take a second pipelined round trip (PFCOUNT of the
        window's HyperLogLogs). An entity whose newest event is older than the view's TTL
        reads as `expired`, older than `max_staleness_ms` as `stale`: no values."""
        layouts = [self._cached_layout(req.view, req.features, t_ms) for req in requests]
        commands = [("HGETALL", entity_key(self.project, req.view.name, key)) for req in requests for key in req.keys]
        replies = iter((yield commands))
        out: list[ViewResult] = []
        distinct: list[tuple[list[Any], int, str, list[bytes]]] = []
        for req, (layout, index, lifetimes) in zip(requests, layouts):
            cols: list[list[Any]] = [[] for _ in req.features]
            event_ms: list[int | None] = []
            states: list[str] = []
            for key in req.keys:
                reply = next(replies)
                got: dict[bytes, bytes] = reply if isinstance(reply, dict) else _pairs(reply)
                newest = got.get(b"_ts")
                state = _entity_state(newest, t_ms, req.view.ttl_ms, max_staleness_ms)
                event_ms.append(None if newest is None else int(newest))
                states.append(state)
                if state != FOUND:
                    for col in cols:
                        col.append(None)
                    continue
                accs = [_Acc() if field is None else None for _, field in layout]
                for name, raw in got.items():
                    hit = index.get(name)
                    if hit is None:
                        if lifetimes:
                            _add_lifetime(lifetimes, accs, name, raw, got)
                        continue
                    stat, positions = hit
                    if stat == "c":  # the common statistics, parsed once for every feature they feed
                        n = int(raw)
                        for pos in positions:
                            accs[pos].count += n  # type: ignore[union-attr]
                    elif stat == "s":
                        parts = [float(x) for x in raw.split()] if b" " in raw else [float(raw)]
                        for pos in positions:
                            accs[pos].sums.extend(parts)  # type: ignore[union-attr]
                    else:
                        for pos in positions:
                            accs[pos].add(stat, name, raw, got)  # type: ignore[union-attr]
                for pos, (feat, field) in enumerate(layout):
                    if field is not None:
                        cols[pos].append(decode_value(got.get(field), feat.dtype))
                        continue
                    acc = accs[pos]
                    assert acc is not None
                    cols[pos].append(acc.value(feat))
                    if feat.function == "count_distinct" and acc.hlls:
                        ekey = entity_key(self.project, req.view.name, key)
                        distinct.append((cols[pos], len(cols[pos]) - 1, ekey, acc.hlls))
            out.append(ViewResult(dict(zip(req.features, cols)), event_ms, states))
        if distinct:
            counts = yield [("PFCOUNT", *[hll_key(ekey, f.decode()) for f in fields]) for _, _, ekey, fields in distinct]
            for (col, row, _, _), n in zip(distinct, counts):
                col[row] = int(n)
        return out


#: Entity states; with a value of None a found entity's feature reads as `null`.
FOUND, NOT_FOUND, EXPIRED, STALE = "present", "not_found", "expired", "stale"


def _entity_state(newest: bytes | None, t_ms: int, ttl_ms: int | None, max_staleness_ms: int | None) -> str:
    if newest is None:
        return NOT_FOUND
    age = t_ms - int(newest)
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


def _add_lifetime(lifetimes: _Lifetimes, accs: list[_Acc | None], name: bytes, raw: bytes, got: dict[bytes, bytes]) -> None:
    """Merge a field of a lifetime tile set: every tile up to the one holding t, and the base."""
    for prefix, pos, last, stats in lifetimes:
        if name.startswith(prefix):
            idx, _, stat = name[len(prefix):].partition(b"|")
            st = stat.decode()
            if st in stats and int(idx) <= last:
                accs[pos].add(st, name, raw, got)  # type: ignore[union-attr]

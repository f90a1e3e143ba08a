"""Read features from Redis: all entities and views of a request in one pipelined round trip."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from featurestore.online.keys import entity_key, row_field, tile_field
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

    __slots__ = ("count", "total", "lo", "hi", "last_order", "last")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.lo: float | None = None
        self.hi: float | None = None
        self.last_order: tuple[int, ...] | None = None
        self.last: bytes | None = None

    def add(self, stat: str, raw: bytes, extra: bytes | None) -> None:
        if stat == "c":
            self.count += int(raw)
        elif stat == "s":
            self.total += float(raw)
        elif stat == "m":
            x = float(raw)
            self.lo = x if self.lo is None or x < self.lo else self.lo
        elif stat == "M":
            x = float(raw)
            self.hi = x if self.hi is None or x > self.hi else self.hi
        elif stat == "l" and extra is not None:
            order = tuple(int(v) for v in extra.split())
            if self.last_order is None or order > self.last_order:
                self.last_order, self.last = order, raw

    def value(self, agg: AggregationPlan) -> Any:
        f = agg.function
        if f == "count":
            return self.count
        if f == "sum":
            return _cast(self.total, agg.dtype)
        if f == "mean":
            return self.total / self.count if self.count else None
        if f == "min":
            return None if self.lo is None else _cast(self.lo, agg.dtype)
        if f == "max":
            return None if self.hi is None else _cast(self.hi, agg.dtype)
        return decode_value(self.last, agg.dtype)


class OnlineReader:
    """Reads feature values as of a given instant."""

    def __init__(self, client: redis.Redis, project: str, plan: Plan) -> None:
        self.client = client
        self.project = project
        self.plan = plan
        self._layouts: dict[tuple[Any, ...], tuple[list[Any], dict[bytes, list[tuple[int, str]]]]] = {}

    def _cached_layout(self, view: ViewPlan, features: Sequence[str], t_ms: int) -> tuple[list[Any], dict[bytes, list[tuple[int, str]]]]:
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
    def _layout(view: ViewPlan, features: Sequence[str], t_ms: int) -> tuple[list[Any], dict[bytes, list[tuple[int, str]]]]:
        """Per feature its plan (and row field), and an index: tile field -> (feature position, stat)
        for every tile statistic inside the feature's window at `t_ms`."""
        rows = {r.name: r for r in view.row_features}
        aggs = {a.name: a for a in view.aggregations}
        layout: list[Any] = []
        index: dict[bytes, list[tuple[int, str]]] = {}
        for pos, name in enumerate(features):
            if name in rows:
                layout.append((rows[name], row_field(name).encode()))
                continue
            agg = aggs[name]
            layout.append((agg, None))
            for stat in STATS_FOR_FUNCTION[agg.function]:
                for idx in window_tiles(t_ms, agg.window_ms, agg.tile_ms):
                    index.setdefault(tile_field(agg.column, agg.tile_ms, idx, stat).encode(), []).append((pos, stat))
        return layout, index

    def read(self, requests: Sequence[ViewRequest], t_ms: int) -> list[dict[str, list[Any]]]:
        """Per request, feature name -> values (one per key), evaluated at `t_ms`.

        One pipelined HGETALL per (view, entity): hashes are bounded (expired tiles are
        trimmed), and each is scanned once, merging the tiles inside each window."""
        pipe = self.client.pipeline(transaction=False)
        layouts = []
        for req in requests:
            layouts.append(self._cached_layout(req.view, req.features, t_ms))
            for key in req.keys:
                pipe.execute_command("HGETALL", entity_key(self.project, req.view.name, key))
        replies = iter(pipe.execute())
        out: list[dict[str, list[Any]]] = []
        for req, (layout, index) in zip(requests, layouts):
            cols: list[list[Any]] = [[] for _ in req.features]
            for _ in req.keys:
                got: dict[bytes, bytes] = next(replies)
                newest = got.get(b"_ts")
                if newest is None or (req.view.ttl_ms is not None and t_ms - int(newest) > req.view.ttl_ms):
                    for col in cols:
                        col.append(None)
                    continue
                accs = [_Acc() if field is None else None for _, field in layout]
                for name, raw in got.items():
                    targets = index.get(name)
                    if targets:
                        for pos, stat in targets:
                            acc = accs[pos]
                            assert acc is not None
                            acc.add(stat, raw, got.get(name + b"o") if stat == "l" else None)
                for pos, (feat, field) in enumerate(layout):
                    if field is not None:
                        cols[pos].append(decode_value(got.get(field), feat.dtype))
                    else:
                        acc = accs[pos]
                        assert acc is not None
                        cols[pos].append(acc.value(feat))
            out.append(dict(zip(req.features, cols)))
        return out

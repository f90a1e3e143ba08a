"""Read features from Redis: all entities and views of a request in one pipelined round trip."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from featurestore.online.keys import entity_key, row_field, tile_field
from featurestore.plan import AggregationPlan, Plan, RowFeaturePlan, ViewPlan
from featurestore.plan.windows import STATS_FOR_FUNCTION, window_tiles


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


def _stat(tiles: list[dict[str, bytes | None]], stat: str) -> list[bytes]:
    return [v for t in tiles if (v := t.get(stat)) is not None]


def aggregate_tiles(agg: AggregationPlan, tiles: list[dict[str, bytes | None]]) -> Any:
    """The value of an aggregation from the tiles of its window (stat -> raw value per tile)."""
    f = agg.function
    if f == "count":
        return sum(int(v) for v in _stat(tiles, "c"))
    if f == "sum":
        return _cast(sum(float(v) for v in _stat(tiles, "s")), agg.dtype)
    if f == "mean":
        n = sum(int(v) for v in _stat(tiles, "c"))
        return sum(float(v) for v in _stat(tiles, "s")) / n if n else None
    if f in ("min", "max"):
        vals = [float(v) for v in _stat(tiles, "m" if f == "min" else "M")]
        if not vals:
            return None
        return _cast(min(vals) if f == "min" else max(vals), agg.dtype)
    # last: the value of the tile whose newest event is newest
    best: tuple[tuple[int, ...], bytes] | None = None
    for t in tiles:
        order, value = t.get("lo"), t.get("l")
        if order is None or value is None:
            continue
        key = tuple(int(x) for x in order.split())
        if best is None or key > best[0]:
            best = (key, value)
    return decode_value(best[1], agg.dtype) if best else None


class OnlineReader:
    """Reads feature values as of a given instant."""

    def __init__(self, client: redis.Redis, project: str, plan: Plan) -> None:
        self.client = client
        self.project = project
        self.plan = plan

    @staticmethod
    def _fields(view: ViewPlan, features: Sequence[str], t_ms: int) -> tuple[list[str], list[Any]]:
        """Hash fields to fetch and, per feature, how to find its parts among them."""
        fields: dict[str, int] = {"_ts": 0}
        rows = {r.name: r for r in view.row_features}
        aggs = {a.name: a for a in view.aggregations}
        layout: list[Any] = []

        def slot(name: str) -> int:
            return fields.setdefault(name, len(fields))

        for name in features:
            if name in rows:
                layout.append((rows[name], slot(row_field(name))))
            else:
                agg = aggs[name]
                stats = STATS_FOR_FUNCTION[agg.function] + (("lo",) if agg.function == "last" else ())
                tiles = [
                    {stat: slot(tile_field(agg.column, agg.tile_ms, idx, stat)) for stat in stats}
                    for idx in window_tiles(t_ms, agg.window_ms, agg.tile_ms)
                ]
                layout.append((agg, tiles))
        return list(fields), layout

    def read(self, requests: Sequence[ViewRequest], t_ms: int) -> list[dict[str, list[Any]]]:
        """Per request, feature name -> values (one per key), evaluated at `t_ms`."""
        pipe = self.client.pipeline(transaction=False)
        plans = []
        for req in requests:
            fields, layout = self._fields(req.view, req.features, t_ms)
            plans.append(layout)
            for key in req.keys:
                pipe.hmget(entity_key(self.project, req.view.name, key), fields)
        replies = iter(pipe.execute())
        out: list[dict[str, list[Any]]] = []
        for req, layout in zip(requests, plans):
            cols: dict[str, list[Any]] = {name: [] for name in req.features}
            for _ in req.keys:
                got = next(replies)
                alive = got[0] is not None and (
                    req.view.ttl_ms is None or t_ms - int(got[0]) <= req.view.ttl_ms
                )
                for name, (feat, where) in zip(req.features, layout):
                    if not alive:
                        cols[name].append(None)
                    elif isinstance(feat, RowFeaturePlan):
                        cols[name].append(decode_value(got[where], feat.dtype))
                    else:
                        tiles = [{stat: got[i] for stat, i in tile.items()} for tile in where]
                        cols[name].append(aggregate_tiles(feat, tiles))
            out.append(cols)
        return out

"""Write one batch of view rows to Redis: one atomic Lua call per entity, all pipelined."""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
import redis

from featurestore.online.keys import entity_key, row_field, tile_field, tile_prefix
from featurestore.online.layout import TileSet, fields_per_entity, tile_sets
from featurestore.plan import Plan, ViewPlan
from featurestore.plan.windows import tile_index
from featurestore.records import ViewRows

_PIPELINE_CHUNK = 2000


def _num(x: Any) -> str:
    return repr(float(x)) if not isinstance(x, int) or isinstance(x, bool) else str(x)


class _TileAcc:
    """Statistics of one tile accumulated over a batch."""

    __slots__ = ("count", "total", "lo", "hi", "last_order", "last")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.lo: Any = None
        self.hi: Any = None
        self.last_order: tuple[int, int, int] | None = None
        self.last: Any = None

    def add(self, value: Any, order: tuple[int, int, int], numeric: bool) -> None:
        self.count += 1
        if numeric:
            self.total += value
            if self.lo is None or value < self.lo:
                self.lo = value
            if self.hi is None or value > self.hi:
                self.hi = value
        if self.last_order is None or order > self.last_order:
            self.last_order, self.last = order, value


class OnlineWriter:
    """Applies ViewRows to the online store. Safe to call from one thread at a time."""

    def __init__(self, client: redis.Redis, project: str, plan: Plan, max_future_skew_ms: int = 0) -> None:
        self.client = client
        self.project = project
        self.views = {v.name: v for v in plan.views}
        self.skew_ms = max_future_skew_ms
        lua = resources.files("featurestore.online").joinpath("tiles.lua").read_text()
        self._script = client.register_script(lua)
        self._tile_sets = {v.name: tile_sets(v) for v in plan.views}
        self._limits = {v.name: int(fields_per_entity(v, max_future_skew_ms) * 1.5) + 8 for v in plan.views}

    def write(self, batches: list[ViewRows]) -> int:
        """Apply the batches; returns the number of entity hashes updated."""
        calls: list[tuple[str, list[Any]]] = []
        for rows in batches:
            if len(rows):
                calls.extend(self._calls_for(self.views[rows.view], rows))
        for start in range(0, len(calls), _PIPELINE_CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for key, args in calls[start : start + _PIPELINE_CHUNK]:
                self._script(keys=[key], args=args, client=pipe)
            pipe.execute()
        return len(calls)

    def _calls_for(self, view: ViewPlan, rows: ViewRows) -> list[tuple[str, list[Any]]]:
        by_key: dict[tuple[Any, ...], list[int]] = {}
        for i, key in enumerate(rows.keys):
            by_key.setdefault(key, []).append(i)
        sets = self._tile_sets[view.name]
        numeric = {ts.column: any(s in ts.stats for s in "smM") for ts in sets}
        row_names = [f.name for f in view.row_features]
        calls = []
        for key, idxs in by_key.items():
            args: list[Any] = []
            newest = max(idxs, key=lambda i: (rows.ts[i], rows.partition[i], rows.offset[i]))
            # "R" also records the newest event's time (_ts), which TTL needs even without row features.
            args += ["R", rows.ts[newest], rows.partition[newest], rows.offset[newest], len(row_names)]
            for name in row_names:
                args += [row_field(name), orjson.dumps(rows.values[name][newest])]
            for tset in sets:
                args += self._tile_ops(tset, rows, idxs, numeric[tset.column])
            if sets:
                max_ts = max(rows.ts[i] for i in idxs)
                args += ["T", self._limits[view.name], len(sets)]
                for tset in sets:
                    keep_from = tile_index(max_ts - self.skew_ms, tset.tile_ms) - tset.max_window_ms // tset.tile_ms
                    args += [tile_prefix(tset.column, tset.tile_ms), keep_from]
            calls.append((entity_key(self.project, view.name, key), args))
        return calls

    @staticmethod
    def _tile_ops(tset: TileSet, rows: ViewRows, idxs: list[int], numeric: bool) -> list[Any]:
        col = rows.values[tset.column]
        tiles: dict[int, _TileAcc] = {}
        for i in idxs:
            value = col[i]
            if value is None:
                continue
            acc = tiles.get(tile_index(rows.ts[i], tset.tile_ms))
            if acc is None:
                acc = tiles[tile_index(rows.ts[i], tset.tile_ms)] = _TileAcc()
            acc.add(value, (rows.ts[i], rows.partition[i], rows.offset[i]), numeric)
        ops: list[Any] = []
        for idx, acc in tiles.items():
            field = lambda stat: tile_field(tset.column, tset.tile_ms, idx, stat)  # noqa: E731
            for stat in tset.stats:
                if stat == "c":
                    ops += ["C", field("c"), acc.count]
                elif stat == "s":
                    ops += ["S", field("s"), _num(acc.total)]
                elif stat == "m":
                    ops += ["m", field("m"), _num(acc.lo)]
                elif stat == "M":
                    ops += ["M", field("M"), _num(acc.hi)]
                elif stat == "l" and acc.last_order is not None:
                    ts, p, o = acc.last_order
                    ops += ["L", field("l"), ts, p, o, orjson.dumps(acc.last)]
        return ops

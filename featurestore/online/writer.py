"""Write one batch of view rows to Redis: one atomic Lua call per entity, all pipelined.

The batch is first reduced in Python: per entity, its newest event (for row-level
features and TTL) and per tile the count, sum, min, max and newest value. Each entity's
updates then travel as a single payload argument, so the client packs four arguments per
entity whatever the number of tiles touched.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import orjson
import redis

from featurestore.online.keys import entity_key, row_field, tile_field, tile_prefix
from featurestore.online.layout import fields_per_entity, tile_sets
from featurestore.plan import Plan, ViewPlan
from featurestore.plan.windows import tile_index
from featurestore.records import ViewRows

_PIPELINE_CHUNK = 2000
SEP = "\x1f"  # token separator of the payload; JSON escapes control characters, so values never contain it


def _num(x: Any) -> str:
    return str(x) if isinstance(x, int) and not isinstance(x, bool) else repr(float(x))


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
        calls: list[tuple[str, str]] = []
        for rows in batches:
            if len(rows):
                calls.extend(self._calls_for(self.views[rows.view], rows))
        for start in range(0, len(calls), _PIPELINE_CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for key, payload in calls[start : start + _PIPELINE_CHUNK]:
                self._script(keys=[key], args=[payload], client=pipe)
            pipe.execute()
        return len(calls)

    def _calls_for(self, view: ViewPlan, rows: ViewRows) -> list[tuple[str, str]]:
        sets = self._tile_sets[view.name]
        info = [(rows.values[s.column], s.tile_ms, any(st in s.stats for st in "smM")) for s in sets]
        ts, part, off, keys = rows.ts, rows.partition, rows.offset, rows.keys
        # per entity: [index of newest event, max event time, {(tile set, tile index): accumulator}]
        per_key: dict[tuple[Any, ...], list[Any]] = {}
        for i in range(len(ts)):
            t = ts[i]
            order = (t, part[i], off[i])
            entry = per_key.get(keys[i])
            if entry is None:
                entry = per_key[keys[i]] = [i, order, {}]
            elif order > entry[1]:
                entry[0], entry[1] = i, order
            tiles = entry[2]
            for si, (col, tile_ms, numeric) in enumerate(info):
                v = col[i]
                if v is None:
                    continue
                slot = (si, -((-t) // tile_ms) - 1)
                acc = tiles.get(slot)
                if acc is None:
                    # count, sum, min, max, newest order, newest value
                    tiles[slot] = [1, v, v, v, order, v] if numeric else [1, 0, None, None, order, v]
                    continue
                acc[0] += 1
                if numeric:
                    acc[1] += v
                    if v < acc[2]:
                        acc[2] = v
                    if v > acc[3]:
                        acc[3] = v
                if order > acc[4]:
                    acc[4], acc[5] = order, v
        row_fields = [(row_field(f.name), rows.values[f.name]) for f in view.row_features]
        prefixes = [tile_prefix(s.column, s.tile_ms) for s in sets]
        limit = self._limits[view.name]
        calls = []
        for key, (newest, newest_order, tiles) in per_key.items():
            # "R" records the newest event (_ts, needed by TTL) and the row-level features
            tokens: list[str] = ["R", str(ts[newest]), str(part[newest]), str(off[newest]), str(len(row_fields))]
            for name, col in row_fields:
                tokens += [name, orjson.dumps(col[newest]).decode()]
            for (si, idx), (c, s, lo, hi, order, last) in tiles.items():
                tset = sets[si]
                for stat in tset.stats:
                    field = tile_field(tset.column, tset.tile_ms, idx, stat)
                    if stat == "c":
                        tokens += ["C", field, str(c)]
                    elif stat == "s":
                        tokens += ["S", field, _num(s)]
                    elif stat == "m":
                        tokens += ["m", field, _num(lo)]
                    elif stat == "M":
                        tokens += ["M", field, _num(hi)]
                    else:
                        tokens += ["L", field, str(order[0]), str(order[1]), str(order[2]), orjson.dumps(last).decode()]
            if sets:
                tokens += ["T", str(limit), str(len(sets))]
                max_ts = newest_order[0] if not tiles else max(newest_order[0], max(o[4][0] for o in tiles.values()))
                for tset, prefix in zip(sets, prefixes):
                    keep_from = tile_index(max_ts - self.skew_ms, tset.tile_ms) - tset.max_window_ms // tset.tile_ms
                    tokens += [prefix, str(keep_from)]
            calls.append((entity_key(self.project, view.name, key), SEP.join(tokens) + SEP))
        return calls

"""Write one batch of view rows to Redis: one atomic, idempotent Lua call per entity, pipelined.

The batch is first reduced in Python: per entity and source partition, the newest event
(for row-level features and TTL) and per tile the count, sum, min, max and newest value.
Each entity's updates travel as a single payload argument. The script keeps, per entity
and partition, the highest offset applied, so replaying a batch (after a crash or by a
former owner of the partition) changes nothing: every event takes effect exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
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
_MAX_RESENDS = 5
SEP = "\x1f"  # token separator of the payload; JSON escapes control characters, so values never contain it


def _num(x: Any) -> str:
    return str(x) if isinstance(x, int) and not isinstance(x, bool) else repr(float(x))


class _Entity:
    """One entity's events in a batch, grouped by source partition (event indices)."""

    __slots__ = ("groups",)

    def __init__(self) -> None:
        self.groups: dict[int, list[int]] = {}


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
        self.groups_applied = 0
        self.groups_skipped = 0

    def write(self, batches: list[ViewRows]) -> int:
        """Apply the batches; returns the number of entity hashes written to."""
        work: list[tuple[ViewPlan, ViewRows, tuple[Any, ...], _Entity]] = []
        for rows in batches:
            if len(rows):
                view = self.views[rows.view]
                entities: dict[tuple[Any, ...], _Entity] = {}
                for i, (key, p) in enumerate(zip(rows.keys, rows.partition)):
                    ent = entities.get(key)
                    if ent is None:
                        ent = entities[key] = _Entity()
                    ent.groups.setdefault(p, []).append(i)
                work.extend((view, rows, key, ent) for key, ent in entities.items())
        for start in range(0, len(work), _PIPELINE_CHUNK):
            self._apply(work[start : start + _PIPELINE_CHUNK])
        return len(work)

    def _apply(self, work: list[tuple[ViewPlan, ViewRows, tuple[Any, ...], _Entity]]) -> None:
        pending = [(view, rows, key, ent.groups) for view, rows, key, ent in work]
        for _ in range(_MAX_RESENDS):
            pipe = self.client.pipeline(transaction=False)
            for view, rows, key, groups in pending:
                payload = self._payload(view, rows, groups)
                self._script(keys=[entity_key(self.project, view.name, key)], args=[payload], client=pipe)
            retry = []
            for (view, rows, key, groups), reply in zip(pending, pipe.execute()):
                status = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
                if status == "ok":
                    applied = int(reply[1])
                    self.groups_applied += applied
                    self.groups_skipped += len(groups) - applied
                    continue
                # some partitions were applied up to a mark inside this batch: resend the rest
                marks = {int(reply[j]): int(reply[j + 1]) for j in range(1, len(reply), 2)}
                trimmed = {
                    p: [i for i in idxs if rows.offset[i] > marks[p]] if p in marks else idxs for p, idxs in groups.items()
                }
                retry.append((view, rows, key, {p: idxs for p, idxs in trimmed.items() if idxs}))
            if not retry:
                return
            pending = retry
        raise RuntimeError(f"online writes kept conflicting for {len(pending)} entities; is another writer replaying?")

    def _payload(self, view: ViewPlan, rows: ViewRows, groups: dict[int, list[int]]) -> str:
        sets = self._tile_sets[view.name]
        tokens: list[str] = []
        max_ts = None
        for p, idxs in groups.items():
            offsets = [rows.offset[i] for i in idxs]
            tokens += ["G", str(p), str(min(offsets)), str(max(offsets))]
            newest = max(idxs, key=lambda i: (rows.ts[i], rows.offset[i]))
            tokens += ["R", str(rows.ts[newest]), str(p), str(rows.offset[newest]), str(len(view.row_features))]
            for f in view.row_features:
                tokens += [row_field(f.name), orjson.dumps(rows.values[f.name][newest]).decode()]
            for tset in sets:
                tokens += self._tile_tokens(tset, rows, idxs)
            group_max = max(rows.ts[i] for i in idxs)
            max_ts = group_max if max_ts is None else max(max_ts, group_max)
        if sets and max_ts is not None:
            tokens += ["T", str(self._limits[view.name]), str(len(sets))]
            for tset in sets:
                keep_from = tile_index(max_ts - self.skew_ms, tset.tile_ms) - tset.max_window_ms // tset.tile_ms
                tokens += [tile_prefix(tset.column, tset.tile_ms), str(keep_from)]
        return SEP.join(tokens) + SEP

    @staticmethod
    def _tile_tokens(tset: TileSet, rows: ViewRows, idxs: Sequence[int]) -> list[str]:
        col, tile_ms = rows.values[tset.column], tset.tile_ms
        numeric = any(s in tset.stats for s in "smM")
        tiles: dict[int, list[Any]] = {}
        for i in idxs:
            v = col[i]
            if v is None:
                continue
            t = rows.ts[i]
            order = (t, rows.partition[i], rows.offset[i])
            idx = -((-t) // tile_ms) - 1
            acc = tiles.get(idx)
            if acc is None:
                # count, sum, min, max, newest order, newest value
                tiles[idx] = [1, v, v, v, order, v] if numeric else [1, 0, None, None, order, v]
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
        tokens: list[str] = []
        for idx, (c, s, lo, hi, order, last) in tiles.items():
            for stat in tset.stats:
                field = tile_field(tset.column, tile_ms, idx, stat)
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
        return tokens

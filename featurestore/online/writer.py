"""Write one batch of view rows to Redis: one atomic, idempotent Lua call per entity, pipelined.

The batch is first reduced in Python: per entity and source partition, the newest event
(for row-level features and TTL) and per tile the statistics its aggregations need.
Each entity's updates travel as the tokens of one script call. The script keeps, per entity
and partition, the highest offset applied, so replaying a batch (after a crash or by a
former owner of the partition) changes nothing: every event takes effect exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

import orjson
import redis

from featurestore.online.keys import entity_key, layout_error, row_field
from featurestore.online.layout import LIFETIME_EXTRA_TILES, TileSet, fields_per_entity, packed_rows_bound, tile_sets
from featurestore.online.streaming import ScriptStream
from featurestore.plan import Plan, ViewPlan
from featurestore.plan.windows import LIFETIME_BASE_INDEX
from featurestore.records import ViewRows

_PIPELINE_CHUNK = 2000
_MAX_RESENDS = 5


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
        self._calls = ScriptStream(client, lua, _PIPELINE_CHUNK)
        self._tile_sets = {v.name: tile_sets(v) for v in plan.views}
        self._limits = {
            v.name: int(fields_per_entity(v, max_future_skew_ms + (v.allowed_lateness_ms or 0)) * 1.5) + 8 for v in plan.views
        }
        self._trim = {v.name: self._trim_tokens(v) for v in plan.views}
        self.groups_applied = 0
        self.groups_skipped = 0

    def _trim_tokens(self, view: ViewPlan) -> list[str]:
        """The trim instruction of a view's payloads: the same for every entity, since the
        script measures the bounds from the entity's own newest event."""
        sets = self._tile_sets[view.name]
        if not sets:
            return []
        tokens = ["T", str(self._limits[view.name]), str(len(sets))]
        slack = self.skew_ms + (view.allowed_lateness_ms or 0)
        for tset in sets:
            rows = str(packed_rows_bound(tset, slack))
            if tset.max_window_ms is None:  # lifetime: fold what no allowed event can reach
                tokens += [tset.prefix, str(tset.tile_ms), str(slack), str(1 + LIFETIME_EXTRA_TILES), "f", str(tset.last_n), rows]
            else:
                back = tset.max_window_ms // tset.tile_ms
                tokens += [tset.prefix, str(tset.tile_ms), str(self.skew_ms), str(back), "d", str(tset.last_n), rows]
        return tokens + ["B", str(LIFETIME_BASE_INDEX)]

    def write(self, batches: list[ViewRows]) -> int:
        """Apply the batches; returns the number of entity hashes written to."""
        work: list[tuple[ViewPlan, ViewRows, tuple[Any, ...], _Entity]] = []
        for rows in batches:
            if len(rows):
                view = self.views[rows.view]
                entities: dict[tuple[Any, ...], _Entity] = {}
                late = rows.late
                for i, (key, p) in enumerate(zip(rows.keys, rows.partition)):
                    if late and late[i]:
                        continue  # later than the allowed lateness: history only
                    ent = entities.get(key)
                    if ent is None:
                        ent = entities[key] = _Entity()
                    ent.groups.setdefault(p, []).append(i)
                work.extend((view, rows, key, ent) for key, ent in entities.items())
        self._apply(work)
        return len(work)

    def _apply(self, work: list[tuple[ViewPlan, ViewRows, tuple[Any, ...], _Entity]]) -> None:
        pending = [(view, rows, key, ent.groups) for view, rows, key, ent in work]
        for _ in range(_MAX_RESENDS):
            replies = self._calls.run(pending, self._call)
            retry = []
            for (view, rows, key, groups), reply in zip(pending, replies):
                if isinstance(reply, Exception):
                    if str(reply).startswith("FSLAYOUT"):
                        raise layout_error(entity_key(self.project, view.name, key), str(reply).split()[-1]) from None
                    raise reply
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

    def _call(self, item: tuple[ViewPlan, ViewRows, tuple[Any, ...], dict[int, list[int]]]) -> tuple[str, list[str]]:
        view, rows, key, groups = item
        return entity_key(self.project, view.name, key), self._payload(view, rows, groups)

    def _payload(self, view: ViewPlan, rows: ViewRows, groups: dict[int, list[int]]) -> list[str]:
        sets = self._tile_sets[view.name]
        tokens: list[str] = []
        for p, idxs in groups.items():
            offsets = [rows.offset[i] for i in idxs]
            tokens += ["G", str(p), str(min(offsets)), str(max(offsets))]
            newest = max(idxs, key=lambda i: (rows.ts[i], rows.offset[i]))
            tokens += ["R", str(rows.ts[newest]), str(p), str(rows.offset[newest]), str(len(view.row_features))]
            for f in view.row_features:
                tokens += [row_field(f.name), _json(rows.values[f.name][newest])]
            for tset in sets:
                tokens += _tile_tokens(tset, rows, idxs)
        tokens += self._trim[view.name]
        return tokens


def exact_partials(values: Sequence[Any]) -> list[str]:
    """The exact sum of `values` as a count and non-overlapping float partials (Shewchuk's
    msum): the Lua script adds them to a tile without rounding."""
    if len(values) == 1:
        x = values[0]
        return ["1", str(int(x)) if isinstance(x, int) else repr(float(x))]
    if all(isinstance(v, int) for v in values):  # ints and bools: exact already
        return ["1", str(int(sum(values)))]
    partials: list[float] = []
    for x in values:
        x = float(x)
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
        partials[i:] = [x]
    return [str(len(partials)), *(repr(p) for p in partials)]


def _order_key(rows: ViewRows, i: int) -> tuple[int, int, int]:
    return (rows.ts[i], rows.partition[i], rows.offset[i])


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


def _tile_tokens(tset: TileSet, rows: ViewRows, idxs: Sequence[int]) -> list[str]:
    """Tokens updating the tiles of one tile set with the events `idxs` of one group."""
    col, tile_ms, ts = rows.values[tset.column], tset.tile_ms, rows.ts
    where = rows.values[tset.where] if tset.where is not None else None
    per_tile: dict[int, list[int]] = {}
    for i in idxs:
        if col[i] is None or (where is not None and where[i] is not True):
            continue
        idx = -((-ts[i]) // tile_ms) - 1
        members = per_tile.get(idx)
        if members is None:
            per_tile[idx] = [i]
        else:
            members.append(i)
    tokens: list[str] = []
    prefix, packed, others = tset.prefix, tset.packed, tset.per_tile_fields
    for idx, members in per_tile.items():
        values = [col[i] for i in members]
        if packed:
            tokens += ["P", prefix, packed, str(idx)]
            for stat in packed:
                if stat == "c":
                    tokens.append(str(len(values)))
                elif stat == "s":
                    tokens += exact_partials(values)
                elif stat == "q":
                    tokens += exact_partials([v * v for v in values])
                elif stat == "m":
                    tokens.append(_num(min(values)))
                else:
                    tokens.append(_num(max(values)))
        base = f"{prefix}|{idx}|"
        for stat in others:
            field = base + stat
            if stat in "lf":
                if len(members) == 1:
                    i = members[0]
                else:
                    pick = max if stat == "l" else min
                    i = pick(members, key=lambda j: _order_key(rows, j))
                tokens += [stat.upper(), field, str(ts[i]), str(rows.partition[i]), str(rows.offset[i]), _json(col[i])]
            elif stat == "n":
                newest = sorted(members, key=lambda j: _order_key(rows, j), reverse=True)[: tset.last_n]
                items = [[*_order_key(rows, j), _json(col[j])] for j in newest]
                tokens += ["N", field, str(tset.last_n), _json(items)]
            elif stat == "d":
                distinct = sorted({_json(v) for v in values})
                tokens += ["H", field, str(len(distinct)), *distinct]
    return tokens

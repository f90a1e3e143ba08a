"""Write one batch of view rows to Redis: one atomic, idempotent Lua call per entity, pipelined.

The batch is first reduced (`featurestore.online.payloads`, vectorised): per entity and
source partition, the newest event (for row-level features and TTL) and per tile the
statistics its aggregations need. Each entity's updates travel as the tokens of one script call. The script keeps, per entity
and partition, the highest offset applied, so replaying a batch (after a crash or by a
former owner of the partition) changes nothing: every event takes effect exactly once.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import redis

from featurestore.online.keys import entity_key, layout_error
from featurestore.online.layout import LIFETIME_EXTRA_TILES, fields_per_entity, packed_rows_bound, tile_sets
from featurestore.online.payloads import EntityPayload, build_payloads
from featurestore.online.streaming import EncodedArgs, ScriptStream
from featurestore.plan import Plan, ViewPlan
from featurestore.plan.windows import LIFETIME_BASE_INDEX
from featurestore.records import ViewRows

_PIPELINE_CHUNK = 2000
_MAX_RESENDS = 5


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
        self._trim = {v.name: EncodedArgs.of(self._trim_tokens(v)) for v in plan.views}
        self.groups_applied = 0
        self.groups_skipped = 0

    def _trim_tokens(self, view: ViewPlan) -> list[str]:
        """The trim instruction ending a view's payloads: the same for every entity (the script
        measures the bounds from the entity's own newest event), so it is encoded once."""
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
        work: list[tuple[ViewPlan, ViewRows, EntityPayload]] = []
        for rows in batches:
            if len(rows):
                view = self.views[rows.view]
                work.extend((view, rows, p) for p in build_payloads(view, self._tile_sets[view.name], rows))
        self._apply(work)
        return len(work)

    def _apply(self, work: list[tuple[ViewPlan, ViewRows, EntityPayload]]) -> None:
        pending = work
        for _ in range(_MAX_RESENDS):
            replies = self._calls.run(pending, self._call)
            retry: list[tuple[ViewPlan, ViewRows, EntityPayload]] = []
            for (view, rows, payload), reply in zip(pending, replies):
                if isinstance(reply, Exception):
                    if str(reply).startswith("FSLAYOUT"):
                        raise layout_error(entity_key(self.project, view.name, payload.key), str(reply).split()[-1]) from None
                    raise reply
                status = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
                if status == "ok":
                    applied = int(reply[1])
                    self.groups_applied += applied
                    self.groups_skipped += len(payload.groups) - applied
                    continue
                # some partitions were applied up to a mark inside this batch: resend the rest
                marks = {int(reply[j]): int(reply[j + 1]) for j in range(1, len(reply), 2)}
                rest = [i for p, idxs in payload.groups.items() for i in idxs if p not in marks or rows.offset[i] > marks[p]]
                retry.extend((view, rows, p) for p in build_payloads(view, self._tile_sets[view.name], rows, rest))
            if not retry:
                return
            pending = retry
        raise RuntimeError(f"online writes kept conflicting for {len(pending)} entities; is another writer replaying?")

    def _call(self, item: tuple[ViewPlan, ViewRows, EntityPayload]) -> tuple[str, list[Any], EncodedArgs]:
        view, _, payload = item
        return entity_key(self.project, view.name, payload.key), payload.tokens, self._trim[view.name]



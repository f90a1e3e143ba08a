"""Write batches of view rows to Redis: each entity's state per source partition, computed
here and stored whole, guarded by its offset.

A batch is grouped by (entity, partition); each group's state comes from this writer's
cache (it owns the partition), or from Redis on a miss. `featurestore.online.state` folds the
group's new events into it, vectorised over the batch, and the new states are written with
`guard.lua`, which stores a state only if the entity's value does not already hold one of a
higher offset for that partition. Events at or below a state's offset are skipped, so replaying a
batch (after a crash, or by a former owner of the partition) changes nothing: every event
takes effect exactly once.

With `background=True` the states of a batch are sent by a worker thread while the caller
goes on (consumes and decodes the next batch); `settle()` waits until everything computed
so far is in Redis, and must run before the offsets of those events are committed. One
batch is in flight at a time: the next `write` settles the previous one first.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import resources
from typing import Any

import numpy as np
import redis
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from featurestore.collector import collector_paused
from featurestore.online.connection import Keyed, OnlineRedis
from featurestore.online.entity_value import not_a_value, unpack_value, value_alone
from featurestore.online.fold import Bounds, Groups, fold_states, group_rows, set_bounds
from featurestore.online.keys import (
    LAYOUT_VERSION,
    PROJECT_LAYOUT_FIELD,
    entity_keys,
    layout_error,
    layout_probe,
    newest_field,
    other_layout_error,
    project_key,
)
from featurestore.online.layout import TileSet, tile_sets
from featurestore.online.state import StateCodec
from featurestore.online.streaming import pack_command
from featurestore.plan import Plan, ViewPlan
from featurestore.records import ViewRows

_Write = tuple[bytes, int, int, bytes]
"""A state to store: (entity key, partition, applied offset, encoded state)."""
_Newest = dict[tuple[str, int], int]
"""(view, partition) -> event time (ms) of the newest event of a batch."""
_KEYS_PER_CALL = 200
_CALLS_PER_SEND = 10
#: Bytes of entity states a writer keeps in memory (of the partitions it owns); states beyond
#: are read back from Redis when their entity comes again.
DEFAULT_CACHE_BYTES = 512 * 1024 * 1024


def project_marker(project: str, newest: _Newest) -> tuple[bytes, bytes]:
    """The command that marks the project's data in Redis (`keys.project_key`) with its layout
    and the newest event time stored per (view, partition); every writer sends it."""
    key = project_key(project).encode()
    args: list[Any] = [b"HSET", key, PROJECT_LAYOUT_FIELD, LAYOUT_VERSION]
    for (view, partition), ms in newest.items():
        args += (newest_field(view, partition), ms)
    return key, pack_command(args)


class _View:
    def __init__(self, view: ViewPlan, topic: str, skew_ms: int) -> None:
        self.plan = view
        self.topic = topic
        self.sets: list[TileSet] = tile_sets(view)
        self.bounds: list[Bounds] = set_bounds(view, self.sets, skew_ms)
        self.codec = StateCodec.of(self.sets)
        self.cache: dict[tuple[int, tuple[Any, ...]], bytes] = {}
        """(partition, key) -> the encoded state (bytes: many states as objects would keep the
        garbage collector busy)."""


class OnlineWriter:
    """Applies ViewRows to the online store. Safe to call from one thread at a time."""

    def __init__(self, client: redis.Redis[bytes], project: str, plan: Plan, max_future_skew_ms: int = 0,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, background: bool = False) -> None:
        self.client = client
        self.redis = OnlineRedis(client)
        self.project = project
        self.views = {v.name: _View(v, plan.source(v.source).topic, max_future_skew_ms) for v in plan.views}
        self.skew_ms = max_future_skew_ms
        self.cache_bytes = cache_bytes
        self.cached_bytes = 0
        self._guard = GuardedStore(self.redis)
        self.groups_applied = 0
        self.groups_skipped = 0
        self._sender = ThreadPoolExecutor(1, thread_name_prefix="online-store") if background else None
        self._in_flight: tuple[Future[None], list[_Write]] | None = None
        self._unsent: list[_Write] = []
        self._newest: _Newest = {}
        """The newest event time this writer applied per (view, partition)."""

    @collector_paused
    def write(self, batches: Sequence[ViewRows], on_stored: Callable[[], None] | None = None) -> int:
        """Apply the batches (after settling the previous ones); returns the number of entity
        states written. `on_stored` runs once they are in Redis (on the worker thread in the
        background)."""
        self.settle()
        writes: list[_Write] = []
        newest: _Newest = {}
        try:
            for rows in batches:
                if len(rows):
                    writes += self._fold_view(self.views[rows.view], rows, newest)
        except BaseException:  # states already folded (and cached) are stored by the next settle
            self._unsent += writes
            raise
        if self._sender is None:
            self._store(writes, newest=newest)
            if on_stored:
                on_stored()
        else:
            self._in_flight = (self._sender.submit(self._store, writes, on_stored, newest), writes)
        return len(writes)

    def settle(self) -> None:
        """Wait until every state computed so far is in Redis. A store that failed is sent
        again here (its states are already the cache's), and its error raised if it fails again."""
        if self._in_flight is not None:
            future, writes = self._in_flight
            self._in_flight = None
            try:
                future.result()
            except BaseException:
                self._unsent = writes
                raise
        if self._unsent:
            self._store(self._unsent)
            self._unsent = []

    def close(self) -> None:
        """Settle, and stop the worker thread."""
        try:
            self.settle()
        finally:
            if self._sender is not None:
                self._sender.shutdown(wait=True)

    def forget(self, topic: str, partition: int) -> None:
        """A partition moved away: its cached states may be overtaken by its next owner."""
        for view in self.views.values():
            if view.topic == topic:
                for key in [k for k in view.cache if k[0] == partition]:
                    self.cached_bytes -= len(view.cache.pop(key))
                self._newest.pop((view.plan.name, partition), None)

    def _fold_view(self, view: _View, rows: ViewRows, newest: _Newest) -> list[_Write]:
        """The new states of one view's batch (also put in the cache); the newest event time
        per partition goes to `newest`."""
        picked = np.arange(len(rows))
        if rows.late:
            picked = picked[~np.asarray(rows.late, dtype=bool)]
        if not len(picked):
            return []
        ts = np.asarray(rows.ts, dtype=np.int64)
        part = np.asarray(rows.partition, dtype=np.int64)
        off = np.asarray(rows.offset, dtype=np.int64)
        on_time_ts, on_time_part = ts[picked], part[picked]
        for p in np.unique(on_time_part).tolist():
            at = (view.plan.name, p)
            newest[at] = self._newest[at] = max(self._newest.get(at, 0), int(on_time_ts[on_time_part == p].max()))
        groups = group_rows(rows.keys, ts, part, off, picked)
        stored = self._states(view, groups)
        changed, applied, blobs = fold_states(view.plan, view.sets, view.bounds, view.codec, groups, stored, rows.values)
        self.groups_skipped += len(stored) - len(changed)
        if not changed:
            return []
        keys = entity_keys(self.project, view.plan.name, [groups.keys[g] for g in changed])
        self.groups_applied += len(changed)
        slots = [(groups.partitions[g], groups.keys[g]) for g in changed]
        replaced = filter(None, map(view.cache.pop, slots, itertools.repeat(None)))  # re-inserted: the newest
        self.cached_bytes += sum(map(len, blobs)) - sum(map(len, replaced))
        view.cache.update(zip(slots, blobs))
        while self.cached_bytes > self.cache_bytes and view.cache:  # the least recently written go first
            self.cached_bytes -= len(view.cache.pop(next(iter(view.cache))))
        return [(key, groups.partitions[g], a, blob) for key, g, a, blob in zip(keys, changed, applied, blobs)]

    def _states(self, view: _View, groups: Groups) -> list[bytes | None]:
        """Each group's encoded state: cached, else read from Redis (None when Redis holds none)."""
        states = list(map(view.cache.get, zip(groups.partitions, groups.keys)))
        missing = [g for g, s in enumerate(states) if s is None]
        if missing:
            keys = entity_keys(self.project, view.plan.name, [groups.keys[g] for g in missing])
            for key, g, stored in zip(keys, missing, read_values(self.redis, keys)):
                states[g] = dict(stored).get(groups.partitions[g])
        return states

    def _store(self, writes: list[_Write], on_stored: Callable[[], None] | None = None,
               newest: _Newest | None = None) -> None:
        """Store the states, then set the project's hash (`keys.project_key`)."""
        if writes:
            self._guard.store(writes, [project_marker(self.project, newest or {})])
        if on_stored:
            on_stored()


def read_values(online: OnlineRedis, keys: Sequence[bytes]) -> list[list[tuple[int, bytes]]]:
    """The states Redis holds for these entity keys, as (partition, state) (empty: none); a key
    of another layout raises OnlineLayoutError naming the fix."""
    replies = online.run([(key, (b"GET", key)) for key in keys], raise_errors=False)
    out: list[list[tuple[int, bytes]]] = []
    for key, reply in zip(keys, replies):
        if isinstance(reply, redis.ResponseError) and str(reply).startswith("WRONGTYPE"):
            raise other_layout_error(key.decode(), online.run([layout_probe(key)], raise_errors=False)[0])
        if isinstance(reply, Exception):
            raise reply
        out.append([] if reply is None else unpack_value(reply, key))
    return out


class GuardedStore:
    """Stores entity states with guard.lua (each only if Redis holds no newer state of its
    partition): `_KEYS_PER_CALL` keys per call on one Redis, the keys of one slot per call on
    a cluster; several calls per send. The one way states reach Redis."""

    def __init__(self, online: OnlineRedis) -> None:
        self.redis = online
        self._lua = resources.files("featurestore.online").joinpath("guard.lua").read_text()
        self._sha: str | None = None

    def store(self, writes: Sequence[_Write], after: Sequence[Keyed] = ()) -> None:
        """Store the writes, then run the commands `after` (in the last send)."""
        if not writes and not after:
            return
        if self._sha is None:
            self._sha = self.redis.load_script(self._lua)
        calls = self._calls(writes) + list(after)
        replies = self.redis.stream(calls[i : i + _CALLS_PER_SEND] for i in range(0, len(calls), _CALLS_PER_SEND))
        if any(isinstance(r, NoScriptError) for r in replies):  # Redis restarted or flushed its scripts
            self._sha = self.redis.load_script(self._lua)
            calls = self._calls(writes) + list(after)
            replies = self.redis.stream(calls[i : i + _CALLS_PER_SEND] for i in range(0, len(calls), _CALLS_PER_SEND))
        for reply in replies:
            if isinstance(reply, Exception):
                text = str(reply)
                if text.startswith("FSLAYOUT"):
                    _, found, key = text.split(" ", 2)
                    raise layout_error(key, found) from None
                if text.startswith("FSVALUE"):
                    raise not_a_value(text.split(" ", 1)[1]) from None
                raise reply

    def _calls(self, writes: Sequence[_Write]) -> list[tuple[bytes, bytes]]:
        """The script calls (keyed by their first key) storing these writes (idempotent: sent again
        after a NOSCRIPT, each state is stored at most once)."""
        if self.redis.is_cluster:
            by_slot: dict[int, list[_Write]] = {}
            for w in writes:
                by_slot.setdefault(key_slot(w[0]), []).append(w)
            chunks = [c[i : i + _KEYS_PER_CALL] for c in by_slot.values() for i in range(0, len(c), _KEYS_PER_CALL)]
        else:
            chunks = [list(writes[i : i + _KEYS_PER_CALL]) for i in range(0, len(writes), _KEYS_PER_CALL)]
        calls = []
        for chunk in chunks:
            args: list[Any] = [b"EVALSHA", self._sha, len(chunk), *(w[0] for w in chunk)]
            for _, p, applied, blob in chunk:
                args += (p, applied, value_alone(p, blob))
            calls.append((chunk[0][0], pack_command(args)))
        return calls

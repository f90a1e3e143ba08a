"""Rebuild the online store from the offline history.

Each entity's state is computed from all its history rows at once, as streaming them left
it, applied offsets included: running the processor afterwards applies the Kafka tail after
the history and skips everything the rebuild already applied.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.offline.chunks import chunks_of_whole_entities
from featurestore.offline.history import has_history
from featurestore.offline.sql import identifier, read_history
from featurestore.online.connection import OnlineRedis
from featurestore.online.fold import fold_states, group_rows, set_bounds
from featurestore.online.keys import entity_keys, parse_newest_field, project_key
from featurestore.online.layout import tile_sets
from featurestore.online.state import StateCodec
from featurestore.online.writer import GuardedStore, project_marker
from featurestore.plan import ViewPlan

T = TypeVar("T")
_BATCH_ROWS = 100_000


def wipe_online(client: Any, project: str, view: str | None = None,
                on_progress: Callable[[int], None] | None = None) -> int:
    """Delete every online key of a project (what a rebuild starts from), or of one view
    version (`retire`), on every node of a cluster; returns how many."""
    online = OnlineRedis(client)
    deleted = 0
    batch: list[bytes] = []
    for key in online.scan(f"fs:{project}:*" if view is None else f"fs:{project}:{view}:*"):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += online.unlink(batch)
            if on_progress:
                on_progress(len(batch))
            batch.clear()
    deleted += online.unlink(batch)
    if view is not None:
        marker = project_key(project).encode()
        fields = [f for f in online.run([(marker, ("HKEYS", marker))])[0]
                  if (parse_newest_field(f.decode()) or ("", 0))[0] == view]
        if fields:
            online.run([(marker, ("HDEL", marker, *fields))])
    return deleted


def group_is_active(admin_conf: dict[str, Any], group: str, timeout: float = 5.0) -> str | None:
    """The consumer group's state if members are running in it, None if it is idle, and
    "unknown" if the broker did not answer (some Kafka-compatible brokers never do)."""
    import concurrent.futures

    from confluent_kafka import ConsumerGroupState, KafkaException
    from confluent_kafka.admin import AdminClient

    futures = AdminClient(admin_conf).describe_consumer_groups([group], request_timeout=timeout)
    try:
        state = futures[group].result(timeout=timeout).state
    except (concurrent.futures.TimeoutError, KafkaException):
        return "unknown"
    idle = {ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD, ConsumerGroupState.UNKNOWN}
    return None if state in idle else str(state.name)


def count_history(offline_root: Path, view: ViewPlan) -> int:
    if not has_history(offline_root, view.name):
        return 0
    row = duckdb.connect().execute(f"SELECT count(*) FROM {read_history(offline_root, view.name)}").fetchone()
    return int(row[0]) if row else 0


def rebuild_view(
    client: Any, project: str, offline_root: Path, view: ViewPlan, max_future_skew_ms: int,
    on_rows: Callable[[int], None] | None = None,
) -> int:
    """Load a view's online state from its history into an emptied namespace; returns the
    history rows read. Each entity's states are computed from all its events by the fold
    streaming uses (`featurestore.online.state`), so they are the bytes streaming wrote."""
    if not has_history(offline_root, view.name):
        return 0
    keys = [k.name for k in view.join_keys]
    cols = [name for name, _ in view.history_columns]
    select = ", ".join(identifier(c) for c in keys + cols)
    order = ", ".join(identifier(k) for k in keys)
    con = duckdb.connect()
    # late rows stay in the history only: streaming never applied them online
    relation = con.sql(
        f"SELECT {select}, epoch_ms(event_timestamp) AS _ts, _partition, _offset, coalesce(_late, false) AS _late "
        f"FROM {read_history(offline_root, view.name)} ORDER BY {order}, _ts, _partition, _offset"
    )
    # DuckDB 2.x / 1.x
    make_reader = getattr(relation, "to_arrow_reader", None) or getattr(relation, "fetch_arrow_reader")  # noqa: B009
    total = 0
    # DuckDB reads and sorts the next rows in a thread while this one computes and writes
    online = OnlineRedis(client)
    newest: dict[tuple[str, int], int] = {}
    for table in _read_ahead(chunks_of_whole_entities(make_reader(_BATCH_ROWS), keys)):
        read = table.num_rows
        table = table.filter(pc.invert(table["_late"]))
        write_states(online, project, view, table, max_future_skew_ms, newest)
        total += read
        if on_rows:
            on_rows(read)
    return total


def _read_ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """The items of `items`, produced by a worker thread up to `depth` ahead of the consumer."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rebuild-read") as pool:
        pending: deque[Future[T | None]] = deque()
        def fetch() -> T | None:
            return next(items, None)
        for _ in range(depth):
            pending.append(pool.submit(fetch))
        while True:
            item = pending.popleft().result()
            if item is None:
                for f in pending:
                    f.cancel()
                return
            pending.append(pool.submit(fetch))
            yield item


def write_states(online: OnlineRedis, project: str, view: ViewPlan, table: pa.Table, max_future_skew_ms: int,
                 newest: dict[tuple[str, int], int] | None = None) -> None:
    """Fold whole entities' history rows (sorted by keys, event time, partition, offset;
    late ones removed) into their states and store them (guarded by their offsets, as the
    processor's: a state Redis holds of a newer offset stays). The project's marker follows,
    with the newest event time per partition (`newest`: so far, updated in place)."""
    if not table.num_rows:
        return
    sets = tile_sets(view)
    codec = StateCodec.of(sets)
    names = [k.name for k in view.join_keys]
    key_cols = [table[k].to_pylist() for k in names]
    keys = list(zip(*key_cols))
    ts = table["_ts"].to_numpy().astype(np.int64)
    part = table["_partition"].to_numpy().astype(np.int64)
    off = table["_offset"].to_numpy().astype(np.int64)
    values = {name: table[name].to_pylist() for name, _ in view.history_columns}
    groups = group_rows(keys, ts, part, off, np.arange(len(keys)))
    folded = fold_states(view, sets, set_bounds(view, sets, max_future_skew_ms), codec, groups,
                         [None] * len(groups.keys), values)
    entities = entity_keys(project, view.name, [groups.keys[g] for g in folded.groups])
    writes = [(key, groups.partitions[g], applied, state)
              for key, g, applied, state in zip(entities, folded.groups, folded.applied, folded.states)]
    newest = {} if newest is None else newest
    for p in np.unique(part).tolist():
        at = (view.name, p)
        newest[at] = max(newest.get(at, 0), int(ts[part == p].max()))
    GuardedStore(online).store(writes, [project_marker(project, newest)])

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
import pyarrow.compute as pc
from hiredis import pack_command

from featurestore.offline.history import has_history
from featurestore.offline.sql import identifier, read_history
from featurestore.online.bulk import EntityState, chunks_of_whole_entities, entity_states
from featurestore.online.keys import entity_key, hll_key
from featurestore.online.streaming import stream_commands
from featurestore.plan import ViewPlan

T = TypeVar("T")
_BATCH_ROWS = 100_000
_ENTITIES_PER_BATCH = 300
_PFADD_MANY = """
local i, n = 1, #ARGV
while i <= n do
  local k = tonumber(ARGV[i + 1])
  redis.call('PFADD', ARGV[i], unpack(ARGV, i + 2, i + 1 + k))
  i = i + 2 + k
end
return n
"""


def wipe_online(client: Any, project: str) -> int:
    """Delete every online key of a project (what a rebuild starts from); returns how many."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"fs:{project}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            deleted += client.unlink(*batch)
            batch.clear()
    if batch:
        deleted += client.unlink(*batch)
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
    history rows read. Each entity's final state is computed at once from all its events
    (`featurestore.online.bulk`), as streaming them would have left it."""
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
    for table in _read_ahead(chunks_of_whole_entities(make_reader(_BATCH_ROWS), keys)):
        read = table.num_rows
        table = table.filter(pc.invert(table["_late"]))
        write_states(client, project, view.name, entity_states(view, table, max_future_skew_ms))
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


def write_states(client: Any, project: str, view: str, states: list[EntityState]) -> None:
    """HSET each entity's fields and PFADD its count_distinct tiles, streamed in batches so
    Redis writes one batch while Python encodes the next."""
    groups = (states[i : i + _ENTITIES_PER_BATCH] for i in range(0, len(states), _ENTITIES_PER_BATCH))
    for reply in stream_commands(client, (_commands(project, view, group) for group in groups)):
        if isinstance(reply, Exception):
            raise reply


def _commands(project: str, view: str, states: list[EntityState]) -> list[bytes]:
    """One HSET per entity, then one script call adding to every count_distinct tile of the
    batch (one reply instead of one per tile)."""
    out: list[bytes] = []
    hlls: list[Any] = []
    for state in states:
        key = entity_key(project, view, state.key)
        out.append(pack_command(("HSET", key, *state.fields)))  # type: ignore[arg-type]
        for name, values in state.distinct.items():
            hlls += (hll_key(key, name), len(values), *values)
    if hlls:
        out.append(pack_command(("EVAL", _PFADD_MANY, "0", *hlls)))
    return out

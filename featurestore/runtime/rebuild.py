"""Rebuild the online store from the offline history, through the same writer as streaming.

Rows are replayed in (partition, offset) order, so the per-entity applied offsets end up
exactly as the stream processor left them: running the processor afterwards applies the
Kafka tail after the history and skips everything the rebuild already applied.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from featurestore.offline.history import has_history, history_glob
from featurestore.online.writer import OnlineWriter
from featurestore.plan import ViewPlan
from featurestore.records import ViewRows

_BATCH_ROWS = 50_000


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
    glob = history_glob(offline_root, view.name)
    row = duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{glob}', hive_partitioning = true)").fetchone()
    return int(row[0]) if row else 0


def rebuild_view(
    writer: OnlineWriter, offline_root: Path, view: ViewPlan, on_rows: Callable[[int], None] | None = None
) -> int:
    """Replay a view's history into Redis; returns the rows replayed."""
    if not has_history(offline_root, view.name):
        return 0
    keys = [k.name for k in view.join_keys]
    cols = [name for name, _ in view.history_columns]
    glob = history_glob(offline_root, view.name)
    select = ", ".join(f'"{c}"' for c in keys + cols)
    relation = duckdb.connect().sql(
        f"SELECT {select}, epoch_ms(event_timestamp) AS _ts, _topic, _partition, _offset, "
        f"epoch_ms(_processed_at) AS _pat, coalesce(_late, false) AS _late FROM read_parquet('{glob}', hive_partitioning = true) "
        "ORDER BY _partition, _offset"
    )
    # DuckDB 2.x / 1.x
    make_reader = getattr(relation, "to_arrow_reader", None) or getattr(relation, "fetch_arrow_reader")  # noqa: B009
    reader = make_reader(_BATCH_ROWS)
    total = 0
    for batch in reader:
        data = batch.to_pydict()
        n = batch.num_rows
        rows = ViewRows(view=view.name, topic=data["_topic"][0] if n else "", processed_at_ms=int(data["_pat"][0] or 0))
        rows.keys = list(zip(*[data[k] for k in keys]))
        rows.ts, rows.partition, rows.offset = data["_ts"], data["_partition"], data["_offset"]
        rows.values = {c: data[c] for c in cols}
        rows.late = data["_late"]  # the writer skips rows that were too late when streamed
        writer.write([rows])
        total += n
        if on_rows:
            on_rows(n)
    return total

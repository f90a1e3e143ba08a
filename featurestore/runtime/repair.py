"""Online data lost by Redis, found and repaired by the processor that owns the partition.

At each checkpoint a processor marks in Redis, per view and Kafka partition it owns, the
offset below which Redis holds every event it applied (the offset it commits next;
`keys.applied_field`). Redis losing writes — a failover to a replica that lagged, a restart
from an older snapshot, a flush — takes marks with it: a mark lower than the one the
processor wrote (or, for a partition it takes over, than the group's committed offset), or
missing, is data loss. The processor then re-applies the partition's history up to what it
processed, for every entity with events since the mark: each entity's state of that
partition is folded again from its history rows (the fold streaming uses) and stored whole,
so nothing is counted twice however much Redis kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.compute as pc

from featurestore.offline.chunks import chunks_of_whole_entities
from featurestore.offline.history import has_history
from featurestore.offline.sql import identifier, literal, read_history
from featurestore.online.connection import OnlineRedis
from featurestore.online.keys import MARKS_FIELD, applied_field, project_key, repairs_field
from featurestore.online.streaming import pack_command
from featurestore.plan import ViewPlan
from featurestore.runtime.rebuild import write_states

_BATCH_ROWS = 100_000

Mark = tuple[str, str, int]
"""(view, topic, partition)."""


def read_marks(online: OnlineRedis, project: str, marks: Sequence[Mark]) -> tuple[bool, list[int | None]]:
    """Whether Redis holds marks at all, and the mark of each (None: none)."""
    key = project_key(project).encode()
    fields = [MARKS_FIELD] + [applied_field(*m) for m in marks]
    reply = online.run([(key, ("HMGET", key, *fields))])[0]
    return reply[0] is not None, [None if v is None else int(v) for v in reply[1:]]


def marks_command(project: str, marks: dict[Mark, int]) -> tuple[bytes, bytes]:
    """The command that sets marks (with `marks` = 1)."""
    key = project_key(project).encode()
    args: list[Any] = [b"HSET", key, MARKS_FIELD, 1]
    for mark, offset in marks.items():
        args += (applied_field(*mark), offset)
    return key, pack_command(args)


def count_repair(online: OnlineRedis, project: str, view: str) -> None:
    key = project_key(project).encode()
    online.run([(key, ("HINCRBY", key, repairs_field(view), 1))])


def repair_partition(client: Any, project: str, offline_root: Path, view: ViewPlan, topic: str, partition: int,
                     since: int, upto: int, max_future_skew_ms: int) -> tuple[int, int]:
    """Fold again, from the history, the state of `partition` of every entity of `view` with
    events at offsets `since` <= o < `upto`, from all its events of the partition below
    `upto`, and store it. Returns (entities, history rows read)."""
    if not has_history(offline_root, view.name):
        return 0, 0
    keys = [identifier(k.name) for k in view.join_keys]
    cols = [identifier(name) for name, _ in view.history_columns]
    history = read_history(offline_root, view.name)
    where = f"_topic = {literal(topic)} AND _partition = {int(partition)} AND _offset < {int(upto)}"
    con = duckdb.connect()
    relation = con.sql(
        f"WITH part AS (SELECT * FROM {history} WHERE {where}), "
        f"touched AS (SELECT DISTINCT {', '.join(keys)} FROM part WHERE _offset >= {int(since)}) "
        f"SELECT {', '.join(f'part.{k}' for k in keys)}, {', '.join(cols)}, epoch_ms(event_timestamp) AS _ts, _partition, "
        f"_offset, coalesce(_late, false) AS _late FROM part JOIN touched USING ({', '.join(keys)}) "
        f"ORDER BY {', '.join(f'part.{k}' for k in keys)}, _ts, _partition, _offset"
    )
    make_reader = getattr(relation, "to_arrow_reader", None) or getattr(relation, "fetch_arrow_reader")  # noqa: B009
    online = OnlineRedis(client)
    entities = rows = 0
    for table in chunks_of_whole_entities(make_reader(_BATCH_ROWS), [k.name for k in view.join_keys]):
        rows += table.num_rows
        entities += len(set(zip(*(table[k.name].to_pylist() for k in view.join_keys))))
        write_states(online, project, view, table.filter(pc.invert(table["_late"])), max_future_skew_ms)
    return entities, rows


def mark_history(client: Any, project: str, offline_root: Path, views: Sequence[ViewPlan]) -> None:
    """After loading Redis from the whole history (`rebuild-online`): mark, per view and Kafka
    partition, the offsets the history covers, so processors do not repair them again."""
    from featurestore.offline.history import history_snapshot

    marks = {(view.name, s["topic"], s["partition"]): s["last_offset"] + 1 for view in views
             for s in history_snapshot(offline_root, view.name) if s["partition"] >= 0}
    if marks:
        OnlineRedis(client).run([marks_command(project, marks)])

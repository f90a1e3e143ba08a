"""Append view rows to the Parquet history: `<root>/<view>/date=YYYY-MM-DD/part-*.parquet`.

Each row is one event's update of one entity: join keys, `event_timestamp`, the view's
history columns, where it came from (`_topic`, `_partition`, `_offset`), when it was
processed (`_processed_at`) and whether it came later than the view's allowed lateness
(`_late`: such rows count in "corrected" training sets only; the online store never saw them).

Exactly once, per source partition: under an exclusive lock of the partition's history
(shared by every process on the filesystem), a flush reads the commit state, writes the
partition's rows above the committed offset to hidden staged files, atomically replaces
`<view>/_commits/<topic>/p<partition>.json` (the commit point: the highest offset written
and the files of this flush), then renames the staged files into place. Staged files named
by a commit are renamed by whoever next takes the lock (roll forward); on start, others are
deleted (roll back). Rows at or below a partition's committed offset are never
written again, so a replay after a crash neither duplicates nor skips rows, and readers
never see a half-written file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featurestore.collector import collector_paused
from featurestore.errors import RegistryError
from featurestore.faults import fault_point
from featurestore.plan import Plan, ViewPlan
from featurestore.plan.names import NAME_RULE, is_view_id
from featurestore.plan.windows import to_epoch_ms
from featurestore.records import ViewRows

ARROW_TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "str": pa.string(),
    "bool": pa.bool_(),
    "datetime": pa.timestamp("us", tz="UTC"),
}
_DAY_MS = 86_400_000
_STAGED = re.compile(r"^\.part-(?P<topic>.+)-p(?P<partition>-?\d+)-\d{12}-\d{12}-\w+\.parquet\.staged$")
COMMITS_DIR = "_commits"


def history_schema(view: ViewPlan) -> pa.Schema:
    """Arrow schema of a view's history files (the hive `date` column is in the path only)."""
    fields = [pa.field(k.name, ARROW_TYPES[k.dtype], nullable=False) for k in view.join_keys]
    fields.append(pa.field("event_timestamp", pa.timestamp("ms", tz="UTC"), nullable=False))
    fields += [pa.field(name, ARROW_TYPES[dtype]) for name, dtype in view.history_columns]
    fields += [
        pa.field("_topic", pa.string()),
        pa.field("_partition", pa.int32()),
        pa.field("_offset", pa.int64()),
        pa.field("_processed_at", pa.timestamp("ms", tz="UTC")),
        pa.field("_late", pa.bool_()),
    ]
    return pa.schema(fields)


def view_dir(root: Path, view: str) -> Path:
    """The folder of a view's history: `<root>/<view>`, for a valid view name only (so never
    outside `root`)."""
    if not is_view_id(view):
        raise RegistryError(f"invalid view name {view!r}: the plan was not validated ({NAME_RULE})")
    return Path(root) / view


def history_glob(root: Path, view: str) -> str:
    """A glob matching every history file of a view."""
    return str(view_dir(root, view) / "**" / "*.parquet")


def has_history(root: Path, view: str) -> bool:
    folder = view_dir(root, view)
    return any(folder.rglob("*.parquet")) if folder.is_dir() else False


_FILE = re.compile(r"^part-(?P<topic>.+)-p(?P<partition>-?\d+)-(?P<first>\d{12})-(?P<last>\d{12})-\w+\.parquet$")


def history_snapshot(root: Path, view: str) -> list[dict[str, Any]]:
    """What the view's history holds now: per (topic, partition) the highest offset committed.
    Reading only rows at or below these offsets sees the history exactly as it is now, however
    much is appended later (a training set's manifest keeps it to rebuild the same set)."""
    out = []
    for path in sorted((view_dir(root, view) / COMMITS_DIR).glob("*/p*.json")):
        state = json.loads(path.read_text())
        out.append({"topic": state["topic"], "partition": int(state["partition"]), "last_offset": int(state["last_offset"])})
    return sorted(out, key=lambda s: (s["topic"], s["partition"]))


def max_event_time_before(root: Path, view: str, topic: str, partition: int, offset: int) -> int | None:
    """Newest event time (epoch ms) in a view's history among a partition's records below `offset`.

    Files name their partition and offset range, so only that partition's files are opened;
    files wholly below `offset` answer from their Parquet statistics."""
    best: int | None = None
    prefix = f"part-{_safe(topic)}-p{partition}-"
    folder = view_dir(root, view)
    if not folder.is_dir():
        return None
    for path in folder.glob(f"date=*/{prefix}*.parquet"):
        m = _FILE.match(path.name)
        if m is None or int(m.group("partition")) != partition or int(m.group("first")) >= offset:
            continue
        if int(m.group("last")) < offset:
            newest = _max_from_statistics(path)
        else:
            t = pq.read_table(path, columns=["event_timestamp", "_offset"])
            t = t.filter(pc.less(t["_offset"], offset))
            newest = pc.max(t["event_timestamp"].cast(pa.int64())).as_py() if t.num_rows else None
        if newest is not None and (best is None or newest > best):
            best = newest
    return best


def _max_from_statistics(path: Path) -> int | None:
    return _bound_from_statistics(path, "max")


def _bound_from_statistics(path: Path, bound: str) -> int | None:
    """The oldest ("min") or newest ("max") event time (ms) of a history file, from its statistics."""
    meta = pq.ParquetFile(path).metadata
    col = meta.schema.to_arrow_schema().get_field_index("event_timestamp")
    pick = max if bound == "max" else min
    best: int | None = None
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(col).statistics
        if stats is None or not stats.has_min_max:
            t = pq.read_table(path, columns=["event_timestamp"])
            found: int | None = (pc.max if bound == "max" else pc.min)(t["event_timestamp"].cast(pa.int64())).as_py()
            return found
        value = stats.max if bound == "max" else stats.min
        ms = to_epoch_ms(value) if isinstance(value, dt.datetime) else int(value)
        best = ms if best is None else pick(best, ms)
    return best


def oldest_event_time(root: Path, view: str) -> int | None:
    """The oldest event time (epoch ms) in a view's history, None if it has none: since when
    the view (version) has seen every event (`featurestore plan` reports its windows warming)."""
    folder = view_dir(root, view)
    for day in sorted(folder.glob("date=*")) if folder.is_dir() else []:
        times = [t for t in (_bound_from_statistics(p, "min") for p in day.glob("*.parquet")) if t is not None]
        if times:
            return min(times)
    return None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


class HistoryWriter:
    """Buffers view rows and writes them as Parquet files on `flush()`."""

    def __init__(self, root: Path, plan: Plan) -> None:
        self.root = Path(root)
        self.views = {v.name: v for v in plan.views}
        self.schemas = {v.name: history_schema(v) for v in plan.views}
        self._buffer: dict[str, list[ViewRows]] = {}
        self.rows_written = 0
        self.rows_skipped = 0
        for view in self.views:
            self._recover(view)

    # -- state -----------------------------------------------------------------------
    def _commit_dir(self, view: str, safe_topic: str) -> Path:
        return view_dir(self.root, view) / COMMITS_DIR / safe_topic

    @contextlib.contextmanager
    def _locked(self, view: str, safe_topic: str, partition: int) -> Iterator[None]:
        """Exclusive lock of one (view, topic, partition) history, across processes on this filesystem."""
        folder = self._commit_dir(view, safe_topic)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"p{partition}.lock", "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _read_commit(self, view: str, safe_topic: str, partition: int) -> dict[str, Any] | None:
        path = self._commit_dir(view, safe_topic) / f"p{partition}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def _roll_forward(self, view: str, state: dict[str, Any]) -> set[Path]:
        """Finish the renames of a committed flush (a crash may have interrupted them)."""
        listed = set()
        for rel in state["files"]:
            final = view_dir(self.root, view) / rel
            listed.add(final)
            staged = final.with_name(f".{final.name}.staged")
            if staged.exists() and not final.exists():
                os.replace(staged, final)
            staged.unlink(missing_ok=True)
        return listed

    def committed_offset(self, view: str, topic: str, partition: int) -> int:
        """Highest offset of this partition whose row is in the view's history (-1: none)."""
        state = self._read_commit(view, _safe(topic), partition)
        return int(state["last_offset"]) if state else -1

    def _recover(self, view: str) -> None:
        """On start: roll committed flushes forward, delete staged files no commit names."""
        folder = view_dir(self.root, view)
        if not folder.is_dir():
            return
        staged: dict[tuple[str, int], list[Path]] = {}
        for dirpath, _dirs, files in os.walk(folder):
            for name in files:
                m = _STAGED.match(name)
                if m:
                    staged.setdefault((m.group("topic"), int(m.group("partition"))), []).append(Path(dirpath, name))
        for commit in (folder / COMMITS_DIR).glob("*/p*.json"):
            partition = int(commit.stem[1:])
            staged.setdefault((commit.parent.name, partition), [])
        for (safe_topic, partition), paths in staged.items():
            with self._locked(view, safe_topic, partition):
                state = self._read_commit(view, safe_topic, partition)
                listed = self._roll_forward(view, state) if state else set()
                for path in paths:
                    if path.exists() and path.with_name(path.name[1:-len(".staged")]) not in listed:
                        path.unlink()  # never committed: the records will be processed again

    # -- writing ---------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return sum(len(r) for rows in self._buffer.values() for r in rows)

    def append(self, rows: ViewRows) -> None:
        if len(rows):
            self._buffer.setdefault(rows.view, []).append(rows)

    def take(self) -> dict[str, list[ViewRows]]:
        """Hand over the buffered rows (to flush_taken, maybe in another thread); appends go to a new buffer."""
        taken, self._buffer = self._buffer, {}
        return taken

    def flush(self) -> list[Path]:
        """Write every buffered row not yet committed; returns the files written."""
        written = self.flush_taken(self._buffer)
        self._buffer.clear()
        return written

    @collector_paused
    def flush_taken(self, buffer: dict[str, list[ViewRows]]) -> list[Path]:
        """Write rows handed over by take() (idempotent: a retry after a failure writes nothing twice)."""
        written: list[Path] = []
        for view, batches in buffer.items():
            table = self._table(view, batches)
            for topic in pc.unique(table["_topic"]).to_pylist():
                in_topic = table.filter(pc.equal(table["_topic"], topic))
                for partition in sorted(pc.unique(in_topic["_partition"]).to_pylist()):
                    part = in_topic.filter(pc.equal(in_topic["_partition"], partition))
                    written += self._commit_partition(view, topic, partition, part)
        return written

    def _commit_partition(self, view: str, topic: str, partition: int, table: pa.Table) -> list[Path]:
        if pc.min(table["_offset"]).as_py() < 0:  # rows without an offset (-1) cannot be deduplicated
            return self._write_files(view, topic, partition, table, commit=False)
        with self._locked(view, _safe(topic), partition):
            # read the commit state under the lock: another process may have owned this
            # partition since (a rebalance), or crashed between its commit and its renames
            state = self._read_commit(view, _safe(topic), partition)
            if state:
                self._roll_forward(view, state)
            floor = int(state["last_offset"]) if state else -1
            # keep each offset once, and only above what is committed (a replay, or a redelivery)
            offsets = table["_offset"].to_numpy()
            keep = offsets > floor
            if len(offsets) > 1 and not (offsets[1:] > offsets[:-1]).all():  # repeated offsets: the first of each
                first = np.zeros(len(offsets), bool)
                first[np.unique(offsets, return_index=True)[1]] = True
                keep &= first
            if not keep.all():
                before = table.num_rows
                table = table.filter(pa.array(keep))
                self.rows_skipped += before - table.num_rows
            return self._write_files(view, topic, partition, table, commit=True)

    def _write_files(self, view: str, topic: str, partition: int, table: pa.Table, commit: bool) -> list[Path]:
        if table.num_rows == 0:
            return []
        first, last = pc.min(table["_offset"]).as_py(), pc.max(table["_offset"]).as_py()
        days = pc.divide(table["event_timestamp"].cast(pa.int64()), _DAY_MS)
        stamp = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%f}"
        staged: list[tuple[Path, Path]] = []
        try:
            for day in sorted(set(days.to_pylist())):
                date = (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()
                folder = view_dir(self.root, view) / f"date={date}"
                folder.mkdir(parents=True, exist_ok=True)
                final = folder / f"part-{_safe(topic)}-p{partition}-{first:012d}-{last:012d}-{stamp}.parquet"
                tmp = folder / f".{final.name}.staged"
                staged.append((tmp, final))
                pq.write_table(table.filter(pc.equal(days, day)), tmp, compression="zstd")
        except OSError:
            for tmp, _ in staged:  # nothing is committed yet: remove this attempt's files
                tmp.unlink(missing_ok=True)
            raise
        fault_point("after_history_staged")
        if commit:
            self._write_commit(view, topic, partition, last, [final for _, final in staged])
            fault_point("after_history_commit")
        for tmp, final in staged:
            os.replace(tmp, final)
        self.rows_written += table.num_rows
        return [final for _, final in staged]

    def _write_commit(self, view: str, topic: str, partition: int, last: int, files: list[Path]) -> None:
        path = self._commit_dir(view, _safe(topic)) / f"p{partition}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "topic": topic,
            "partition": partition,
            "last_offset": last,
            "files": [str(f.relative_to(view_dir(self.root, view))) for f in files],
            "committed_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        }
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, path)  # the commit point

    def _table(self, view: str, batches: list[ViewRows]) -> pa.Table:
        parts = [_rows_table(self.views[view], self.schemas[view], rows) for rows in batches]
        return parts[0] if len(parts) == 1 else pa.concat_tables(parts)


def _rows_table(plan: ViewPlan, schema: pa.Schema, rows: ViewRows) -> pa.Table:
    """One batch's rows as a table of the view's history schema (a column that is the same
    list as another, as a field and the feature named after it, is converted once)."""
    n = len(rows)
    made: dict[tuple[int, pa.DataType], pa.Array] = {}

    def array(values: list[Any], kind: pa.DataType) -> pa.Array:
        got = made.get((id(values), kind))
        if got is None:
            got = made[(id(values), kind)] = pa.array(values, kind)
        return got

    if len(plan.join_keys) == 1:
        keys: list[list[Any]] = [[k[0] for k in rows.keys]]
    else:
        keys = [list(column) for column in zip(*rows.keys)] if n else [[] for _ in plan.join_keys]
    topic = rows.topic.encode()
    columns: dict[str, pa.Array] = {k.name: pa.array(values, ARROW_TYPES[k.dtype]) for k, values in zip(plan.join_keys, keys)}
    columns["event_timestamp"] = pa.array(rows.ts, pa.int64()).view(_MS_UTC)
    for name, dtype in plan.history_columns:
        columns[name] = array(rows.values[name], ARROW_TYPES[dtype])
    columns["_topic"] = pa.Array.from_buffers(pa.string(), n, [
        None, pa.py_buffer((np.arange(n + 1, dtype=np.int32) * len(topic)).tobytes()), pa.py_buffer(topic * n)])
    columns["_partition"] = pa.array(rows.partition, pa.int32())
    columns["_offset"] = pa.array(rows.offset, pa.int64())
    columns["_processed_at"] = pa.array(np.full(n, rows.processed_at_ms, np.int64)).view(_MS_UTC)
    columns["_late"] = pa.array(rows.late, pa.bool_()) if rows.late else pa.array(np.zeros(n, bool))
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


_MS_UTC = pa.timestamp("ms", tz="UTC")

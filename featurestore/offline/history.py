"""Append view rows to the Parquet history: `<root>/<view>/date=YYYY-MM-DD/part-*.parquet`.

Each row is one event's update of one entity: join keys, `event_timestamp`, the view's
history columns, and where it came from (`_topic`, `_partition`, `_offset`) and when it
was processed (`_processed_at`). Files are written to a hidden temporary name and renamed,
so readers never see a half-written file.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featurestore.plan import Plan, ViewPlan
from featurestore.records import ViewRows

ARROW_TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "str": pa.string(),
    "bool": pa.bool_(),
    "datetime": pa.timestamp("us", tz="UTC"),
}
_DAY_MS = 86_400_000


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
    ]
    return pa.schema(fields)


def history_glob(root: Path, view: str) -> str:
    return str(root / view / "**" / "*.parquet")


def has_history(root: Path, view: str) -> bool:
    return any((root / view).rglob("*.parquet")) if (root / view).is_dir() else False


class HistoryWriter:
    """Buffers view rows and writes them as Parquet files on `flush()`."""

    def __init__(self, root: Path, plan: Plan) -> None:
        self.root = Path(root)
        self.views = {v.name: v for v in plan.views}
        self.schemas = {v.name: history_schema(v) for v in plan.views}
        self._buffer: dict[str, list[ViewRows]] = {}
        self.rows_written = 0

    @property
    def pending(self) -> int:
        return sum(len(r) for rows in self._buffer.values() for r in rows)

    def append(self, rows: ViewRows) -> None:
        if len(rows):
            self._buffer.setdefault(rows.view, []).append(rows)

    def flush(self) -> list[Path]:
        """Write every buffered row; returns the files written."""
        written: list[Path] = []
        for view, batches in self._buffer.items():
            table = self._table(view, batches)
            days = pc.divide(table["event_timestamp"].cast(pa.int64()), _DAY_MS)
            for day in sorted(set(days.to_pylist())):
                part = table.filter(pc.equal(days, day))
                written.append(self._write(view, day, part))
        self.rows_written += self.pending
        self._buffer.clear()
        return written

    def _table(self, view: str, batches: list[ViewRows]) -> pa.Table:
        plan = self.views[view]
        cols: dict[str, list] = {k.name: [] for k in plan.join_keys}
        cols.update({"event_timestamp": [], "_topic": [], "_partition": [], "_offset": [], "_processed_at": []})
        for name, _ in plan.history_columns:
            cols[name] = []
        for rows in batches:
            for i, key in enumerate(zip(*rows.keys)):
                cols[plan.join_keys[i].name].extend(key)
            cols["event_timestamp"].extend(rows.ts)
            cols["_topic"].extend([rows.topic] * len(rows))
            cols["_partition"].extend(rows.partition)
            cols["_offset"].extend(rows.offset)
            cols["_processed_at"].extend([rows.processed_at_ms] * len(rows))
            for name, _ in plan.history_columns:
                cols[name].extend(rows.values[name])
        return pa.Table.from_pydict(cols, schema=self.schemas[view])

    def _write(self, view: str, day: int, table: pa.Table) -> Path:
        date = (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()
        folder = self.root / view / f"date={date}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = folder / f".{name}.tmp"
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, folder / name)
        return folder / name

"""The served-value log as Parquet (`featurestore.runtime.served_landing` writes it from the
served-value topic): one row per served entity row, beside the history:

    <offline_path>/_served/service=<name>/date=YYYY-MM-DD/part-p<partition>-<first>-<last>.parquet

Columns: `request_id`, `served_at` (timestamp, UTC), `row` (its place in the request),
`variant` (rollouts), the join key columns (absent where the log left them out), and per
feature its value and `<feature>__status`; `_partition` and `_offset` of the record. Exactly
once: a file names the offsets it holds, landing skips records at or below the highest
landed offset of their partition, and the group's offsets are committed after the files.
Join it to training rows and labels on the keys and `served_at` (`FeatureStore.served_log`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.errors import FeatureRequestError
from featurestore.offline.sql import literal
from featurestore.plan.names import is_name

log = logging.getLogger(__name__)

SERVED_DIR = "_served"
_FILE = re.compile(r"^part-p(?P<partition>\d+)-(?P<first>\d{12})-(?P<last>\d{12})\.parquet$")


@dataclass
class LandStats:
    """What a landing run did."""

    records: int = 0
    rows: int = 0
    skipped: int = 0
    """Records already landed (a replay after a crash)."""
    malformed: int = 0
    files: list[Path] = field(default_factory=list)


def served_root(offline_root: Path) -> Path:
    return Path(offline_root) / SERVED_DIR


def landed_offsets(offline_root: Path) -> dict[int, int]:
    """Per partition of the topic, the highest offset landed."""
    out: dict[int, int] = {}
    for path in served_root(offline_root).glob("service=*/date=*/part-p*.parquet"):
        m = _FILE.match(path.name)
        if m:
            p = int(m.group("partition"))
            out[p] = max(out.get(p, -1), int(m.group("last")))
    return out


def served_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of one logged request."""
    n = int(record["rows"])
    served_at = dt.datetime.fromtimestamp(record["served_at_ms"] / 1000, dt.timezone.utc)
    variants = record.get("variants") or [None] * n
    rows = [{"request_id": record["request_id"], "served_at": served_at, "row": i, "variant": variants[i]} for i in range(n)]
    for key, values in (record.get("keys") or {}).items():
        for row, v in zip(rows, values):
            row[key] = v
    for name, col in record["features"].items():
        for row, v, status in zip(rows, col["values"], col["statuses"]):
            row[name] = v
            row[f"{name}__status"] = status
    return rows


def write_served(offline_root: Path, partition: int, items: list[tuple[int, bytes]], stats: LandStats) -> list[Path]:
    """One file per (service, date) of a partition's records."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for offset, value in items:
        stats.records += 1
        try:
            record = orjson.loads(value)
            service = record["service"]
            if not is_name(service):
                raise ValueError(f"service {service!r}")
            rows = served_rows(record)
        except Exception as exc:
            stats.malformed += 1
            log.warning("served-value record %d:%d is not one this version wrote (%s): skipped", partition, offset, exc)
            continue
        for row in rows:
            row["_partition"], row["_offset"] = partition, offset
        day = dt.datetime.fromtimestamp(record["served_at_ms"] / 1000, dt.timezone.utc).date().isoformat()
        groups.setdefault((service, day), []).extend(rows)
    first, last = items[0][0], items[-1][0]
    written = []
    for (service, day), rows in groups.items():
        folder = served_root(offline_root) / f"service={service}" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"part-p{partition}-{first:012d}-{last:012d}.parquet"
        tmp = folder / f".{final.name}.{os.getpid()}.tmp"
        pq.write_table(pa.Table.from_pylist(rows), tmp, compression="zstd")
        os.replace(tmp, final)
        stats.rows += len(rows)
        written.append(final)
    return written


def read_served(offline_root: Path, service: str) -> str:
    """DuckDB's table function over a service's landed rows."""
    if not is_name(service):
        raise FeatureRequestError(f"invalid service name {service!r}")
    glob = served_root(offline_root) / f"service={service}" / "**" / "*.parquet"
    return f"read_parquet({literal(str(glob))}, hive_partitioning = true, union_by_name = true)"

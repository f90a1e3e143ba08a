"""Event files: which files a path names, and their records as JSON bytes in file order.

One reader for every command that takes events from files (`backfill`, `produce`):
JSON lines (`.json`, `.jsonl`, `.ndjson`: one object per line, blank lines skipped), CSV
(`.csv`: a header row; an empty cell is a missing field; values stay strings, which the
event model converts as it converts JSON strings) and Parquet (`.parquet`: timestamps
without a time zone are taken as UTC, as everywhere in the project).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from featurestore.errors import FeatureRequestError

JSON_SUFFIXES = (".json", ".jsonl", ".ndjson")
SUFFIXES = (".parquet", ".csv", *JSON_SUFFIXES)
_READ_BATCH = 20_000


@dataclass(frozen=True)
class EventRecord:
    """One record of an event file: where it is, and its JSON bytes."""

    file: Path
    row: int
    """0-based line index in a text file (the record's last line for CSV), row index in Parquet."""
    value: bytes

    @property
    def where(self) -> str:
        """`file, line N` (1-based) or `file, row N` for Parquet: what a person looks up."""
        unit = "row" if self.file.suffix.lower() == ".parquet" else "line"
        return f"{self.file.name}, {unit} {self.row + 1}"


def input_files(path: Path, what: str = "input") -> list[Path]:
    """The event files under `path` (itself if a file), sorted by path."""
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    else:
        raise FeatureRequestError(f"{what} {path} does not exist")
    bad = [f for f in files if f.suffix.lower() not in SUFFIXES]
    if bad:
        raise FeatureRequestError(f"{bad[0]}: unsupported file type (use .parquet, .csv, .json, .jsonl or .ndjson)")
    if not files:
        raise FeatureRequestError(f"no .parquet, .csv or JSON lines files under {path}")
    return files


def read_records(files: list[Path]) -> Iterator[EventRecord]:
    """Every record of the files, in order."""
    for f in files:
        suffix = f.suffix.lower()
        if suffix == ".parquet":
            n = 0
            for batch in pq.ParquetFile(f).iter_batches(batch_size=_READ_BATCH):
                for row in batch.to_pylist():
                    yield EventRecord(f, n, orjson.dumps(row, option=orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS))
                    n += 1
        elif suffix == ".csv":
            with open(f, encoding="utf-8", newline="") as handle:
                reader = csv.DictReader(handle)
                for row in reader:
                    fields = {k: v for k, v in row.items() if k is not None and v not in ("", None)}
                    yield EventRecord(f, reader.line_num - 1, orjson.dumps(fields))
        else:
            with open(f, "rb") as handle:
                for n, line in enumerate(handle):
                    line = line.strip()
                    if line:
                        yield EventRecord(f, n, line)


def count_records(files: list[Path]) -> int:
    """How many records the files hold (a progress bar's total), without decoding them."""
    total = 0
    for f in files:
        suffix = f.suffix.lower()
        if suffix == ".parquet":
            total += pq.ParquetFile(f).metadata.num_rows
        else:
            with open(f, "rb") as handle:
                lines = sum(1 for line in handle if line.strip())
            total += max(lines - 1, 0) if suffix == ".csv" else lines
    return total


__all__ = ["JSON_SUFFIXES", "SUFFIXES", "EventRecord", "count_records", "input_files", "read_records"]

"""Backfill: run the compiled plan over historical events in files, through the same code
as streaming (decoder, lateness, online writer, history writer).

Events are read in file order (files sorted by path; JSON lines, CSV or Parquet rows). A
backfill run is one synthetic partition: a negative partition id derived from its inputs
(files, sizes, time range), offsets the running record number. So everything that makes
streaming exactly-once holds here too: re-running the same backfill, or resuming one that
crashed, writes nothing twice. The watermark of allowed lateness runs over that single
sequence, so streaming the same events in the same order through a one-partition topic
gives identical results.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from featurestore.config import Settings
from featurestore.errors import FeatureRequestError, one_of
from featurestore.offline.history import HistoryWriter
from featurestore.online.writer import OnlineWriter
from featurestore.plan import Plan
from featurestore.records import ViewRows
from featurestore.runtime.checkpoint import Checkpointer
from featurestore.runtime.decode import DeadLetter, Decoder, RawRecord
from featurestore.runtime.event_files import input_files, read_records
from featurestore.runtime.sources import pick_source
from featurestore.runtime.watermarks import Watermarks

_FLUSH_EVERY = 250_000


@dataclass
class BackfillStats:
    """What a backfill did."""

    files: int = 0
    records: int = 0
    events: int = 0
    outside_range: int = 0
    dead_letters: dict[str, int] = field(default_factory=dict)
    history_rows: int = 0
    checkpoints: int = 0
    """History commits (every ~250,000 rows and at the end): a rerun resumes after the last."""
    entity_writes: int = 0
    partition: int = 0
    dead_letter_file: Path | None = None
    seconds: float = 0.0


def backfill_partition(files: list[Path], start_ms: int | None, end_ms: int | None) -> int:
    """The synthetic partition id of a backfill run: negative, stable for the same inputs."""
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.resolve()}\0{f.stat().st_size}\0".encode())
    h.update(f"{start_ms}\0{end_ms}".encode())
    return -1 - int(h.hexdigest()[:7], 16)


def only_view(plan: Plan, ref: str) -> Plan:
    """The plan cut to one view version (`name@N`, or `name` for its serving version): a
    backfill of it writes its keys and history and touches no other version."""
    try:
        view = plan.resolve_view(ref)
    except KeyError:
        raise FeatureRequestError(f"no view version {ref!r} in the applied plan: "
                                  f"{one_of(ref, sorted(k for k in plan.view_refs if '@' in k))}") from None
    return plan.model_copy(update={"views": [view], "services": [], "request_views": [], "request_sources": []})


class Backfill:
    """One backfill run of a plan's source over files."""

    def __init__(self, plan: Plan, settings: Settings, source: str | None = None) -> None:
        self.plan = plan
        self.settings = settings
        self.source = pick_source(plan, source)
        skew_ms = settings.processor.max_future_skew_ms
        self.decoder = Decoder(plan, self.source, settings.paths.repo, skew_ms, settings.processor.max_record_bytes)
        self.history = HistoryWriter(settings.paths.offline, plan)
        self.skew_ms = skew_ms

    def run(
        self,
        path: Path,
        start_ms: int | None = None,
        end_ms: int | None = None,
        materialize: bool = False,
        on_progress: Callable[[BackfillStats], None] | None = None,
    ) -> BackfillStats:
        """Process every event of the files with start <= event time < end."""
        started = time.monotonic()
        files = input_files(path, "backfill input")
        stats = BackfillStats(files=len(files), partition=backfill_partition(files, start_ms, end_ms))
        online: OnlineWriter | None = None
        if materialize:
            client = self.settings.redis.client(socket_timeout=30, socket_connect_timeout=10)
            online = OnlineWriter(client, self.settings.project, self.plan, self.skew_ms)
        marks = Watermarks(self.plan, self.source, self.settings.paths.offline)
        dl_path = self.settings.paths.offline / "_dead_letters" / f"backfill-p{stats.partition}.jsonl"
        # the position is the history's own per-partition commit: nothing else to commit
        checkpoints: Checkpointer[None] = Checkpointer(self.history, lambda _: None, stats, online=online)
        where: dict[int, tuple[Path, int]] = {}
        batch: list[RawRecord] = []
        since_flush = 0
        with _DeadLetterFile(dl_path) as dead_out:
            for offset, rec in enumerate(read_records(files)):
                batch.append(RawRecord(stats.partition, offset, None, rec.value))
                where[offset] = (rec.file, rec.row)
                if len(batch) >= self.settings.processor.batch_size:
                    since_flush += self._batch(batch, where, marks, online, start_ms, end_ms, stats, dead_out)
                    batch, where = [], {}
                    if since_flush >= _FLUSH_EVERY:
                        checkpoints.run(None)
                        since_flush = 0
                    if on_progress:
                        on_progress(stats)
            if batch:
                self._batch(batch, where, marks, online, start_ms, end_ms, stats, dead_out)
            checkpoints.run(None)
        stats.dead_letter_file = dl_path if dl_path.exists() else None
        stats.seconds = time.monotonic() - started
        if on_progress:
            on_progress(stats)
        return stats

    def _batch(
        self,
        records: list[RawRecord],
        where: dict[int, tuple[Path, int]],
        marks: Watermarks,
        online: OnlineWriter | None,
        start_ms: int | None,
        end_ms: int | None,
        stats: BackfillStats,
        dead_out: _DeadLetterFile,
    ) -> int:
        if marks.needed:
            marks.ensure(records[0].partition, records[0].offset)
        now_ms = int(time.time() * 1000)
        # no "future" limit for history: the skew check is relative to the newest event in range
        rows, dead = self.decoder.decode(records, max(now_ms, end_ms or 0), marks.newest if marks.needed else None)
        stats.records += len(records)
        kept: list[ViewRows] = []
        for r in rows:
            r.processed_at_ms = now_ms
            inside = [i for i, t in enumerate(r.ts) if (start_ms is None or t >= start_ms) and (end_ms is None or t < end_ms)]
            kept.append(r.select(inside) if len(inside) < len(r) else r)
        if rows:  # every view has a row per decoded event
            stats.outside_range += len(rows[0]) - len(kept[0])
            stats.events += len(kept[0])
        for d in dead:
            stats.dead_letters[d.reason] = stats.dead_letters.get(d.reason, 0) + 1
            dead_out.write(d, *where[d.offset])
        if online is not None:
            stats.entity_writes += online.write(kept)
        for r in kept:
            self.history.append(r)
        return sum(len(r) for r in kept)


class _DeadLetterFile:
    """Dead letters of a backfill as JSON lines: reason, detail, file, row and the record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: TextIO | None = None

    def __enter__(self) -> _DeadLetterFile:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.close()

    def write(self, d: DeadLetter, file: Path, row: int) -> None:
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.path, "a", encoding="utf-8")
        line = {"reason": d.reason, "detail": d.detail, "file": str(file), "row": row,
                "record": (d.value or b"").decode("utf-8", "replace")}
        self._handle.write(json.dumps(line) + "\n")

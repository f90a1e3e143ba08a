"""Decode raw Kafka records of one source into per-view rows, or dead letters with a reason.

A batch is decoded in two passes: the records are validated against the event model, then
the valid events are turned into columns one column at a time (event times, keys, values,
transforms, lateness). A model of plain field checks, on a source without transforms, is
checked a batch at a time over Arrow columns (`featurestore.runtime.columnar`), and only the
records that check cannot vouch for are validated by the model one by one — when every
transform of the source only reads fields of its event (`featurestore.runtime.field_reads`:
it is then called with a light record of those fields). Otherwise the model validates every
record (transforms are called with its instances, which it builds faster than anything else
could). Either way a dead letter's reason is the model's own error.

Reasons: `oversized` (larger than the configured limit), `malformed_json` (not JSON),
`schema_violation` (JSON not matching the event model), `missing_key` (a join key is
null), `absurd_timestamp` (before 1970 or further in the future than the allowed skew),
`transform_error` (a udf raised: the views that do not use it still take the event), `late` (later than a view's allowed lateness: the event
is still kept, flagged, in that view's history).
"""

from __future__ import annotations

import datetime as dt
import itertools
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from pydantic import BaseModel, ValidationError

from featurestore.plan import Plan, SourcePlan, ViewPlan
from featurestore.records import ViewRows
from featurestore.runtime.columnar import ColumnChecker
from featurestore.runtime.events import ColumnEvents, Events, ModelEvents
from featurestore.runtime.field_reads import fields_read
from featurestore.runtime.imports import import_object


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be used, and why."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str
    kept: bool = False
    """The event still reached some view (late ones, or a transform that failed for other views only)."""


class RawRecord(NamedTuple):
    """The parts of a Kafka message the decoder needs (also built from files for tests)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class RawBatch:
    """Records of one topic, column by column (in offset order per partition)."""

    partitions: list[int]
    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]

    @classmethod
    def of(cls, records: Sequence[RawRecord] | RawBatch) -> RawBatch:
        if isinstance(records, RawBatch):
            return records
        return cls([r.partition for r in records], [r.offset for r in records], [r.key for r in records],
                    [r.value for r in records])

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, at: int) -> RawRecord:
        return RawRecord(self.partitions[at], self.offsets[at], self.keys[at], self.values[at])

    def first_offsets(self) -> dict[int, int]:
        """Per partition, the offset of its first record in the batch."""
        parts = np.asarray(self.partitions, np.int64)
        found, at = np.unique(parts, return_index=True)
        return {int(p): self.offsets[i] for p, i in zip(found.tolist(), at.tolist())}

    def next_offsets(self) -> dict[int, int]:
        """Per partition, the offset after its last record in the batch."""
        parts = np.asarray(self.partitions, np.int64)
        found, at = np.unique(parts[::-1], return_index=True)
        n = len(parts)
        return {int(p): self.offsets[n - 1 - i] + 1 for p, i in zip(found.tolist(), at.tolist())}


def _schema_detail(exc: ValidationError) -> tuple[str, str]:
    errors = exc.errors(include_url=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return "malformed_json", errors[0]["msg"]
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in errors[:5]]
    return "schema_violation", "; ".join(parts)


class _ViewExtractor:
    """Pulls one view's keys and history columns out of validated events."""

    def __init__(self, view: ViewPlan, code_root: Path, model: type[BaseModel]) -> None:
        self.view = view
        self.key_names = [k.name for k in view.join_keys]
        attrs: dict[str, str] = {}  # history column -> event attribute
        udfs: dict[str, Callable[[Any], Any]] = {}
        for f in view.row_features:
            if f.kind == "field":
                assert f.column is not None
                attrs[f.name] = f.column
            else:
                assert f.udf_ref is not None
                udfs[f.name] = import_object(f.udf_ref, code_root)
        for agg in view.aggregations:
            for column in (agg.column, agg.where):
                if column is not None and column not in attrs and column not in udfs:
                    attrs[column] = column
        self.attrs = attrs
        self.udfs = udfs
        self.udf_fields = {name: fields_read(fn, model) for name, fn in udfs.items()}
        """Per transform, the fields it reads (None: it may use its event otherwise, and is called with models)."""
        self.columns = [name for name, _ in view.history_columns]
        self.lateness_ms = view.allowed_lateness_ms

    def keys(self, events: Events) -> list[tuple[Any, ...]]:
        """Each event's join key tuple."""
        if len(self.key_names) == 1:
            return [(v,) for v in events.column(self.key_names[0])]
        return list(zip(*(events.column(k) for k in self.key_names)))

    def values(self, events: Events, failed: dict[int, list[str]], record_fields: tuple[str, ...] = ()) -> dict[str, list[Any]]:
        """The events' history columns (a transform that raises leaves None at that event and
        adds the reason to `failed[position]`)."""
        out = {name: events.column(attr) for name, attr in self.attrs.items()}
        for name, fn in self.udfs.items():
            fields = self.udf_fields[name]
            if isinstance(events, ModelEvents):
                given: list[Any] = events.events
            else:
                assert fields is not None, "a transform called with models is validated record by record"
                given = events.records(record_fields)
            try:
                out[name] = list(map(fn, given))
            except Exception:  # user code: find which events fail, and why
                out[name] = [self._one(fn, name, e, i, failed) for i, e in enumerate(given)]
        return out

    def _one(self, fn: Callable[[Any], Any], name: str, event: Any, at: int, failed: dict[int, list[str]]) -> Any:
        try:
            return fn(event)
        except Exception as exc:  # user code
            failed.setdefault(at, []).append(f"{self.view.name}.{name}: {type(exc).__name__}: {exc}")
            return None


COLUMNAR_FROM = 500
"""Batches smaller than this are validated record by record: checking columns costs ~1 ms
per batch whatever its size, the model ~2-5 µs per record."""


class Decoder:
    """Decodes batches of one source's records into ViewRows and DeadLetters."""

    def __init__(
        self, plan: Plan, source: SourcePlan, code_root: Path, max_future_skew_ms: int, max_record_bytes: int = 1024 * 1024
    ) -> None:
        """`code_root`: the feature repository, the only place the plan's code is imported from."""
        self.source = source
        self.model: type[BaseModel] = import_object(source.schema_ref, code_root)
        self.views = [_ViewExtractor(v, code_root, self.model) for v in plan.views if v.source == source.name]
        # a transform that may use its event otherwise than reading fields is called with
        # model instances, which the model builds fastest itself
        models_needed = any(f is None for x in self.views for f in x.udf_fields.values())
        self.columns = None if models_needed else ColumnChecker.for_model(self.model)
        self.record_fields = tuple(sorted({f for x in self.views for fs in x.udf_fields.values() for f in fs or ()}))
        """The fields of the records transforms are called with (all their fields: one record per event)."""
        """Checks batches column by column (None: the model validates each record)."""
        self.columnar_from = COLUMNAR_FROM
        self.skew_ms = max_future_skew_ms
        self.max_record_bytes = max_record_bytes

    def decode(
        self, records: Sequence[RawRecord] | RawBatch, now_ms: int, newest: dict[int, int | None] | None = None,
    ) -> tuple[list[ViewRows], list[DeadLetter]]:
        """Decode records (in offset order per partition). `newest`: per partition, the newest
        event time before these records, updated in place; lateness is judged against it."""
        records = RawBatch.of(records)
        dead: list[tuple[int, DeadLetter]] = []

        def reject(at: int, reason: str, detail: str, kept: bool = False) -> None:
            rec = records[at]
            dead.append((at, DeadLetter(self.source.topic, rec.partition, rec.offset, rec.key, rec.value, reason,
                                        detail, kept)))

        events = self._validate(records, reject)
        taken = events.taken
        times = events.times_ms(self.source.timestamp_field)
        stamps = times.tolist()
        keys = [x.keys(events) for x in self.views]
        absurd = (times < 0) | (times > now_ms + self.skew_ms)
        usable = list(range(len(events)))
        if absurd.any():  # rare: the few bad ones one by one
            for i in np.flatnonzero(absurd).tolist():
                reject(taken[i], "absurd_timestamp", self._absurd_detail(stamps[i]))
            usable = np.flatnonzero(~absurd).tolist()
        for x, view_keys in zip(self.views, keys):
            if any(map(operator.contains, view_keys, itertools.repeat(None))):
                bad = {i for i in usable if None in view_keys[i]}
                for i in bad:
                    reject(taken[i], "missing_key", f"view {x.view.name}: join key {', '.join(x.key_names)} is null")
                usable = [i for i in usable if i not in bad]
        if len(usable) < len(events):
            events = events.select(usable)
            stamps = [stamps[i] for i in usable]
            keys = [[k[i] for i in usable] for k in keys]
            taken = [taken[i] for i in usable]
        return self._rows(records, events, taken, stamps, keys, now_ms, newest, reject), [d for _, d in sorted(dead)]

    def _validate(self, records: RawBatch, reject: Callable[..., None]) -> Events:
        """The valid events (and their positions in `records`)."""
        limit = self.max_record_bytes
        values = records.values
        try:
            sizes = list(map(len, values))  # type: ignore[arg-type]  # None values are caught below
        except TypeError:  # a record without a value (a tombstone)
            sizes = [len(v) if v else 0 for v in values]
        if 0 in sizes or max(sizes, default=0) > limit:  # rare: find them one by one
            for at, size in enumerate(sizes):
                if not size:
                    reject(at, "malformed_json", "empty record")
                elif size > limit:
                    reject(at, "oversized", f"{size} bytes, more than the limit of {limit}")
            candidates = [at for at, size in enumerate(sizes) if 0 < size <= limit]
        else:
            candidates = list(range(len(records)))
        if self.columns is None or not candidates or len(candidates) < self.columnar_from:
            events, taken = self._validate_each(values, candidates, reject)
            return ModelEvents(events, taken)
        chosen = values if len(candidates) == len(values) else [values[at] for at in candidates]
        checked = self.columns.check(chosen)  # type: ignore[arg-type]  # candidates are non-empty bytes
        positions = np.asarray(candidates, np.int64)
        rows = np.flatnonzero(checked.passed)
        left = positions[~checked.passed].tolist()
        slow, slow_at = self._validate_each(values, left, reject) if left else ([], [])
        return ColumnEvents(checked, rows, positions[rows], slow, slow_at)

    def _validate_each(self, values: Sequence[bytes | None], positions: list[int],
                       reject: Callable[..., None]) -> tuple[list[BaseModel], list[int]]:
        """The model's validation of the records at `positions`, one by one."""
        validate = self.model.model_validate_json
        events: list[BaseModel] = []
        taken: list[int] = []
        for at in positions:
            try:
                events.append(validate(values[at]))  # type: ignore[arg-type]  # positions hold non-empty records
            except ValidationError as exc:
                reject(at, *_schema_detail(exc))
                continue
            taken.append(at)
        return events, taken

    def _absurd_detail(self, ts: int) -> str:
        when = dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc).isoformat() if ts > -(2**46) else str(ts)
        field = self.source.timestamp_field
        return f"{field}={when} is before 1970 or more than {self.skew_ms} ms in the future"

    def _rows(
        self, records: RawBatch, events: Events, taken: list[int], stamps: list[int],
        keys: list[list[tuple[Any, ...]]], now_ms: int, newest: dict[int, int | None] | None,
        reject: Callable[..., None],
    ) -> list[ViewRows]:
        """Each view's rows of the usable events; dead letters for transforms that failed and
        events later than a view's allowed lateness."""
        failed_by_view: list[dict[int, list[str]]] = []
        values = []
        for x in self.views:
            failed: dict[int, list[str]] = {}
            values.append(x.values(events, failed, self.record_fields))
            failed_by_view.append(failed)
        failed_any = set().union(*failed_by_view)
        lost = {i for i in failed_any if all(i in f for f in failed_by_view)}  # no view took it
        if len(taken) == len(records):  # every record (positions are ascending and distinct)
            partitions, offsets = records.partitions, records.offsets
        else:
            partitions = [records.partitions[at] for at in taken]
            offsets = [records.offsets[at] for at in taken]
        before = _newest_before(partitions, stamps, lost, newest)
        out = []
        late_for: dict[int, list[str]] = {}
        for x, view_keys, columns, failed in zip(self.views, keys, values, failed_by_view):
            rows = ViewRows(view=x.view.name, topic=self.source.topic, processed_at_ms=now_ms)
            pick = None if not failed else [i for i in range(len(events)) if i not in failed]
            late: list[bool] = []
            if x.lateness_ms is not None and before is not None:
                flags = (before != _NONE) & (np.asarray(stamps, dtype=np.int64) < before - x.lateness_ms)
                if pick is not None:  # events this view did not take are not late for it
                    flags[list(failed)] = False
                if flags.any():
                    late = flags.tolist()
                    for i in np.flatnonzero(flags).tolist():
                        late_for.setdefault(i, []).append(f"{x.view.name} (allowed {x.lateness_ms} ms)")
            if pick is None:
                rows.keys, rows.ts, rows.partition, rows.offset = view_keys, stamps, partitions, offsets
                rows.values = {c: columns[c] for c in x.columns}
                rows.late = late
            else:
                rows.keys = [view_keys[i] for i in pick]
                rows.ts = [stamps[i] for i in pick]
                rows.partition = [partitions[i] for i in pick]
                rows.offset = [offsets[i] for i in pick]
                rows.values = {c: [columns[c][i] for i in pick] for c in x.columns}
                rows.late = [late[i] for i in pick] if late else []
            out.append(rows)
        for i in sorted(failed_any):
            reasons = "; ".join(r for f in failed_by_view for r in f.get(i, ()))
            if i in lost:
                reject(taken[i], "transform_error", reasons)
            else:
                applied = [x.view.name for x, f in zip(self.views, failed_by_view) if i not in f]
                reject(taken[i], "transform_error", f"{reasons} (applied to {', '.join(applied)})", True)
        for i, views in late_for.items():
            if i not in failed_any:
                assert before is not None
                b = int(before[i])
                reject(taken[i], "late", f"event time {stamps[i]} is {b - stamps[i]} ms behind its partition's newest "
                       f"{b}: late for {', '.join(views)}", True)
        return out


_NONE = np.iinfo(np.int64).min


def _newest_before(partitions: list[int], stamps: list[int], lost: set[int],
                   newest: dict[int, int | None] | None) -> np.ndarray | None:
    """Per event, the newest event time of its partition before it (`_NONE`: none yet),
    counting only events some view took; updates `newest` to the newest after the batch.
    None when `newest` is None (lateness is not judged)."""
    if newest is None:
        return None
    n = len(stamps)
    part = np.asarray(partitions, dtype=np.int64)
    ts = np.asarray(stamps, dtype=np.int64)
    counted = ts.copy()
    if lost:
        counted[list(lost)] = _NONE
    before = np.full(n, _NONE, dtype=np.int64)
    for p in np.unique(part).tolist():
        at = np.flatnonzero(part == p)
        start = newest.get(p)
        running = np.maximum.accumulate(counted[at])
        prior = np.concatenate(([_NONE if start is None else start], running[:-1]))
        if start is not None:
            prior = np.maximum(prior, start)
        before[at] = prior
        high = int(running[-1]) if len(at) else _NONE
        if start is not None:
            high = max(high, start)
        if high != _NONE:
            newest[p] = high
    return before

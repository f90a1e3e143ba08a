"""Decode raw Kafka records of one source into per-view rows, or dead letters with a reason.

Reasons: `oversized` (larger than the configured limit), `malformed_json` (not JSON),
`schema_violation` (JSON not matching the event model), `missing_key` (a join key is
null), `absurd_timestamp` (before 1970 or further in the future than the allowed skew),
`transform_error` (a udf raised: the views that do not use it still take the event), `late` (later than a view's allowed lateness: the event
is still kept, flagged, in that view's history).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ValidationError

from featurestore.plan import Plan, SourcePlan, ViewPlan
from featurestore.records import ViewRows
from featurestore.runtime.imports import import_object

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MS = dt.timedelta(milliseconds=1)


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
    """The parts of a Kafka message the decoder needs (also built from files for tests; a
    named tuple: one is made per consumed message)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def to_epoch_ms(value: dt.datetime) -> int:
    """Event time in integer ms (floor), naive datetimes taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return (value - _EPOCH) // _MS


def _schema_detail(exc: ValidationError) -> tuple[str, str]:
    errors = exc.errors(include_url=False)
    if any(e["type"] == "json_invalid" for e in errors):
        return "malformed_json", errors[0]["msg"]
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in errors[:5]]
    return "schema_violation", "; ".join(parts)


class _ViewExtractor:
    """Pulls one view's keys and history values out of a validated event."""

    def __init__(self, view: ViewPlan, code_root: Path) -> None:
        self.view = view
        self.key_names = [k.name for k in view.join_keys]
        self.key = _getter(self.key_names)
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
        self.fields = _getter(list(attrs.values()))
        self.udfs = list(udfs.items())
        self.columns = [name for name, _ in view.history_columns]
        self.order = list(attrs) + list(udfs)
        """The history columns in the order `values` returns them."""
        self.lateness_ms = view.allowed_lateness_ms

    def values(self, event: BaseModel) -> list[Any]:
        """The event's history values, in `order` (plain fields, then transforms)."""
        out = list(self.fields(event))
        for name, fn in self.udfs:
            try:
                out.append(fn(event))
            except Exception as exc:  # user code
                raise _TransformFailed(f"{self.view.name}.{name}: {type(exc).__name__}: {exc}") from None
        return out


def _getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    """A function returning these attributes of an object as a tuple (one C call)."""
    if not names:
        return lambda _: ()
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    return attrgetter(*names)


class _TransformFailed(Exception):
    pass


class Decoder:
    """Decodes batches of one source's records into ViewRows and DeadLetters."""

    def __init__(
        self, plan: Plan, source: SourcePlan, code_root: Path, max_future_skew_ms: int, max_record_bytes: int = 1024 * 1024
    ) -> None:
        """`code_root`: the feature repository, the only place the plan's code is imported from."""
        self.source = source
        self.model: type[BaseModel] = import_object(source.schema_ref, code_root)
        self.views = [_ViewExtractor(v, code_root) for v in plan.views if v.source == source.name]
        self.skew_ms = max_future_skew_ms
        self.max_record_bytes = max_record_bytes

    def decode(
        self, records: Sequence[RawRecord], now_ms: int, newest: dict[int, int | None] | None = None,
    ) -> tuple[list[ViewRows], list[DeadLetter]]:
        """Decode records (in offset order per partition). `newest`: per partition, the newest
        event time before these records, updated in place; lateness is judged against it."""
        out = [ViewRows(view=x.view.name, topic=self.source.topic, processed_at_ms=now_ms) for x in self.views]
        for rows, x in zip(out, self.views):
            rows.values = {c: [] for c in x.columns}
        dead: list[DeadLetter] = []
        ts_field = self.source.timestamp_field
        # per view, the append of each history column's list, in the order values come
        appends = [[rows.values[c].append for c in x.order] for rows, x in zip(out, self.views)]
        for rec in records:
            reason, detail, kept = self._decode_one(rec, now_ms, ts_field, out, newest, appends)
            if reason:
                dead.append(DeadLetter(self.source.topic, rec.partition, rec.offset, rec.key, rec.value, reason, detail, kept))
        return out, dead

    def _decode_one(
        self, rec: RawRecord, now_ms: int, ts_field: str, out: list[ViewRows], newest: dict[int, int | None] | None,
        column_appends: list[list[Callable[[Any], None]]],
    ) -> tuple[str, str, bool]:
        """(reason, detail, kept) of one record: reason "" when every view took it."""
        if not rec.value:
            return "malformed_json", "empty record", False
        if len(rec.value) > self.max_record_bytes:
            return "oversized", f"{len(rec.value)} bytes, more than the limit of {self.max_record_bytes}", False
        try:
            event = self.model.model_validate_json(rec.value)
        except ValidationError as exc:
            return (*_schema_detail(exc), False)
        ts = to_epoch_ms(getattr(event, ts_field))
        if ts < 0 or ts > now_ms + self.skew_ms:
            when = dt.datetime.fromtimestamp(ts / 1000, dt.timezone.utc).isoformat() if ts > -(2**46) else str(ts)
            return "absurd_timestamp", f"{ts_field}={when} is before 1970 or more than {self.skew_ms} ms in the future", False
        staged: list[tuple[tuple[Any, ...], list[Any]] | None] = []
        failed: list[str] = []
        for x in self.views:
            key = x.key(event)
            if None in key:
                return "missing_key", f"view {x.view.name}: join key {', '.join(x.key_names)} is null", False
            try:
                staged.append((key, x.values(event)))
            except _TransformFailed as exc:  # this view loses the event; the others still take it
                staged.append(None)
                failed.append(str(exc))
        if len(failed) == len(self.views):
            return "transform_error", "; ".join(failed), False
        late_for: list[str] = []
        before = newest.get(rec.partition) if newest is not None else None
        for rows, x, entry, appends in zip(out, self.views, staged, column_appends):
            if entry is None:
                continue
            key, values = entry
            rows.keys.append(key)
            rows.ts.append(ts)
            rows.partition.append(rec.partition)
            rows.offset.append(rec.offset)
            for append, value in zip(appends, values):
                append(value)
            late = x.lateness_ms is not None and before is not None and ts < before - x.lateness_ms
            if late or rows.late:
                if not rows.late:
                    rows.late = [False] * (len(rows.ts) - 1)
                rows.late.append(late)
                if late:
                    late_for.append(f"{x.view.name} (allowed {x.lateness_ms} ms)")
        if newest is not None and (before is None or ts > before):
            newest[rec.partition] = ts
        if failed:
            applied = [x.view.name for x, entry in zip(self.views, staged) if entry is not None]
            return "transform_error", f"{'; '.join(failed)} (applied to {', '.join(applied)})", True
        if late_for:
            assert before is not None
            return ("late", f"event time {ts} is {before - ts} ms behind its partition's newest {before}: "
                    f"late for {', '.join(late_for)}", True)
        return "", "", False

"""Validate a batch of JSON records column by column, with the event model's own result.

An event model whose validation is plain field checks (str with lengths, int and float
with bounds, bool, datetime with an offset, each optional or not; no validators, aliases,
defaults other than None, or settings that change values) is checked here a batch at a time:
the records are joined into newline-delimited JSON and parsed by Arrow into typed columns,
and each field's rule is checked over its whole column. A record passes only when it is
certain the model would accept it with exactly these values; every other record (a string
where a number is expected, a number as text, an offset-less time, NaN, a deep document,
an invalid date, a piece of the batch Arrow refused) is left to the model, record by
record, so what is accepted and each dead letter's reason are the model's own.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
from pydantic import BaseModel
from pydantic_core import TzInfo

Kind = Literal["str", "int", "float", "bool", "datetime"]

_ARROW_TYPES: dict[str, pa.DataType] = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(),
                                        "bool": pa.bool_(), "datetime": pa.string()}
_BOUNDS = ("gt", "ge", "lt", "le")
_ALLOWED_KEYS: dict[str, set[str]] = {
    "str": {"type", "min_length", "max_length"},
    "int": {"type", *_BOUNDS},
    "float": {"type", "allow_inf_nan", *_BOUNDS},
    "bool": {"type"},
    "datetime": {"type", "tz_constraint", "microseconds_precision"},
}
_MODEL_CONFIG = {"title", "frozen", "from_attributes", "revalidate_instances", "hide_input_in_errors",
                 "validation_error_cause", "loc_by_alias", "validate_by_name", "validate_by_alias",
                 "coerce_numbers_to_str", "cache_strings"}
"""Model settings that do not change what validation accepts or returns for these fields
(`coerce_numbers_to_str` only widens what a str accepts: such records are left to the model)."""

#: An ISO 8601 time both Arrow and pydantic read the same way: date, `T`, seconds, up to 6
#: fraction digits, `Z` or a `±HH:MM` offset below 24 h (year 0 and leap seconds excluded).
_TIME = (r"^(?:000[1-9]|00[1-9]\d|0[1-9]\d\d|[1-9]\d{3})-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])"
         r"T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d(?:\.\d{1,6})?(?:Z|[+-](?:[01]\d|2[0-3]):[0-5]\d)$")
_DEEP = 100
"""Records with this many `{`/`[` are left to the model (its parser refuses nesting deeper than 200)."""
_SMALLEST_PIECE = 64
"""A piece of a batch Arrow refuses is split in halves down to this size, then left to the model."""
_OPEN, _CLOSE, _BRACKET = ord("{"), ord("}"), ord("[")


@dataclass(frozen=True)
class ColumnRule:
    """What the model accepts for one field, as far as the column check reads it."""

    name: str
    kind: Kind
    null_ok: bool
    """A null or missing value is the field's value (None): an optional field defaulting to None."""
    bounds: tuple[tuple[str, int | float], ...] = ()
    min_length: int | None = None
    max_length: int | None = None


def column_rules(model: type[BaseModel]) -> list[ColumnRule] | None:
    """The model's fields as column rules, or None when its validation is more than plain
    field checks (the batch is then validated record by record)."""
    schema = getattr(model, "__pydantic_core_schema__", None)
    if not isinstance(schema, dict) or schema.get("type") != "model" or schema.get("custom_init") or schema.get("root_model"):
        return None
    if schema.get("post_init") or getattr(model, "__private_attributes__", None):
        return None
    config = schema.get("config") or {}
    if set(config) - _MODEL_CONFIG - {"extra_fields_behavior"}:
        return None
    if config.get("extra_fields_behavior", "ignore") != "ignore":
        return None
    fields = schema.get("schema", {})
    if fields.get("type") != "model-fields" or fields.get("extra_behavior", "ignore") != "ignore":
        return None
    rules = []
    for name, field in fields.get("fields", {}).items():
        if field.get("type") != "model-field" or field.get("validation_alias") is not None:
            return None
        rule = _rule(name, field["schema"])
        if rule is None:
            return None
        rules.append(rule)
    return rules or None


def _rule(name: str, schema: dict[str, Any]) -> ColumnRule | None:
    null_ok = False
    if schema.get("type") == "default":
        if schema.get("default", ...) is not None or schema.get("validate_default") or "default_factory" in schema:
            return None
        schema, null_ok = schema["schema"], True
        if schema.get("type") != "nullable":
            return None  # `x: int = None`: a null is refused by the model when sent
    if schema.get("type") == "nullable":
        if not null_ok or set(schema) - {"type", "schema"}:
            return None  # a required optional: a missing value and a null differ
        schema = schema["schema"]
    kind = schema.get("type")
    if kind not in _ALLOWED_KEYS or set(schema) - _ALLOWED_KEYS[kind] or schema.get("strict"):
        return None
    if kind == "datetime" and schema.get("tz_constraint") not in (None, "aware"):
        return None
    if kind == "datetime" and schema.get("microseconds_precision", "truncate") != "truncate":
        return None
    bounds = tuple((b, schema[b]) for b in _BOUNDS if b in schema)
    if any(type(v) not in (int, float) or (type(v) is int and not -(2**63) <= v < 2**63) for _, v in bounds):
        return None
    return ColumnRule(name, kind, null_ok, bounds, schema.get("min_length"), schema.get("max_length"))


class ColumnChecked:
    """A batch parsed by Arrow: its table (one row per record) and which rows passed."""

    def __init__(self, table: pa.Table, passed: np.ndarray, micros: dict[str, np.ndarray],
                 offsets: dict[str, np.ndarray]) -> None:
        self.table = table
        self.passed = passed
        """Per record: the model would accept it with exactly the table's values."""
        self.micros = micros
        """Per datetime field: microseconds since the epoch (rows that passed)."""
        self.offsets = offsets
        """Per datetime field: each time's UTC offset in seconds (rows that passed)."""


class ColumnChecker:
    """Checks batches of one event model's JSON records column by column."""

    def __init__(self, rules: Sequence[ColumnRule]) -> None:
        self.rules = list(rules)
        schema = pa.schema([(r.name, _ARROW_TYPES[r.kind]) for r in self.rules])
        self._parse = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        self._names = [r.name for r in self.rules]

    @classmethod
    def for_model(cls, model: type[BaseModel]) -> ColumnChecker | None:
        rules = column_rules(model)
        return None if rules is None else cls(rules)

    def check(self, values: Sequence[bytes]) -> ColumnChecked:
        """Parse and check non-empty records; `passed[i]` False: leave record i to the model."""
        n = len(values)
        joined = b"\n".join(values)
        sizes = np.fromiter(map(len, values), np.int64, n)
        starts = np.concatenate(([0], np.cumsum(sizes[:-1] + 1))) if n else np.zeros(0, np.int64)
        buf = np.frombuffer(joined, np.uint8)
        whole = (buf[starts] == _OPEN) & (buf[starts + sizes - 1] == _CLOSE)
        if joined.count(b"\n") != n - 1 or joined.count(b"\r"):
            whole &= np.fromiter((b"\n" not in v and b"\r" not in v for v in values), bool, n)
        # each whole record holds at least one `{`: below this total, none holds _DEEP
        if joined.count(b"[") + joined.count(b"{") >= int(whole.sum()) + _DEEP - 1:
            opening = (buf == _OPEN) | (buf == _BRACKET)
            whole &= np.add.reduceat(opening, starts, dtype=np.int64) < _DEEP  # per record (and its newline)
        if not whole.all():
            values = [v if ok else b"{}" for v, ok in zip(values, whole.tolist())]
            joined = b"\n".join(values)
        table, parsed = self._read(values, joined)
        passed = whole & parsed
        micros: dict[str, np.ndarray] = {}
        offsets: dict[str, np.ndarray] = {}
        for rule in self.rules:
            column = table.column(rule.name)
            if rule.kind == "datetime":
                ok, micros[rule.name], offsets[rule.name] = _times(column, rule.null_ok)
                passed &= ok
            else:
                passed &= _checked(column, rule)
        return ColumnChecked(table, passed, micros, offsets)

    def _read(self, values: Sequence[bytes], joined: bytes) -> tuple[pa.Table, np.ndarray]:
        """The records (`joined`: them joined by newlines) as one table, and which were parsed
        (a refused piece is halved until small; its records are then nulls here, left to the model)."""
        parsed = np.ones(len(values), bool)
        pieces: list[pa.Table] = []
        todo = [(0, len(values))]
        while todo:
            lo, hi = todo.pop()
            table = self._parse_piece(values[lo:hi], joined if hi - lo == len(values) else None)
            if table is not None:
                pieces.append(table)
            elif hi - lo <= _SMALLEST_PIECE:
                parsed[lo:hi] = False
                pieces.append(self._nulls(hi - lo))
            else:
                mid = (lo + hi) // 2
                todo += [(mid, hi), (lo, mid)]  # popped lo first: pieces stay in order
        table = pa.concat_tables(pieces) if len(pieces) != 1 else pieces[0]
        return table, parsed

    def _nulls(self, n: int) -> pa.Table:
        return pa.table({r.name: pa.nulls(n, _ARROW_TYPES[r.kind]) for r in self.rules})

    def _parse_piece(self, values: Sequence[bytes], joined: bytes | None) -> pa.Table | None:
        if not values:
            return self._nulls(0)
        try:
            table = pa_json.read_json(io.BytesIO(joined or b"\n".join(values)), parse_options=self._parse)
        except (pa.ArrowException, ValueError):  # refused (UnicodeDecodeError is a ValueError)
            return None
        return table.select(self._names) if table.num_rows == len(values) else None


def _mask(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A boolean Arrow result as numpy (nulls: False)."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


_COMPARE = {"gt": pc.greater, "ge": pc.greater_equal, "lt": pc.less, "le": pc.less_equal}


def _checked(column: pa.ChunkedArray, rule: ColumnRule) -> np.ndarray:
    """Per row: the model accepts this value as it is."""
    ok = _mask(column.is_valid())
    if rule.null_ok:
        ok |= _mask(column.is_null())
    if rule.kind == "float":
        ok &= ~_mask(pc.invert(pc.is_finite(column)))
    for name, bound in rule.bounds:
        ok &= ~_mask(pc.invert(_COMPARE[name](column, pa.scalar(bound))))
    if rule.kind == "str" and (rule.min_length is not None or rule.max_length is not None):
        length = pc.utf8_length(column)
        if rule.min_length is not None:
            ok &= ~_mask(pc.less(length, rule.min_length))
        if rule.max_length is not None:
            ok &= ~_mask(pc.greater(length, rule.max_length))
    return ok


def _times(column: pa.ChunkedArray, null_ok: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: whether the text is a time read alike by both parsers (or an allowed null),
    its microseconds since the epoch and its UTC offset in seconds (0 where not)."""
    n = len(column)
    good = _mask(pc.match_substring_regex(column, _TIME))
    ok = good | (_mask(column.is_null()) & null_ok)
    micros = np.zeros(n, np.int64)
    offsets = np.zeros(n, np.int64)
    if not good.any():
        return ok, micros, offsets
    chosen = column if good.all() else pc.if_else(pa.array(good), column, pa.scalar(_SOME_TIME))
    try:
        instants = pc.cast(chosen, pa.timestamp("us", "UTC"))
    except pa.ArrowInvalid:  # an impossible date (the pattern allows a 31st in every month): find them
        year, month, day = (_number(chosen, a, b) for a, b in ((0, 4), (5, 7), (8, 10)))
        leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
        real = day <= _MONTH_DAYS[month - 1] + ((month == 2) & leap)
        good &= real
        ok &= real
        chosen = pc.if_else(pa.array(good), column, pa.scalar(_SOME_TIME))
        instants = pc.cast(chosen, pa.timestamp("us", "UTC"))
    micros = np.asarray(instants.cast(pa.int64()).to_numpy(), np.int64)
    utc = _mask(pc.ends_with(chosen, "Z")) | _mask(pc.ends_with(chosen, "+00:00")) | _mask(pc.ends_with(chosen, "-00:00"))
    if not utc.all():
        tail = pc.if_else(pa.array(utc), pa.scalar("+00:00"), pc.utf8_slice_codeunits(chosen, -6))
        sign = np.where(_mask(pc.starts_with(tail, "-")), -1, 1)
        offsets = sign * (_number(tail, 1, 3) * 3600 + _number(tail, 4, 6) * 60)
    return ok, micros, offsets


_SOME_TIME = "1970-01-01T00:00:00Z"
_MONTH_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], np.int64)


def _number(text: pa.ChunkedArray | pa.Array, start: int, stop: int) -> np.ndarray:
    """The digits at [start, stop) of each text as integers."""
    return np.asarray(pc.cast(pc.utf8_slice_codeunits(text, start, stop), pa.int64()).to_numpy(), np.int64)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=TzInfo(0))


def datetimes(micros: np.ndarray, offsets: np.ndarray) -> list[dt.datetime]:
    """Aware datetimes as the model builds them: the instant, in its sent offset."""
    step = dt.timedelta
    distinct = np.unique(offsets) if len(offsets) else offsets
    if len(distinct) <= 1:
        base = _EPOCH.astimezone(TzInfo(int(distinct[0]))) if len(distinct) else _EPOCH
        return [base + step(microseconds=us) for us in micros.tolist()]
    bases = {int(o): _EPOCH.astimezone(TzInfo(int(o))) for o in distinct.tolist()}
    return [bases[o] + step(microseconds=us) for us, o in zip(micros.tolist(), offsets.tolist())]

"""The column-wise check of a batch gives the event model's own result: every record it
passes, the model accepts with the same values; everything else is left to the model, so the
decoder's rows and dead letters are the same as when the model validates each record."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PositiveFloat, ValidationError, field_validator

from featurestore.compile import compile_repo
from featurestore.runtime.columnar import ColumnChecker, column_rules
from featurestore.runtime.decode import Decoder, RawRecord
from featurestore.runtime.events import ColumnEvents

ROOT = Path(__file__).resolve().parents[2]
NOW = int(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
PLAN = compile_repo(ROOT / "feature_defs")


class Reading(BaseModel):
    """Every kind of field the column check reads."""

    name: str = Field(min_length=1, max_length=8)
    count: int = Field(ge=-3, lt=1_000)
    level: PositiveFloat
    ok: bool
    at: AwareDatetime
    when: dt.datetime | None = None
    note: str | None = None
    size: int | None = None
    share: float | None = Field(default=None, le=1.5)


TRANSFORM_THAT_FAILS = '''

def amount_per_merchant_char(event: Payment) -> float:
    """Raises for an empty merchant id: a transform error, the same either way."""
    return event.amount / len(event.merchant_id)


def described(event: Payment) -> str:
    """Uses its event otherwise than reading fields: called with the model."""
    return repr(event)
'''


def _repo(tmp: Path, transform: str) -> Path:
    """A copy of the example repository whose user_payments has one more transform."""
    repo = tmp / f"repo-{transform}"
    if repo.exists():
        return repo
    shutil.copytree(ROOT / "feature_defs", repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    (repo / "transforms.py").write_text((repo / "transforms.py").read_text() + TRANSFORM_THAT_FAILS)
    views = (repo / "views.py").read_text()
    views = views.replace("from transforms import amount_eur, is_large", f"from transforms import amount_eur, is_large, {transform}")
    views = views.replace('        Transform("is_large", udf=is_large),',
                          f'        Transform("is_large", udf=is_large),\n        Transform("extra_{transform}", udf={transform}),')
    (repo / "views.py").write_text(views)
    return repo


def _decoders(repo: Path) -> tuple[Decoder, Decoder]:
    plan = compile_repo(repo)
    columnar = Decoder(plan, plan.source("payments"), repo, max_future_skew_ms=300_000, max_record_bytes=4096)
    one_by_one = Decoder(plan, plan.source("payments"), repo, max_future_skew_ms=300_000, max_record_bytes=4096)
    one_by_one.columns = None
    columnar.columnar_from = 1  # every batch, however small
    assert columnar.columns is not None, "the example's event model is checked column by column"
    return columnar, one_by_one


_TMP = Path(tempfile.mkdtemp(prefix="columnar-test-"))
COLUMNAR, ONE_BY_ONE = _decoders(_repo(_TMP, "amount_per_merchant_char"))


def test_transforms_that_read_fields_are_called_with_records_of_those_fields() -> None:
    decoder = Decoder(PLAN, PLAN.source("payments"), ROOT / "feature_defs", max_future_skew_ms=300_000)
    assert decoder.columns is not None
    assert decoder.record_fields == ("amount", "currency")
    assert COLUMNAR.record_fields == ("amount", "currency", "merchant_id")


def test_a_source_with_a_transform_that_uses_its_event_otherwise_is_validated_record_by_record() -> None:
    repo = _repo(_TMP, "described")
    plan = compile_repo(repo)
    decoder = Decoder(plan, plan.source("payments"), repo, max_future_skew_ms=300_000)
    assert decoder.columns is None
    rows, _ = decoder.decode([RawRecord(0, 0, None, _valid_payment(1))], NOW)
    users = next(r for r in rows if r.view == "user_payments")
    assert users.values["extra_described"][0].startswith("Payment(payment_id=")


def test_a_transform_that_raises_gives_the_same_dead_letter_either_way() -> None:
    batch = [RawRecord(0, i, None, _valid_payment(i, merchant="" if i == 3 else "m1")) for i in range(8)]
    rows_a, dead_a = COLUMNAR.decode(batch, NOW)
    rows_b, dead_b = ONE_BY_ONE.decode(batch, NOW)
    assert [d.reason for d in dead_a] == ["transform_error"] and dead_a == dead_b
    assert "ZeroDivisionError" in dead_a[0].detail and dead_a[0].kept  # merchant_payments still took it
    assert [vars(r) for r in rows_a] == [vars(r) for r in rows_b]


ZONES: list[dt.tzinfo | None] = [dt.timezone.utc, dt.timezone(dt.timedelta(hours=5, minutes=30)),
                                 dt.timezone(-dt.timedelta(hours=23, minutes=59)), None]
times = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 30),
                     timezones=st.sampled_from(ZONES))
time_texts = (times.map(lambda d: d.isoformat() if d else "2025-12-31T23:00:00")
              | st.sampled_from(["2025-12-31T23:59:59Z", "2025-12-31T23:59:59.1234567Z", "2025-02-30T00:00:00Z",
                                 "2025-12-31 23:59:59Z", "2025-12-31T23:59:60Z", "2025-12-31T24:00:00Z", "0000-01-01T00:00:00Z",
                                 "2025-12-31T23:59:59+24:00", "2025-12-31T23:59:59+0100", "2025-12-31", "1735689599",
                                 "2025-12-31t23:59:59z", "2025-12-31T23:59:59.5-00:00"])
              | st.integers(0, 2_000_000_000) | st.floats(allow_nan=True))
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6)
nested = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                      max_leaves=6)
valid_payments: st.SearchStrategy[dict[str, Any]] = st.builds(dict, **{
    "payment_id": st.text(max_size=8), "user_id": st.integers(-5, 5), "merchant_id": st.text(max_size=6),
    "amount": st.floats(0.01, 5000), "currency": st.sampled_from(["EUR", "USD", "ÉÛR"]),
    "country": st.sampled_from(["FR", "US"]), "ts": times.map(lambda d: (d or dt.datetime(2025, 1, 1)).isoformat()),
})
payment_changes = st.dictionaries(
    st.sampled_from(["payment_id", "user_id", "merchant_id", "amount", "currency", "country", "ts", "extra"]),
    scalars | time_texts | nested | st.sampled_from(["7", 7.0, 1e2, "12.5", 0, -0.0, "E", "EU\u0301", "X"]),
    max_size=2,
)
payment_like = st.tuples(valid_payments, payment_changes, st.sets(st.sampled_from(["user_id", "ts", "amount"]), max_size=1)).map(
    lambda p: {k: v for k, v in {**p[0], **p[1]}.items() if k not in p[2]})


def _encode(doc: dict[str, Any], style: int) -> bytes:
    text = json.dumps(doc, allow_nan=True, ensure_ascii=style % 2 == 0)
    if style == 2:
        text = json.dumps(doc, indent=1)  # newlines inside the record
    elif style == 3:
        text = " " + text + "\t"
    elif style == 4:
        text = text.replace("{", '{"user_id": 1, ', 1) if len(doc) else text  # a duplicate key
    elif style == 5:
        text = '{"extra":' + "[" * 250 + "]" * 250 + "," + text[1:] if len(text) > 2 else text
    return text.encode()


records = st.lists(
    st.tuples(payment_like, st.integers(0, 12)).map(lambda p: _encode(*p))
    | st.binary(max_size=60) | st.sampled_from([b"", b"{}", b"[]", b"{} {}", b"\xff{}", b'{"ts": "\\ud800"}']),
    max_size=40,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records)
def test_the_decoder_gives_the_same_rows_and_dead_letters_either_way(values: list[bytes]) -> None:
    raw = [RawRecord(i % 3, i, None, v) for i, v in enumerate(values)]
    newest_a: dict[int, int | None] = {}
    newest_b: dict[int, int | None] = {}
    rows_a, dead_a = COLUMNAR.decode(raw, NOW, newest_a)
    rows_b, dead_b = ONE_BY_ONE.decode(raw, NOW, newest_b)
    assert dead_a == dead_b
    assert [vars(r) for r in rows_a] == [vars(r) for r in rows_b]
    assert newest_a == newest_b


def _valid_payment(i: int, ts: str = "2025-12-31T23:00:00.5+00:00", merchant: str = "m1") -> bytes:
    return json.dumps({"payment_id": f"p{i}", "user_id": i % 7, "merchant_id": merchant, "amount": 10.5 + i,
                       "currency": "EUR", "country": "FR", "ts": ts, "extra": {"a": [1, 2]}}).encode()


def test_a_valid_batch_is_checked_without_the_model() -> None:
    assert COLUMNAR.columns is not None
    checked = COLUMNAR.columns.check([_valid_payment(i) for i in range(500)])
    assert checked.passed.all()


def test_one_bad_record_leaves_only_a_small_piece_to_the_model() -> None:
    values = [_valid_payment(i) for i in range(5_000)]
    values[1234] = values[1234].replace(b'"user_id": 2', b'"user_id": "2"')  # valid for the model, refused by Arrow
    assert COLUMNAR.columns is not None
    checked = COLUMNAR.columns.check(values)
    assert not checked.passed[1234]
    assert (~checked.passed).sum() <= 64
    rows, dead = COLUMNAR.decode([RawRecord(0, i, None, v) for i, v in enumerate(values)], NOW, {})
    users = next(r for r in rows if r.view == "user_payments")
    assert not dead and len(users) == 5_000 and users.keys[1234] == (2,) and users.keys[1235] == (3,)


def test_times_keep_their_offset_as_the_model_does() -> None:
    stamps = ["2025-12-31T23:00:00Z", "2025-12-31T23:00:00.123456+05:30", "2025-12-31T23:00:00-00:00",
              "2025-12-31T01:00:00.1-23:59"]
    values = [_valid_payment(i, ts) for i, ts in enumerate(stamps)]
    assert COLUMNAR.columns is not None
    checked = COLUMNAR.columns.check(values)
    assert checked.passed.all()
    got = ColumnEvents(checked, np.arange(4), np.arange(4), [], []).column("ts")
    for value, ts in zip(values, got):
        expected = COLUMNAR.model.model_validate_json(value).ts  # type: ignore[attr-defined]  # the Payment model's field
        assert ts == expected and repr(ts) == repr(expected)


required_readings: st.SearchStrategy[dict[str, Any]] = st.builds(
    dict, name=st.text(min_size=1, max_size=8), count=st.integers(-3, 999), level=st.floats(1e-300, 1e300),
    ok=st.booleans(), at=times.map(lambda d: (d or dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)).isoformat()))
optional_readings = st.fixed_dictionaries(
    {},
    optional={"when": time_texts, "note": st.text(max_size=3) | st.none(), "size": st.integers(-9, 9) | st.none(),
              "share": st.floats(0, 1.5) | st.none()},
)
reading_changes = st.dictionaries(
    st.sampled_from(["name", "count", "level", "ok", "at", "when", "note", "size", "share"]),
    scalars | time_texts | st.sampled_from(["", "x" * 9, -4, 1000, 0.0, -1.0, 1.6, "1", 1.0, "true", 1]), max_size=2,
)
valid_readings = st.tuples(required_readings, optional_readings).map(lambda p: {**p[0], **p[1]})
reading_docs = st.tuples(valid_readings, reading_changes, st.sets(st.sampled_from(["name", "at", "size"]), max_size=1)).map(
    lambda p: {k: v for k, v in {**p[0], **p[1]}.items() if k not in p[2]})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(reading_docs, st.integers(0, 12)).map(lambda p: _encode(*p)), min_size=1, max_size=30))
def test_every_record_the_check_passes_the_model_accepts_alike(values: list[bytes]) -> None:
    checker = ColumnChecker.for_model(Reading)
    assert checker is not None
    checked = checker.check(values)
    rows = np.flatnonzero(checked.passed)
    events = ColumnEvents(checked, rows, rows, [], [])
    columns = {name: events.column(name) for name in Reading.model_fields}
    for i, at in enumerate(rows.tolist()):
        expected = Reading.model_validate_json(values[at])
        got = {name: column[i] for name, column in columns.items()}
        assert got == dict(expected) and repr(got) == repr(dict(expected))


def test_times_the_model_refuses_are_left_to_it() -> None:
    checker = ColumnChecker.for_model(Reading)
    assert checker is not None
    doc = {"name": "a", "count": 3, "level": 0.5, "ok": True}
    stamps = ["2025-02-29T00:00:00Z", "2024-02-29T00:00:00Z", "2025-04-31T00:00:00Z", "2025-12-31T00:00:00",
              "2025-12-31T00:00:00.1234567Z", "2025-12-31T00:00:00+24:00"]
    checked = checker.check([json.dumps({**doc, "at": ts}).encode() for ts in stamps])
    assert checked.passed.tolist() == [False, True, False, False, False, False]


def test_a_deep_record_among_records_that_are_not_objects_is_left_to_the_model() -> None:
    deep = b'{"x":' + b"[" * 250 + b"]" * 250 + b"}"
    assert COLUMNAR.columns is not None
    checked = COLUMNAR.columns.check([b"x"] * 450 + [deep, _valid_payment(1)])
    assert checked.passed.tolist() == [False] * 451 + [True]


def test_a_plain_valid_reading_passes() -> None:
    checker = ColumnChecker.for_model(Reading)
    assert checker is not None
    doc = {"name": "a", "count": 3, "level": 0.5, "ok": True, "at": "2026-01-01T00:00:00Z", "share": 1}
    assert checker.check([json.dumps(doc).encode()] * 3).passed.all()


class _Validated(BaseModel):
    x: int

    @field_validator("x")
    @classmethod
    def _positive(cls, v: int) -> int:
        return abs(v)


class _Forbids(BaseModel):
    model_config = ConfigDict(extra="forbid")
    x: int


class _Strips(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)
    x: str


class _Defaults(BaseModel):
    x: int = 5


class _HugeBound(BaseModel):
    x: int = Field(lt=2**70)


class _Pattern(BaseModel):
    x: str = Field(pattern="^a")


class _Nested(BaseModel):
    x: list[int]


class _Naive(BaseModel):
    x: dt.datetime = Field(json_schema_extra={})
    y: Any = None


@pytest.mark.parametrize("model", [_Validated, _Forbids, _Strips, _Defaults, _HugeBound, _Pattern, _Nested, _Naive])
def test_models_with_more_than_plain_checks_are_validated_record_by_record(model: type[BaseModel]) -> None:
    assert column_rules(model) is None


def test_a_record_the_model_refuses_keeps_its_reason() -> None:
    bad = _valid_payment(1).replace(b'"amount": 11.5', b'"amount": -1')
    rows, dead = COLUMNAR.decode([RawRecord(0, 0, None, bad), RawRecord(0, 1, None, _valid_payment(2))], NOW, {})
    assert [d.reason for d in dead] == ["schema_violation"] and "amount" in dead[0].detail
    with pytest.raises(ValidationError):
        COLUMNAR.model.model_validate_json(bad)
    assert rows[0].offset == [1]

"""Decoding records into view rows or dead letters (pure logic, no Kafka)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson

from featurestore.compile import compile_repo
from featurestore.runtime.decode import Decoder, RawRecord

ROOT = Path(__file__).resolve().parents[2]
NOW = int(dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc).timestamp() * 1000)


def _event(**changes: object) -> bytes:
    ev = {"payment_id": "p1", "user_id": 7, "merchant_id": "m1", "amount": 1200.0, "currency": "USD",
          "country": "US", "ts": "2026-01-01T11:59:00.123456+00:00"}
    ev.update(changes)
    return orjson.dumps({k: v for k, v in ev.items() if v is not ...})


def _decoder() -> Decoder:
    plan = compile_repo(ROOT / "feature_defs")
    return Decoder(plan, plan.source("payments"), ROOT / "feature_defs", max_future_skew_ms=300_000)


def test_valid_event_becomes_one_row_per_view() -> None:
    rows, dead = _decoder().decode([RawRecord(2, 41, b"7", _event())], NOW)
    assert dead == []
    by_view = {r.view: r for r in rows}
    user = by_view["user_payments"]
    assert user.keys == [(7,)] and user.partition == [2] and user.offset == [41]
    assert user.ts == [NOW - 60_000 + 123]  # ms, sub-ms truncated
    assert user.values["amount_eur"] == [round(1200.0 * 0.92, 2)]
    assert user.values["is_large"] == [True]
    assert user.values["last_merchant"] == ["m1"]
    assert by_view["merchant_payments"].keys == [("m1",)]


def test_every_bad_record_is_dead_lettered_with_a_reason() -> None:
    records = [
        RawRecord(0, 1, None, b"{not json"),
        RawRecord(0, 2, None, b""),
        RawRecord(0, 3, None, _event(amount="lots")),
        RawRecord(0, 4, None, _event(user_id=...)),
        RawRecord(0, 5, None, _event(amount=-5)),
        RawRecord(0, 6, None, _event(ts="2026-01-01T13:00:00+00:00")),  # an hour in the future
        RawRecord(0, 7, None, _event(ts="1969-12-31T00:00:00+00:00")),
        RawRecord(0, 8, None, b"[1, 2]"),
        RawRecord(0, 9, None, _event()),
    ]
    rows, dead = _decoder().decode(records, NOW)
    reasons = {d.offset: d.reason for d in dead}
    assert reasons == {1: "malformed_json", 2: "malformed_json", 3: "schema_violation", 4: "schema_violation",
                       5: "schema_violation", 6: "absurd_timestamp", 7: "absurd_timestamp", 8: "schema_violation"}
    assert "amount" in next(d.detail for d in dead if d.offset == 3)
    assert "user_id" in next(d.detail for d in dead if d.offset == 4)
    assert all(len(r) == 1 and r.offset == [9] for r in rows), "the valid record is kept"

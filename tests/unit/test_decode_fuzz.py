"""Fuzzing the decoder: arbitrary bytes and schema-violating JSON never crash it, and every
record is accounted for (a row in every view, or exactly one dead letter with a reason)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.compile import compile_repo
from featurestore.runtime.decode import Decoder, RawRecord

ROOT = Path(__file__).resolve().parents[2]
NOW = int(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
REASONS = {"oversized", "malformed_json", "schema_violation", "missing_key", "absurd_timestamp", "transform_error"}
PLAN = compile_repo(ROOT / "feature_defs")
DECODER = Decoder(PLAN, PLAN.source("payments"), ROOT / "feature_defs", max_future_skew_ms=300_000, max_record_bytes=4096)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
payment_like = st.fixed_dictionaries(
    {},
    optional={
        "payment_id": json_values,
        "user_id": st.integers(-5, 5) | json_values,
        "merchant_id": st.text(max_size=6) | json_values,
        "amount": st.floats(-10, 5000, allow_nan=False) | json_values,
        "currency": st.sampled_from(["EUR", "USD", "E"]) | json_values,
        "country": st.sampled_from(["FR", "US", "X"]) | json_values,
        "ts": st.datetimes(timezones=st.just(dt.timezone.utc)).map(lambda d: d.isoformat()) | json_values,
    },
)
records = st.lists(
    st.binary(max_size=200) | payment_like.map(lambda d: json.dumps(d).encode()) | st.binary(min_size=4097, max_size=5000), max_size=25
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records)
def test_every_record_is_a_row_or_one_dead_letter(values: list[bytes]) -> None:
    raw = [RawRecord(0, i, None, v) for i, v in enumerate(values)]
    rows, dead = DECODER.decode(raw, NOW)
    dead_offsets = [d.offset for d in dead]
    assert len(dead_offsets) == len(set(dead_offsets))
    assert {d.reason for d in dead} <= REASONS
    assert all(d.detail for d in dead)
    for view_rows in rows:
        kept = view_rows.offset
        assert sorted(kept + dead_offsets) == list(range(len(values))), "each record exactly once"
        assert all(len(col) == len(kept) for col in view_rows.values.values())
    for d in dead:
        assert d.value == values[d.offset], "the dead letter carries the original bytes"

"""Fuzzing the decoder: arbitrary bytes and schema-violating JSON never crash it, and every
record is accounted for (a row in every view, or exactly one dead letter with a reason)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

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


def _flaky_repo(root: Path) -> Path:
    """The example repository with a transform that raises for large amounts and a merchant
    key that may be null (transform_error, missing_key and late all reachable)."""
    import shutil

    repo = root / "repo"
    shutil.copytree(ROOT / "feature_defs", repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    sources = repo / "sources.py"
    sources.write_text(sources.read_text().replace("merchant_id: str\n", "merchant_id: str | None = None\n"))
    transforms = repo / "transforms.py"
    transforms.write_text(transforms.read_text().replace(
        '    """The payment amount converted to euros."""\n',
        '    """The payment amount converted to euros."""\n    if event.amount > 9000:\n'
        '        raise ValueError("amount too large to convert")\n'))
    return repo


event_parts = st.tuples(
    st.integers(0, 1),  # partition
    st.sampled_from([-10, 0, 10, 30, 59, 61, 80, 119, 121, 180]).map(lambda m: m * 60_000)
    | st.integers(-10 * 60_000, 3 * 3_600_000),  # ms before NOW (negative: in the future)
    st.integers(1, 4),  # user
    st.sampled_from(["m1", "m2", None]),
    st.sampled_from([5.0, 1500.0, 9500.0, -1.0]),
    st.booleans(),  # truncated
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(event_parts, max_size=40), st.sampled_from([None, {}, {0: NOW - 7_200_000, 1: NOW}]))
def test_a_batch_decodes_as_its_records_one_by_one(tmp_path_factory: Any, parts: list[tuple], newest: Any) -> None:
    """Decoding is column-wise over a batch; every row, flag, dead letter and the partitions'
    newest times must be what decoding each record alone, in order, gives."""
    repo = FLAKY_REPOS.get("repo") or FLAKY_REPOS.setdefault("repo", _flaky_repo(tmp_path_factory.mktemp("flaky")))
    plan = compile_repo(repo)
    decoder = Decoder(plan, plan.source("payments"), repo, max_future_skew_ms=300_000)
    records = []
    for offset, (partition, ago, user, merchant, amount, truncated) in enumerate(parts):
        ts = dt.datetime.fromtimestamp((NOW - ago) / 1000, dt.timezone.utc).isoformat()
        value = json.dumps({"payment_id": f"p{offset}", "user_id": user, "merchant_id": merchant, "amount": amount,
                            "currency": "USD", "country": "US", "ts": ts}).encode()
        records.append(RawRecord(partition, offset, None, value[:-3] if truncated else value))
    whole_newest = None if newest is None else dict(newest)
    rows, dead = decoder.decode(records, NOW, whole_newest)
    one_newest = None if newest is None else dict(newest)
    singles = [decoder.decode([r], NOW, one_newest) for r in records]
    assert dead == [d for _, ds in singles for d in ds]
    assert whole_newest == one_newest
    for v, view_rows in enumerate(rows):
        parts_of_view = [s[0][v] for s in singles]
        assert view_rows.keys == [k for p in parts_of_view for k in p.keys]
        assert view_rows.ts == [t for p in parts_of_view for t in p.ts]
        assert view_rows.offset == [o for p in parts_of_view for o in p.offset]
        assert view_rows.partition == [o for p in parts_of_view for o in p.partition]
        assert (view_rows.late or [False] * len(view_rows)) == [x for p in parts_of_view for x in (p.late or [False] * len(p))]
        for column, values in view_rows.values.items():
            assert values == [x for p in parts_of_view for x in p.values[column]], column


FLAKY_REPOS: dict[str, Path] = {}

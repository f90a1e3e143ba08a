"""Both kinds of training set over a real Parquet history and DuckDB: "corrected" counts
every event by event time; "as_served" only what the online store had applied by then."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from featurestore.compile import compile_repo
from featurestore.offline import HistoryWriter
from featurestore.offline.point_in_time import point_in_time_features
from featurestore.records import ViewRows

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_790_000_000_000  # 20 s past a minute boundary
S = 1000


def _event(rows: ViewRows, offset: int, ts: int, amount: float, country: str, late: bool) -> None:
    values: dict[str, Any] = {"amount": amount, "amount_eur": amount, "last_merchant": "m1", "last_country": country,
                              "is_large": amount > 1000, "merchant_id": "m1", "country": country}
    rows.keys.append((1,))
    rows.ts.append(ts)
    rows.partition.append(0)
    rows.offset.append(offset)
    rows.late.append(late)
    for c in rows.values:
        rows.values[c].append(values[c])


@pytest.fixture
def history(tmp_path: Path) -> Path:
    plan = compile_repo(ROOT / "feature_defs")
    cols = [n for n, _ in plan.view("user_payments").history_columns]
    writer = HistoryWriter(tmp_path, plan)
    # A at T0 processed at once; B (T0+10s) processed 5 minutes later; C (T0+20s) arrived too late
    for offset, ts, processed, amount, country, late in [
        (0, T0, T0 + 1 * S, 10.0, "FR", False),
        (1, T0 + 10 * S, T0 + 300 * S, 20.0, "DE", False),
        (2, T0 + 20 * S, T0 + 30 * S, 40.0, "ES", True),
    ]:
        rows = ViewRows(view="user_payments", topic="payments", processed_at_ms=processed)
        rows.values = {c: [] for c in cols}
        _event(rows, offset, ts, amount, country, late)
        writer.append(rows)
    writer.flush()
    return tmp_path


def _features(root: Path, t: int, mode: str) -> dict[str, Any]:
    plan = compile_repo(ROOT / "feature_defs")
    view = plan.view("user_payments")
    feats = ["amount_count_1h", "amount_sum_1h", "last_country", "recent_merchants_1h"]
    out = point_in_time_features(root, view, feats, pa.table({"user_id": [1]}), pa.array([t], pa.int64()), mode=mode)
    return out.to_pylist()[0]


def test_corrected_counts_every_event_by_event_time(history: Path) -> None:
    got = _features(history, T0 + 60 * S, "corrected")
    assert got["amount_count_1h"] == 3 and got["amount_sum_1h"] == 70.0
    assert got["last_country"] == "ES"


def test_as_served_sees_only_what_the_online_store_held(history: Path) -> None:
    # at T0+60s, B was not processed yet and C was dropped as late: only A
    early = _features(history, T0 + 60 * S, "as_served")
    assert early["amount_count_1h"] == 1 and early["amount_sum_1h"] == 10.0
    assert early["last_country"] == "FR"
    # at T0+10min B has been processed; C never counts
    later = _features(history, T0 + 600 * S, "as_served")
    assert later["amount_count_1h"] == 2 and later["amount_sum_1h"] == 30.0
    assert later["last_country"] == "DE"
    assert later["recent_merchants_1h"] == ["m1", "m1"]


def test_unknown_mode_is_refused(history: Path) -> None:
    with pytest.raises(ValueError, match="mode must be one of corrected, as_served"):
        _features(history, T0, "live")


def test_windows_count_events_not_the_entity_rows_of_the_training_set(history: Path) -> None:
    # windows are frames over the history and the entity rows in one stream: an aggregation
    # of a join key column must still count only events, whatever the entity rows
    view = compile_repo(ROOT / "feature_defs").view("user_payments")
    base = next(a for a in view.aggregations if a.name == "amount_count_1h")
    keyed = base.model_copy(update={"name": "events_1h", "column": "user_id", "dtype": "int"})
    view = view.model_copy(update={"aggregations": [*view.aggregations, keyed]})
    times = [T0 - S, T0, T0 + 10 * S, T0 + 10 * S, T0 + 60 * S, T0 + 3580 * S, T0 + 3580 * S + 1]
    out = point_in_time_features(history, view, ["events_1h", "amount_count_1h"], pa.table({"user_id": [1] * len(times)}),
                                 pa.array(times, pa.int64()), mode="corrected")
    # T0-1s: no event yet (NULL); T0+3580s is on a tile boundary: (T0-20s, T0+3580s] holds A, B
    # and C; 1 ms later the window starts at the next boundary, T0+40s, and holds none
    assert out["amount_count_1h"].to_pylist() == [None, 1, 2, 2, 3, 3, 0]
    assert out["events_1h"].to_pylist() == out["amount_count_1h"].to_pylist()

"""The Parquet history's commit protocol: no duplicates, no holes, no half-written files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow.dataset as pads
import pytest

from featurestore.compile import compile_repo
from featurestore.offline import HistoryWriter
from featurestore.records import ViewRows

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000_000
DAY = 86_400_000


def _rows(offsets: list[int], partition: int = 0) -> ViewRows:
    rows = ViewRows(view="user_payments", topic="payments", processed_at_ms=T0)
    plan = compile_repo(ROOT / "feature_defs")
    cols = [n for n, _ in plan.view("user_payments").history_columns]
    rows.values = {c: [] for c in cols}
    values: dict[str, Any] = {"amount": 2.5, "amount_eur": 2.5, "last_merchant": "m", "last_country": "FR", "is_large": False,
                              "merchant_id": "m", "country": "FR"}
    for o in offsets:
        rows.keys.append((o % 7,))
        rows.ts.append(T0 + (o % 3) * DAY + o)  # spread over three date folders
        rows.partition.append(partition)
        rows.offset.append(o)
        for c in cols:
            rows.values[c].append(values[c])
    return rows


def _history(root: Path) -> list[tuple[int, int]]:
    table = pads.dataset(root / "user_payments", format="parquet", partitioning="hive").to_table()
    return sorted(zip(table["_partition"].to_pylist(), table["_offset"].to_pylist()))


@pytest.fixture
def plan():
    return compile_repo(ROOT / "feature_defs")


def test_replays_with_other_batch_boundaries_write_each_row_once(tmp_path: Path, plan) -> None:
    w = HistoryWriter(tmp_path, plan)
    w.append(_rows(list(range(0, 40))))
    w.append(_rows(list(range(0, 25)), partition=1))
    w.flush()
    again = HistoryWriter(tmp_path, plan)  # a restart: state comes from the commit files
    assert again.committed_offset("user_payments", "payments", 0) == 39
    again.append(_rows(list(range(30, 60))))  # overlaps what is committed
    again.append(_rows(list(range(0, 25)), partition=1))  # entirely a replay
    again.flush()
    assert again.rows_skipped == 10 + 25
    assert _history(tmp_path) == [(0, o) for o in range(60)] + [(1, o) for o in range(25)]


def test_crash_after_the_commit_point_rolls_forward(tmp_path: Path, plan, monkeypatch) -> None:
    real_replace = os.replace
    calls: list[str] = []

    def crash_on_first_parquet_rename(src: Any, dst: Any) -> None:
        if str(dst).endswith(".parquet"):
            calls.append(str(dst))
            raise KeyboardInterrupt("simulated crash after the commit file, before the renames")
        real_replace(src, dst)

    w = HistoryWriter(tmp_path, plan)
    w.append(_rows(list(range(20))))
    monkeypatch.setattr(os, "replace", crash_on_first_parquet_rename)
    with pytest.raises(KeyboardInterrupt):
        w.flush()
    monkeypatch.setattr(os, "replace", real_replace)
    assert calls and not list((tmp_path / "user_payments").rglob("*.parquet")), "readers see nothing half-done"
    recovered = HistoryWriter(tmp_path, plan)
    assert _history(tmp_path) == [(0, o) for o in range(20)], "the committed flush is completed on start"
    recovered.append(_rows(list(range(20))))
    recovered.flush()
    assert _history(tmp_path) == [(0, o) for o in range(20)]


def test_crash_before_the_commit_point_rolls_back(tmp_path: Path, plan, monkeypatch) -> None:
    def crash_on_commit(self, *args: Any) -> None:
        raise KeyboardInterrupt("simulated crash before the commit file")

    w = HistoryWriter(tmp_path, plan)
    w.append(_rows(list(range(20))))
    monkeypatch.setattr(HistoryWriter, "_write_commit", crash_on_commit)
    with pytest.raises(KeyboardInterrupt):
        w.flush()
    monkeypatch.undo()
    staged = list((tmp_path / "user_payments").rglob(".*.staged"))
    assert staged, "the crash left staged files"
    recovered = HistoryWriter(tmp_path, plan)
    assert not list((tmp_path / "user_payments").rglob(".*.staged")), "uncommitted staged files are removed"
    assert recovered.committed_offset("user_payments", "payments", 0) == -1
    recovered.append(_rows(list(range(20))))
    recovered.flush()
    assert _history(tmp_path) == [(0, o) for o in range(20)], "the replay writes the rows, once"

"""The Spark engine builds the same training sets as DuckDB: on the property-test streams
(out of order, late and malformed events, every aggregation, tile-edge instants), in both
modes; on a history with an interrupted commit; and through the CLI."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore.config import load_settings
from featurestore.offline.history import view_dir
from featurestore.offline.point_in_time import MODES, point_in_time_features
from featurestore.plan import Plan
from featurestore.runtime.backfill import Backfill
from tests.property.reference import close
from tests.property.test_windows_equivalence import BASE, _raw, streams
from tests.unit.test_cli import cli

pytestmark = [pytest.mark.integration, pytest.mark.spark]


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    if shutil.which("java") is None:
        pytest.skip("the Spark engine needs Java 17+ (Debian: openjdk-17-jre-headless; .ci/run installs it)")
    from featurestore.offline.spark_engine import spark_session

    yield spark_session()


def _history(plan: Plan, repo: Path, root: Path, events: list[Any]) -> Any:
    settings_ = load_settings(repo, offline_path=root / "offline", registry_path=root / "registry")
    path = root / "events.jsonl"
    path.write_bytes(b"\n".join(_raw(events)) + b"\n")
    Backfill(plan, settings_).run(path)
    return settings_


def _same(view: str, feature: str, duck: list[Any], spark: list[Any]) -> None:
    for i, (a, b) in enumerate(zip(duck, spark, strict=True)):
        assert a == b or close(a, b), f"{view}:{feature} row {i}: DuckDB {a!r}, Spark {b!r}"


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stream=streams(), edges=st.lists(st.integers(0, 240), max_size=3))
def test_spark_equals_duckdb_on_the_property_streams(stream: tuple[list[Any], list[int]], edges: list[int], plan: Plan,
                                                     repo: Path, spark: Any) -> None:
    from featurestore.offline.spark_engine import spark_point_in_time_features

    events, instants = stream
    instants = instants + [m * 60_000 for m in edges]  # instants on tile edges (minute tiles) too
    with tempfile.TemporaryDirectory() as tmp:
        settings_ = _history(plan, repo, Path(tmp), events)
        users = [0, 1, 2, 3]  # user 3 never has events
        keys = pa.table({"user_id": pa.array([u for u in users for _ in instants], pa.int64())})
        t_ms = pa.array([BASE + i for _ in users for i in instants], pa.int64())
        for view in plan.views:
            for mode in MODES:
                duck = point_in_time_features(settings_.offline_root, view, view.feature_names, keys, t_ms, mode=mode)
                sp = spark_point_in_time_features(spark, settings_.offline_root, view, view.feature_names, keys, t_ms,
                                                  mode=mode)
                assert sp.schema == duck.schema
                for name in view.feature_names:
                    _same(f"{view.name} ({mode})", name, duck[name].to_pylist(), sp[name].to_pylist())


def test_an_interrupted_commit_is_invisible_to_both_engines(plan: Plan, repo: Path, spark: Any, tmp_path: Path) -> None:
    from featurestore.offline.spark_engine import spark_point_in_time_features

    events = [{"user_id": 1, "n": i, "x": i / 2, "label": "abc"[i % 3], "flag": i % 2 == 0,
               "ts": dt.datetime.fromtimestamp((BASE + i * 1000) / 1000, dt.timezone.utc).isoformat()} for i in range(50)]
    settings_ = _history(plan, repo, tmp_path, events)
    view = plan.view("props")
    folder = view_dir(settings_.offline_root, view.name)
    committed = sorted(folder.glob("date=*/part-*.parquet"))
    assert committed
    # a writer died after staging its files: a hidden .staged file with rows of its own
    extra = pq.read_table(committed[0]).slice(0, 5)
    pq.write_table(extra, committed[0].parent / f".{committed[0].name.replace('.parquet', '-x.parquet')}.staged")
    keys = pa.table({"user_id": pa.array([1, 1], pa.int64())})
    t_ms = pa.array([BASE + 20_000, BASE + 1_800_000], pa.int64())
    duck = point_in_time_features(settings_.offline_root, view, view.feature_names, keys, t_ms)
    sp = spark_point_in_time_features(spark, settings_.offline_root, view, view.feature_names, keys, t_ms)
    assert duck["n_count_1h"].to_pylist() == sp["n_count_1h"].to_pylist() == [21, 50]


def test_the_cli_builds_the_same_training_set_with_spark(example_repo: Path, tmp_path: Path, spark: Any) -> None:
    from featurestore.demo import payment_events

    end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    records = payment_events(2000, end=end, span=dt.timedelta(hours=6), users=30, seed=81)
    archive = tmp_path / "payments.jsonl"
    archive.write_bytes(b"".join(r.value + b"\n" for r in records))
    env = {"FEATURESTORE_OFFLINE_PATH": str(tmp_path / "offline"), "FEATURESTORE_REGISTRY_PATH": str(tmp_path / "registry")}
    assert cli("apply", "--repo", str(example_repo), env=env).returncode == 0
    res = cli("backfill", "--from", str(archive), "--repo", str(example_repo), env=env)
    assert res.returncode == 0, res.stderr
    rows = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"user_id": list(range(1, 31)) * 4,
                             "event_timestamp": pa.array([end - dt.timedelta(hours=h) for h in (0, 1, 2, 5) for _ in range(30)],
                                                         pa.timestamp("us", tz="UTC"))}), rows)
    outputs = {}
    for engine in ("duckdb", "spark"):
        out = tmp_path / f"{engine}.parquet"
        res = cli("training-set", "--entities", str(rows), "--service", "fraud_model_v1", "-o", str(out), "--engine", engine,
                  "--repo", str(example_repo), env=env)
        assert res.returncode == 0, res.stderr
        outputs[engine] = pq.read_table(out)
    duck, sp = outputs["duckdb"], outputs["spark"]
    assert duck.schema == sp.schema and duck.num_rows == sp.num_rows == 120
    for name in duck.column_names:
        _same("fraud_model_v1", name, duck[name].to_pylist(), sp[name].to_pylist())
    again = cli("training-set", "--entities", str(rows), "--reproduce", str(tmp_path / "spark.manifest.json"), "-o",
                str(tmp_path / "again.parquet"), "--repo", str(example_repo), env=env)
    assert again.returncode == 0 and "identical to the original" in again.stdout, again.stdout + again.stderr

"""Drift: a planted shift is found, a resample of the same distribution is not; the CLI
compares a training set with another table, exits 1 over thresholds, writes Prometheus metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore.offline.drift import feature_drift
from tests.unit.test_cli import cli


def _sample(seed: int, n: int, shift: float = 0.0, nulls: float = 0.0) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    amount = (rng.lognormal(3.0, 0.8, n) * (1 + shift)).round(2).tolist()
    country = rng.choice(["FR", "DE", "NL", "US"], n, p=[0.4, 0.3, 0.2, 0.1] if not shift else [0.1, 0.2, 0.3, 0.4]).tolist()
    count = rng.poisson(4 + 4 * shift, n).tolist()
    for i in range(int(n * nulls)):
        amount[i] = None
    return {"amount_sum_1h": amount, "last_country": country, "amount_count_1d": count}


def test_a_planted_shift_is_found_and_a_resample_is_not() -> None:
    ref, same, shifted = _sample(1, 20_000), _sample(2, 5_000), _sample(3, 5_000, shift=0.5)
    for name in ref:
        calm = feature_drift(name, ref[name], same[name])
        moved = feature_drift(name, ref[name], shifted[name])
        assert calm.psi is not None and calm.psi < 0.02 and calm.ks is not None and calm.ks < 0.05, calm
        assert moved.psi is not None and moved.psi > 0.25 and moved.ks is not None and moved.ks > 0.15, moved
    assert feature_drift("last_country", ref["last_country"], same["last_country"]).kind == "categorical"
    nulls = feature_drift("amount_sum_1h", ref["amount_sum_1h"], _sample(4, 5_000, nulls=0.3)["amount_sum_1h"])
    assert nulls.null_rate_reference == 0 and abs(nulls.null_rate_current - 0.3) < 1e-9


def test_monitor_cli_exits_1_over_thresholds_and_writes_metrics(tmp_path: Path) -> None:
    ref, same, shifted = tmp_path / "train.parquet", tmp_path / "same.parquet", tmp_path / "shifted.parquet"
    pq.write_table(pa.table(_sample(1, 20_000)), ref)
    pq.write_table(pa.table(_sample(2, 5_000)), same)
    pq.write_table(pa.table(_sample(3, 5_000, shift=0.5)), shifted)
    calm = cli("monitor", "--reference", str(ref), "--current", str(same), "--repo", str(tmp_path))
    assert calm.returncode == 0, calm.stdout + calm.stderr
    prom = tmp_path / "drift.prom"
    moved = cli("monitor", "--reference", str(ref), "--current", str(shifted), "--prometheus-file", str(prom),
                "--repo", str(tmp_path))
    assert moved.returncode == 1 and "drifted past the thresholds" in moved.stderr and "Traceback" not in moved.stderr
    text = prom.read_text()
    assert 'featurestore_feature_drift{view="",feature="amount_sum_1h",reference="train.parquet",measure="psi"}' in text
    bad = cli("monitor", "--reference", str(ref), "--current", str(same), "-f", "nope", "--repo", str(tmp_path))
    assert bad.returncode == 1 and "nope" in bad.stderr and "Traceback" not in bad.stderr

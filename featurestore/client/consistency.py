"""Online/offline consistency: read a sample of entities from Redis at time t, recompute the
same features as of t from the Parquet history with DuckDB, and report per feature."""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from featurestore.offline.history import has_history
from featurestore.offline.point_in_time import point_in_time_features
from featurestore.offline.sql import identifier, read_history
from featurestore.online.reader import OnlineReader, ViewRequest
from featurestore.online.state import DISTINCT_KEEP
from featurestore.plan import Plan

if TYPE_CHECKING:
    import pandas as pd

REL_TOLERANCE = 1e-9
#: count_distinct is exact online up to DISTINCT_KEEP values, a k-minimum-values estimate
#: beyond (standard error 1/sqrt(k - 2)), and exact offline: allow 3 sigma.
DISTINCT_REL_TOLERANCE = 3 / math.sqrt(DISTINCT_KEEP - 2)


@dataclass
class FeatureConsistency:
    """How one feature's online values compare with the offline recomputation."""

    feature: str
    checked: int = 0
    mismatches: int = 0
    max_abs_diff: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def mismatch_rate(self) -> float:
        return self.mismatches / self.checked if self.checked else 0.0


@dataclass
class ConsistencyReport:
    """Per-feature results, and per view how far the online store lags the history."""

    at: dt.datetime
    features: list[FeatureConsistency]
    staleness_ms: dict[str, int]

    @property
    def mismatches(self) -> int:
        return sum(f.mismatches for f in self.features)

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"feature": f.feature, "checked": f.checked, "mismatches": f.mismatches,
             "mismatch_rate": f.mismatch_rate, "max_abs_diff": f.max_abs_diff,
             "online_staleness_ms": self.staleness_ms.get(f.feature.split(":")[0], 0)}
            for f in self.features
        ]

    def to_arrow(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows())

    def to_pandas(self) -> pd.DataFrame:
        frame: pd.DataFrame = self.to_arrow().to_pandas()
        return frame


def value_difference(a: Any, b: Any, rel: float = REL_TOLERANCE) -> float | None:
    """None when equal (numbers within a relative tolerance), else the absolute difference (inf if not numeric)."""
    if a is None or b is None:
        return None if a is b else float("inf")
    if isinstance(a, list) and isinstance(b, list):
        diffs = [value_difference(x, y, rel) for x, y in zip(a, b)]
        return None if len(a) == len(b) and all(d is None for d in diffs) else float("inf")
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        d = abs(float(a) - float(b))
        return None if d <= rel * max(1.0, abs(float(a)), abs(float(b))) else d
    return None if a == b else float("inf")


def check_consistency(
    reader: OnlineReader,
    offline_root: Path,
    plan: Plan,
    t_ms: int,
    sample: int = 200,
    offline_plan: Plan | None = None,
    seed: int = 0,
) -> ConsistencyReport:
    """Compare `sample` entities per view online (with `plan`) and offline (with `offline_plan`,
    default the same plan) at `t_ms`. Entities are drawn from the history."""
    rnd = random.Random(seed)
    offline_plan = offline_plan or plan
    results: list[FeatureConsistency] = []
    staleness: dict[str, int] = {}
    con = duckdb.connect()
    for view in plan.views:
        feats = view.feature_names
        per_feature = {f: FeatureConsistency(f"{view.name}:{f}") for f in feats}
        results.extend(per_feature.values())
        if not has_history(offline_root, view.name):
            continue
        keys = [k.name for k in view.join_keys]
        cols = ", ".join(identifier(k) for k in keys)
        all_keys = con.execute(
            f"SELECT {cols} FROM {read_history(offline_root, view.name)} "
            f"WHERE epoch_ms(event_timestamp) <= {t_ms} GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        chosen = rnd.sample(all_keys, min(sample, len(all_keys)))
        if not chosen:
            continue
        read = reader.read_results([ViewRequest(view, feats, [tuple(k) for k in chosen])], t_ms)[0]
        online = read.values
        table = pa.table({k: [c[i] for c in chosen] for i, k in enumerate(keys)})
        times = pa.array([t_ms] * len(chosen), pa.int64())
        # online holds every event processed so far that was not dropped as late
        offline = point_in_time_features(
            offline_root, offline_plan.view(view.name), feats, table, times, con, mode="as_served", served_at_row_time=False
        ).to_pydict()
        functions = {a.name: a.function for a in view.aggregations}
        for f in feats:
            res = per_feature[f]
            rel = DISTINCT_REL_TOLERANCE if functions.get(f) == "count_distinct" else REL_TOLERANCE
            for i, key in enumerate(chosen):
                res.checked += 1
                d = value_difference(online[f][i], offline[f][i], rel)
                if d is not None:
                    res.mismatches += 1
                    res.max_abs_diff = max(res.max_abs_diff, d)
                    if len(res.examples) < 3:
                        res.examples.append(f"{dict(zip(keys, key))}: online {online[f][i]!r}, offline {offline[f][i]!r}")
        staleness[view.name] = _staleness(view, chosen, read.event_ms, offline_root, t_ms, con)
    return ConsistencyReport(dt.datetime.fromtimestamp(t_ms / 1000, dt.timezone.utc), results, staleness)


def _staleness(view: Any, chosen: list[Any], online_ts: list[int | None], offline_root: Path, t_ms: int, con: Any) -> int:
    """Largest gap by which an entity's newest event in Redis trails its newest event in the history."""
    keys = [k.name for k in view.join_keys]
    newest = {
        tuple(row[:-1]): row[-1]
        for row in con.execute(
            f"SELECT {', '.join(identifier(k) for k in keys)}, max(epoch_ms(event_timestamp)) FROM {read_history(offline_root, view.name)} "
            f"WHERE epoch_ms(event_timestamp) <= {t_ms} GROUP BY ALL"
        ).fetchall()
    }
    gaps = [newest[tuple(k)] - (o or 0) for k, o in zip(chosen, online_ts) if tuple(k) in newest]
    return int(max([0] + gaps))

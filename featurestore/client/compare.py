"""Shadow comparison of two live versions of a view: the same entities read from both, online
now and point-in-time over the history, compared feature by feature."""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from featurestore.client.consistency import value_difference
from featurestore.errors import FeatureRequestError
from featurestore.offline.history import has_history
from featurestore.offline.point_in_time import point_in_time_features
from featurestore.offline.sql import identifier, read_history
from featurestore.online.reader import OnlineReader, ViewRequest
from featurestore.plan import Plan, ViewPlan


@dataclass(frozen=True)
class FeatureComparison:
    """One feature of both versions over the same rows: where (`online` or `history`), how many
    rows, the share that differ, null rates, and for numbers mean and quantiles of each."""

    feature: str
    where: str
    rows: int
    mismatch_rate: float
    null_rate_a: float
    null_rate_b: float
    mean_a: float | None
    mean_b: float | None
    p50_a: float | None
    p50_b: float | None
    p90_a: float | None
    p90_b: float | None

    def row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compare_values(feature: str, where: str, a: list[Any], b: list[Any]) -> FeatureComparison:
    """Compare two columns of the same rows (numbers equal within a relative 1e-9)."""
    n = len(a)
    differ = sum(value_difference(x, y) is not None for x, y in zip(a, b))

    def numbers(col: list[Any]) -> list[float]:
        return [float(v) for v in col if isinstance(v, (int, float)) and not isinstance(v, bool)]

    def quantile(col: list[float], q: float) -> float | None:
        if not col:
            return None
        return statistics.quantiles(col, n=100, method="inclusive")[int(q * 100) - 1] if len(col) > 1 else col[0]

    na, nb = numbers(a), numbers(b)
    return FeatureComparison(
        feature, where, n, differ / n if n else 0.0,
        sum(v is None for v in a) / n if n else 0.0, sum(v is None for v in b) / n if n else 0.0,
        statistics.fmean(na) if na else None, statistics.fmean(nb) if nb else None,
        quantile(na, 0.5), quantile(nb, 0.5), quantile(na, 0.9), quantile(nb, 0.9))


def compare_versions(plan: Plan, reader: OnlineReader | None, offline_root: Path, ref_a: str, ref_b: str,
                     t_ms: int, sample: int = 1000, seed: int = 0) -> list[FeatureComparison]:
    """Compare the features two view versions share, for up to `sample` entities (online, read
    at `t_ms`; skipped without a reader) and `sample` (entity, time) rows of the first version's
    history (point-in-time)."""
    a, b = _version(plan, ref_a), _version(plan, ref_b)
    if [k.model_dump() for k in a.join_keys] != [k.model_dump() for k in b.join_keys]:
        raise FeatureRequestError(f"{a.name} and {b.name} have different join keys: they describe different entities")
    shared = [f for f in a.feature_names if f in b.feature_names]
    if not shared:
        raise FeatureRequestError(f"{a.name} and {b.name} share no feature name: nothing to compare")
    if not has_history(offline_root, a.name):
        raise FeatureRequestError(f"{a.name} has no history yet in {offline_root}: nothing to sample entities from")
    rnd = random.Random(seed)
    keys = [k.name for k in a.join_keys]
    con = duckdb.connect()
    rows = con.execute(f"SELECT {', '.join(identifier(k) for k in keys)}, epoch_ms(event_timestamp) "
                       f"FROM {read_history(offline_root, a.name)} WHERE epoch_ms(event_timestamp) <= {t_ms}").fetchall()
    out: list[FeatureComparison] = []
    entities = sorted({tuple(r[:-1]) for r in rows})
    chosen = rnd.sample(entities, min(sample, len(entities)))
    if reader is not None and chosen:
        got = reader.read_results([ViewRequest(a, shared, chosen), ViewRequest(b, shared, chosen)], t_ms)
        out += [compare_values(f, "online", got[0].values[f], got[1].values[f]) for f in shared]
    events = rnd.sample(rows, min(sample, len(rows)))
    if events:
        table = pa.table({k: [r[i] for r in events] for i, k in enumerate(keys)})
        times = pa.array([r[-1] for r in events], pa.int64())
        va = point_in_time_features(offline_root, a, shared, table, times, con).to_pydict()
        vb = point_in_time_features(offline_root, b, shared, table, times, con).to_pydict()
        out += [compare_values(f, "history", va[f], vb[f]) for f in shared]
    return out


def _version(plan: Plan, ref: str) -> ViewPlan:
    try:
        return plan.resolve_view(ref)
    except KeyError:
        raise FeatureRequestError(f"no live view version {ref!r}: name one as view@N "
                                  f"({', '.join(sorted(k for k in plan.view_refs if '@' in k))})") from None

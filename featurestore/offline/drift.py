"""Drift of feature values: a current sample (the served-value log, or any table of feature
columns) against a reference (a saved training set), per feature.

Numbers: the population stability index over ten quantile bins of the reference (PSI:
< 0.1 stable, 0.1–0.25 moderate, > 0.25 a shift) and the two-sample Kolmogorov–Smirnov
statistic (the largest gap between the two empirical distributions). Strings and booleans:
PSI over the reference's top values (the rest pooled) and the total variation distance in
the KS column's place. Also the null rate and the mean of each side. Pure: arrays in, numbers out.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

BINS = 10
TOP_VALUES = 20
_EPS = 1e-4


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's current values against its reference values."""

    feature: str
    reference_rows: int
    current_rows: int
    null_rate_reference: float
    null_rate_current: float
    mean_reference: float | None
    mean_current: float | None
    psi: float | None
    ks: float | None
    """KS statistic (numbers), total variation distance (categories)."""
    kind: str
    """"numeric" or "categorical"."""

    def row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _psi(ref_share: np.ndarray, cur_share: np.ndarray) -> float:
    r = np.clip(ref_share, _EPS, None)
    c = np.clip(cur_share, _EPS, None)
    return float(np.sum((c - r) * np.log(c / r)))


def numeric_drift(reference: np.ndarray, current: np.ndarray) -> tuple[float | None, float | None]:
    """(PSI over the reference's deciles, KS statistic) of two samples of numbers (no NaN)."""
    if len(reference) == 0 or len(current) == 0:
        return None, None
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, BINS + 1)[1:-1]))
    ref_bins = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    cur_bins = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    psi = _psi(ref_bins / len(reference), cur_bins / len(current))
    both = np.sort(np.concatenate([reference, current]))
    ref_cdf = np.searchsorted(np.sort(reference), both, side="right") / len(reference)
    cur_cdf = np.searchsorted(np.sort(current), both, side="right") / len(current)
    return psi, float(np.max(np.abs(ref_cdf - cur_cdf)))


def categorical_drift(reference: list[Any], current: list[Any]) -> tuple[float | None, float | None]:
    """(PSI over the reference's top values, the rest pooled; total variation distance)."""
    if not reference or not current:
        return None, None
    top = [v for v, _ in Counter(reference).most_common(TOP_VALUES)]
    index = {v: i for i, v in enumerate(top)}
    def shares(values: list[Any]) -> np.ndarray:
        counts = np.zeros(len(top) + 1)
        for v in values:
            counts[index.get(v, len(top))] += 1
        return counts / len(values)
    r, c = shares(reference), shares(current)
    return _psi(r, c), float(0.5 * np.abs(r - c).sum())


def feature_drift(feature: str, reference: list[Any], current: list[Any]) -> FeatureDrift:
    """Drift of one feature's values (None: missing)."""
    ref = [v for v in reference if v is not None and not (isinstance(v, float) and math.isnan(v))]
    cur = [v for v in current if v is not None and not (isinstance(v, float) and math.isnan(v))]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ref + cur) and bool(ref + cur)
    if numeric:
        r, c = np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)
        psi, ks = numeric_drift(r, c)
        means = (float(r.mean()) if len(r) else None, float(c.mean()) if len(c) else None)
    else:
        hashable = [tuple(v) if isinstance(v, list) else v for v in ref], [tuple(v) if isinstance(v, list) else v for v in cur]
        psi, ks = categorical_drift(*hashable)
        means = (None, None)
    return FeatureDrift(feature, len(reference), len(current),
                        1 - len(ref) / len(reference) if reference else 0.0, 1 - len(cur) / len(current) if current else 0.0,
                        means[0], means[1], psi, ks, "numeric" if numeric else "categorical")

"""Exact float sums, vectorised: the canonical expansion of the exact sum of runs of values.

A tile's sum is kept as the first two terms (hi, lo) of the canonical expansion of its exact
value (hi the correctly rounded sum, lo the rounded remainder, rare further terms apart), so
the same events give the same bits whatever the order and batching they came in.
"""

from __future__ import annotations

import numpy as np

from featurestore.online.packed import canonical_expansion

_CASCADE_MAX = 64
"""Runs up to this long are summed exactly by vectorised TwoSum passes (longer: math.fsum)."""


def exact_sums(values: np.ndarray, first: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[int, list[float]]]:
    """Per run [first, stop) of `values`, the canonical expansion of its exact sum (the
    correctly rounded sum, the rounded remainder, ...): the first two terms as arrays, the
    further ones per run that has them. The same terms whatever the order of the values."""
    with np.errstate(over="ignore", invalid="ignore"):  # inf / nan sums stay inf / nan
        return _exact_sums(values, first, stop)


def _exact_sums(values: np.ndarray, first: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict[int, list[float]]]:
    counts = stop - first
    hi = np.zeros(len(first))
    lo = np.zeros(len(first))
    one = counts == 1
    hi[one] = values[first[one]] + 0.0  # -0.0 becomes 0.0, as adding it to a zero does
    two = np.flatnonzero(counts == 2)
    if len(two):  # two-sum: (a + b, its exact rounding error) is already canonical
        s, err = _two_sum(values[first[two]] + 0.0, values[first[two] + 1])
        hi[two] = s
        lo[two] = np.where(np.isfinite(s), err, 0.0) + 0.0
    more: dict[int, list[float]] = {}
    many = np.flatnonzero((counts > 2) & (counts <= _CASCADE_MAX))
    slow = np.flatnonzero(counts > _CASCADE_MAX)
    if len(many):
        h, lo_, exact = _cascade(values, first[many], counts[many])
        hi[many], lo[many] = h, lo_
        slow = np.concatenate([slow, many[~exact]])
    if len(slow):
        xs = values.tolist()
        finite = np.logical_and.reduceat(np.isfinite(values), first)[slow].tolist()
        for g, a, b, ok in zip(slow.tolist(), first[slow].tolist(), stop[slow].tolist(), finite):
            terms = canonical_expansion(xs[a:b]) if ok else [sum(xs[a:b])]  # inf / nan: no exact remainder
            hi[g] = terms[0] if terms else 0.0
            lo[g] = terms[1] if len(terms) > 1 else 0.0
            if len(terms) > 2:
                more[g] = terms[2:]
    return hi, lo, more


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """a + b rounded, and its exact rounding error (Knuth's TwoSum)."""
    s = a + b
    bv = s - a
    return s, (a - (s - bv)) + (b - bv)


def _cascade(values: np.ndarray, first: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per run, (hi, lo) of its exact sum, and whether they are exact: the running sum p and
    the sum sigma of p's exact rounding errors, both by TwoSum; when sigma's own additions
    were exact, the sum is exactly p + sigma and TwoSum(p, sigma) is its canonical pair."""
    p = values[first] + 0.0
    sigma = np.zeros(len(first))
    exact = np.ones(len(first), dtype=bool)
    for k in range(1, int(counts.max())):
        active = np.flatnonzero(counts > k)
        p_k, err = _two_sum(p[active], values[first[active] + k])
        sigma_k, lost = _two_sum(sigma[active], err)
        p[active], sigma[active] = p_k, sigma_k
        exact[active] &= lost == 0
    hi, lo = _two_sum(p, sigma)
    return hi, lo + 0.0, exact & np.isfinite(hi)


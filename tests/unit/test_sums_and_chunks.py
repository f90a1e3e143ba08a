"""Pure parts of the write path: exact sums, and history cut into whole entities (rebuild-online)."""

from __future__ import annotations

import math
import random

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.offline.chunks import chunks_of_whole_entities, entity_starts
from featurestore.online.packed import canonical_expansion
from featurestore.online.sums import exact_sums

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


def _reference(xs: list[float]) -> tuple[float, float, list[float]]:
    """The canonical expansion, term by term, with Python's correctly rounded fsum."""
    terms = canonical_expansion(list(xs))
    return (terms[0] if terms else 0.0), (terms[1] if len(terms) > 1 else 0.0), terms[2:]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(finite, min_size=1, max_size=80), min_size=1, max_size=30))
def test_exact_sums_are_the_canonical_expansion(runs: list[list[float]]) -> None:
    values = np.array([x for run in runs for x in run])
    counts = np.array([len(run) for run in runs])
    first = np.cumsum(counts) - counts
    hi, lo, more = exact_sums(values, first, first + counts)
    for g, run in enumerate(runs):
        want_hi, want_lo, want_more = _reference(run)
        if want_hi == 0.0:
            want_hi = 0.0  # the script keeps zeros positive
        assert (hi[g], lo[g], more.get(g, [])) == (want_hi + 0.0, want_lo + 0.0, want_more), run


def test_exact_sums_of_decimal_amounts_need_the_cascade_and_the_fallback() -> None:
    """Amounts with two decimals (the usual case) and mixed magnitudes, runs of every length."""
    rnd = random.Random(3)
    counts = np.array([rnd.choice([1, 2, 3, 5, 8, 20, 64, 65, 200]) for _ in range(3000)])
    values = np.array([round(rnd.lognormvariate(3.5, 1.0), 2) * rnd.choice([1, -1, 1e-9, 1e9])
                       for _ in range(int(counts.sum()))])
    first = np.cumsum(counts) - counts
    hi, lo, more = exact_sums(values, first, first + counts)
    xs = values.tolist()
    for g, (a, n) in enumerate(zip(first.tolist(), counts.tolist())):
        assert (hi[g], lo[g], more.get(g, [])) == _reference(xs[a : a + n])
        assert math.fsum(xs[a : a + n]) == hi[g]
    assert more, "some sums need more than two terms"


def test_exact_sums_of_non_finite_values_do_not_raise() -> None:
    values = np.array([1.0, math.inf, 2.0, 1e308, 1e308, 1e308, math.nan, 1.0, 1.0])
    first, stop = np.array([0, 3, 6]), np.array([3, 6, 9])
    hi, lo, _ = exact_sums(values, first, stop)
    assert hi[0] == math.inf and math.isinf(hi[1]) and math.isnan(hi[2])


def test_entities_are_cut_only_between_their_rows() -> None:
    keys = [1, 1, 2, 2, 2, 3, 4, 4, 4, 4, 5]
    table = pa.table({"k": keys, "s": [str(k) for k in keys], "v": list(range(len(keys)))})
    assert entity_starts(table, ["k", "s"]).tolist() == [0, 2, 5, 6, 10]
    batches = table.to_batches(max_chunksize=3)
    chunks = list(chunks_of_whole_entities(iter(batches), ["k"]))
    assert sum(c.num_rows for c in chunks) == len(keys)
    seen: set[int] = set()
    for chunk in chunks:
        ks = set(chunk["k"].to_pylist())
        assert not ks & seen, "an entity split over two chunks"
        seen |= ks

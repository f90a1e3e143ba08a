"""Packed tile rows: the vectorised and the plain-Python merge of a window agree exactly."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from featurestore.online.packed import columns, decode_rows, packed_stats, row_width
from featurestore.online.reader import _PackedSet
from featurestore.plan import AggregationPlan


def _blob(rng: random.Random, stats: str, tiles: int) -> bytes:
    rows = []
    for idx in sorted(rng.sample(range(-5, 40), tiles)):
        row = [float(idx)]
        for stat in stats:
            if stat == "c":
                row.append(float(rng.randint(1, 9)))
            elif stat in "sq":
                hi = rng.uniform(-1e6, 1e6)
                row += [hi, math.ulp(hi) * rng.choice([0.0, 0.25, -0.25])]
            else:
                row.append(rng.uniform(-100, 100))
        rows.append(row)
    return np.asarray(rows, dtype="<f8").tobytes()


def _plans() -> list[AggregationPlan]:
    return [AggregationPlan(name=f"{f}_{w}", column="x", function=f, window_ms=w * 1000, tile_ms=1000, dtype="float", k=None)
            for f in ("count", "sum", "mean", "min", "max", "variance", "stddev") for w in (5, 20)]


@pytest.mark.parametrize("seed", range(20))
def test_small_and_vectorised_merges_agree(seed: int) -> None:
    rng = random.Random(seed)
    stats = packed_stats("csqmM")
    pset = _PackedSet(0, stats, [(i, p, 30 - (p.window_ms or 0) // 1000 + 1, 30) for i, p in enumerate(_plans())])
    blobs = [_blob(rng, stats, rng.randint(0, 12)) for _ in range(6)]
    overflows = {2: {(12, "s"): [1e-300, 1e-310], (3, "q"): [-2e-290]}}
    small = pset.values(blobs, overflows)  # 6 entities: the plain-Python path
    many = pset.values(blobs * 3, {e + 6 * k: raw for e, raw in overflows.items() for k in range(3)})  # 18: numpy
    for pos, values in small.items():
        assert many[pos] == values * 3, _plans()[pos].name


def test_rows_decode_by_column() -> None:
    stats = packed_stats(["M", "s", "c"])
    assert stats == "csM" and row_width(stats) == 5 and columns(stats) == {"c": 1, "s": 2, "M": 4}
    rows = decode_rows(np.asarray([[3, 2, 1.5, 0, 9], [4, 1, 2.5, 0, 7]], dtype="<f8").tobytes(), stats)
    assert rows[:, 0].tolist() == [3, 4] and rows[1, 4] == 7

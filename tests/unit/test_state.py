"""The online state fold (pure): the same events give the same bytes however they are batched,
replays change nothing, and count_distinct is exact up to its keep size."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from featurestore.compile import compile_repo
from featurestore.online.fold import fold_states, group_rows, set_bounds, sort_order
from featurestore.online.layout import tile_sets
from featurestore.online.state import DISTINCT_KEEP, StateCodec, decode_state, distinct_count, encode_state, value_hash

ROOT = Path(__file__).resolve().parents[2]
VIEW = compile_repo(ROOT / "feature_defs").view("user_payments")
SETS = tile_sets(VIEW)
CODEC = StateCodec.of(SETS)
BOUNDS = set_bounds(VIEW, SETS, 300_000)


def _events(n: int, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    t0 = 1_700_000_000_000
    out = []
    for i in range(n):  # ~3 days, out of order within a few minutes, a few users
        amount = round(rnd.uniform(0.1, 2000), 2)
        out.append({"user": rnd.randint(1, 4), "ts": t0 + i * 97_000 - rnd.randint(0, 240_000), "offset": i,
                    "amount": amount, "amount_eur": round(amount * 0.92, 2), "is_large": amount > 1000,
                    "merchant_id": f"m{rnd.randint(1, 30)}", "country": rnd.choice(["FR", "DE", "GB"]),
                    "last_merchant": f"m{rnd.randint(1, 30)}", "last_country": "FR"})
    return out


def _fold_batches(batches: list[list[dict[str, Any]]]) -> dict[tuple[Any, ...], bytes]:
    """Fold the batches one after another (as a processor would), states kept as bytes."""
    stored: dict[tuple[Any, ...], bytes] = {}
    for batch in batches:
        keys = [(e["user"],) for e in batch]
        ts = np.array([e["ts"] for e in batch], dtype=np.int64)
        off = np.array([e["offset"] for e in batch], dtype=np.int64)
        part = np.zeros(len(batch), dtype=np.int64)
        values = {name: [e[name] for e in batch] for name, _ in VIEW.history_columns}
        groups = group_rows(keys, ts, part, off, np.arange(len(batch)))
        folded = fold_states(VIEW, SETS, BOUNDS, CODEC, groups, [stored.get(k) for k in groups.keys], values)
        for g, state in zip(folded.groups, folded.states):
            stored[groups.keys[g]] = state
    return stored


def test_the_same_events_give_the_same_bytes_however_batched() -> None:
    events = _events(600, seed=3)
    whole = _fold_batches([events])
    for seed in range(4):
        rnd = random.Random(seed)
        cuts = sorted(rnd.sample(range(1, len(events)), 7))
        batches = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)])]
        assert _fold_batches(batches) == whole


def test_a_replayed_batch_changes_nothing() -> None:
    events = _events(300, seed=5)
    once = _fold_batches([events[:200], events[200:]])
    assert _fold_batches([events[:200], events[100:250], events[:300]]) == once


def test_states_round_trip() -> None:
    for blob in _fold_batches([_events(200, seed=7)]).values():
        assert encode_state(decode_state(blob, CODEC), CODEC) == blob


def test_count_distinct_is_exact_up_to_its_keep_size_then_estimated() -> None:
    hashes = [value_hash(f"m{i}") for i in range(5000)]
    signed = [h - 2**64 if h >= 2**63 else h for h in hashes]  # stored as int64 bits
    assert distinct_count([signed[:700], signed[300:900]]) == 900
    tiles = [sorted(signed[i : i + 1000], key=lambda h: h % 2**64)[:DISTINCT_KEEP] for i in range(0, 5000, 1000)]
    estimate = distinct_count(tiles)
    assert abs(estimate - 5000) / 5000 < 4 / (DISTINCT_KEEP - 2) ** 0.5  # within 4 standard errors


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(-3, 3), st.integers(-(2**40), 2**40), st.integers(0, 2**30)),
                max_size=60),
       st.sampled_from([2, 3, 4]), st.booleans())
def test_sort_order_is_lexsort(rows: list[tuple[int, int, int, int]], n_keys: int, small_major: bool) -> None:
    """The fold's sorts give np.lexsort's order (stable), whether its two most significant
    keys fit in one (a small major key) or not."""
    hashes = np.array([r[0] for r in rows], dtype=np.uint64)
    columns = [np.array([r[i] for r in rows], dtype=np.int64) for i in (1, 2, 3)]
    if small_major:
        columns[2] %= 2**16
    keys = (hashes, *columns)[-n_keys:]
    assert sort_order(*keys).tolist() == np.lexsort(keys).tolist()

"""Which variant of a rollout service serves an entity: the one rule, used online and offline.

An entity's bucket is a hash of the service name and its join key values, a number in
[0, 1): deterministic and the same in every process. Variants other than the control take
consecutive ranges of buckets from 0, in name order, each as wide as its share; the control
takes the rest. So an entity keeps its variant, and raising a share only moves entities
from the control to that variant.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from featurestore.plan.models import ServicePlan


def bucket(service: str, key: Sequence[tuple[str, Any]]) -> float:
    """The entity's place in [0, 1) for `service`, from its (join key, value) pairs."""
    text = service + "\0" + "\0".join(f"{k}={v}" for k, v in key)
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def variant_of(service: ServicePlan, point: float) -> str:
    """The variant serving the bucket `point`."""
    edge = 0.0
    for name in sorted(service.split):
        edge += service.split[name]
        if point < edge:
            return name
    assert service.control is not None
    return service.control


def rollout_keys(join_keys: Sequence[str], row: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The (join key, value) pairs of a row that decide its variant (keys it lacks are left out)."""
    return [(k, row[k]) for k in join_keys if k in row]


def assign(service: ServicePlan, join_keys: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The variant of each row."""
    return [variant_of(service, bucket(service.name, rollout_keys(join_keys, row))) for row in rows]


def rollout_join_keys(plan: Any, service: ServicePlan) -> list[str]:
    """The join keys that decide a rollout service's variants: those of every view its
    variants read, sorted."""
    keys: set[str] = set()
    for ref in service.all_refs:
        try:
            keys.update(k.name for k in plan.resolve_view(ref.partition(":")[0]).join_keys)
        except KeyError:
            continue  # a request-time view: no join keys
    return sorted(keys)


def rollout_problem(variants: dict[str, list[str]], split: dict[str, Any]) -> tuple[str, str] | None:
    """What is wrong with a rollout's variants and split, and its fix (None: nothing)."""
    if len(variants) < 2:
        return "a rollout needs at least two variants", 'e.g. variants={"control": [...], "treatment": [...]}'
    unknown = sorted(set(split) - set(variants))
    if unknown:
        return f"split names unknown variant(s) {', '.join(map(str, unknown))}", f"use variants {', '.join(variants)}"
    rest = [v for v in variants if v not in split]
    if len(rest) != 1:
        return ("exactly one variant must be left out of split (the control, which serves the rest)",
                f"e.g. split={{{', '.join(repr(v) + ': 0.1' for v in list(variants)[1:])}}}")
    shares = list(split.values())
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1 for x in shares) or sum(shares) > 1:
        return f"split shares must be numbers from 0 to 1 that add up to at most 1, got {split}", 'e.g. split={"treatment": 0.1}'
    names = {v: [r.partition(":")[2] for r in refs] for v, refs in variants.items()}
    first = next(iter(names))
    for v, feats in names.items():
        if feats != names[first]:
            return (f"variant '{v}' serves features {feats} but '{first}' serves {names[first]}",
                    "every variant lists the same feature names in the same order (from different views or versions)")
    return None

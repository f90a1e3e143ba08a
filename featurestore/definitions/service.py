"""FeatureService: a named bundle of features that a model reads together."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from featurestore.definitions.tags import frozen_tags, hash_of_fields, normalised

GUARD_METRICS = ("null_rate", "mismatch_rate", "staleness_p99")
"""What a rollout guard watches in the values a non-control variant serves."""


@dataclass(frozen=True)
class Guard:
    """A limit on what the non-control variants of a rollout serve, checked by the feature server.

    `metric`: `null_rate` (share of values that are not present), `mismatch_rate` (share of
    rows whose value differs from what the control would have served: the control is read
    too for those rows) or `staleness_p99` (seconds since the newest event, 99th percentile).
    `feature`: one feature name of the service (default: every feature). Crossed over a
    whole `guard_window` of the service, the split goes back to the control."""

    metric: str
    max: float
    feature: str | None = None


@dataclass(frozen=True)
class FeatureService:
    """The features one model reads, by name, so clients ask for `service=...` instead of a list.

    `features` holds "view:feature" references (`view@2:feature` pins a version), or
    FeatureView objects meaning every feature of that view. Access control covers the views
    behind the references.

    A rollout: `variants={"control": [...], "treatment": [...]}` (instead of `features`;
    every variant lists the same feature names) and `split={"treatment": 0.1}`: the share of
    entities each variant serves, the variant left out taking the rest. An entity keeps its
    variant (a hash of its join keys); responses say which variant served each row.
    `guards=[Guard("null_rate", max=0.05)]`: crossed over a whole `guard_window` (default one
    minute) of traffic, the feature server sets every share back to 0 (a new registry version
    says why).
    `log_sample_rate=0.1`: the SDK and the server log that share of the reads of this service
    (keys, values, statuses, variants) to the served-value topic (`featurestore served-log`).
    """

    name: str
    features: Sequence[Any] = ()
    owner: str = ""
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    variants: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    split: Mapping[str, float] = field(default_factory=dict)
    guards: Sequence[Guard] = ()
    guard_window: timedelta = timedelta(minutes=1)
    log_sample_rate: float = 0.0

    def __post_init__(self) -> None:
        normalised(self, features=tuple(self.features), tags=frozen_tags(self.tags),
                   variants=MappingProxyType({k: tuple(v) for k, v in (self.variants or {}).items()}),
                   split=MappingProxyType(dict(self.split or {})), guards=tuple(self.guards))

    __hash__ = hash_of_fields

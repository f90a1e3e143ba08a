"""FeatureService: a named bundle of features that a model reads together."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from featurestore.definitions.tags import frozen_tags, tag_items


@dataclass(frozen=True, init=False)
class FeatureService:
    """The features one model reads, by name, so clients ask for `service=...` instead of a list.

    `features` holds "view:feature" references (`view@2:feature` pins a version), or
    FeatureView objects meaning every feature of that view. Access control covers the views
    behind the references.

    A rollout: `variants={"control": [...], "treatment": [...]}` (instead of `features`;
    every variant lists the same feature names) and `split={"treatment": 0.1}`: the share of
    entities each variant serves, the variant left out taking the rest. An entity keeps its
    variant (a hash of its join keys); responses say which variant served each row.
    """

    name: str
    features: tuple[Any, ...]
    owner: str
    description: str
    tags: Mapping[str, str] = field(default_factory=dict)
    variants: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    split: Mapping[str, float] = field(default_factory=dict)

    def __init__(
        self,
        name: str,
        features: Sequence[Any] = (),
        owner: str = "",
        description: str = "",
        tags: Mapping[str, str] | None = None,
        variants: Mapping[str, Sequence[Any]] | None = None,
        split: Mapping[str, float] | None = None,
    ) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "features", tuple(features))
        object.__setattr__(self, "variants", MappingProxyType({k: tuple(v) for k, v in (variants or {}).items()}))
        object.__setattr__(self, "split", MappingProxyType(dict(split or {})))
        object.__setattr__(self, "owner", owner)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "tags", frozen_tags(tags))

    def __hash__(self) -> int:
        return hash((self.name, self.features, self.owner, self.description, tag_items(self.tags),
                     tuple(self.variants.items()), tuple(self.split.items())))

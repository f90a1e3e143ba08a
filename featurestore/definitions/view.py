"""FeatureView: features of one or more entities computed from one source."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from featurestore.definitions.entity import Entity
from featurestore.definitions.source import KafkaSource
from featurestore.definitions.tags import frozen_tags, tag_items


@dataclass(frozen=True, init=False)
class FeatureView:
    """Features of `entities` computed from the events of `source`.

    `ttl`: a value whose newest event is older than this reads as missing, online and
    offline (None: never expires).
    `allowed_lateness`: how far behind its partition's newest event time an event may be
    and still count; later events go to the dead-letter topic with reason `late` (and
    into the history, flagged, for "corrected" training sets). None: no limit.
    """

    name: str
    entities: tuple[Entity, ...]
    source: KafkaSource
    features: tuple[Any, ...]
    ttl: timedelta | None
    owner: str
    description: str
    tags: Mapping[str, str] = field(default_factory=dict)
    allowed_lateness: timedelta | None = None
    version: int = 1
    serving: bool = False
    freshness_slo: timedelta | None = None

    def __init__(
        self,
        name: str,
        entities: Sequence[Entity],
        source: KafkaSource,
        features: Sequence[Any],
        ttl: timedelta | None = None,
        owner: str = "",
        description: str = "",
        tags: Mapping[str, str] | None = None,
        allowed_lateness: timedelta | None = None,
        version: int = 1,
        serving: bool = False,
        freshness_slo: timedelta | None = None,
    ) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "entities", tuple(entities))
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "features", tuple(features))
        object.__setattr__(self, "ttl", ttl)
        object.__setattr__(self, "owner", owner)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "tags", frozen_tags(tags))
        object.__setattr__(self, "allowed_lateness", allowed_lateness)
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "serving", serving)
        object.__setattr__(self, "freshness_slo", freshness_slo)

    def __hash__(self) -> int:
        return hash((self.name, self.entities, self.source, self.features, self.ttl, self.owner, self.description,
                     tag_items(self.tags), self.allowed_lateness, self.version, self.serving,
                     self.freshness_slo))

"""FeatureView: features of one or more entities computed from one source."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from featurestore.definitions.entity import Entity
from featurestore.definitions.source import KafkaSource
from featurestore.definitions.tags import frozen_tags, hash_of_fields, normalised


@dataclass(frozen=True)
class FeatureView:
    """Features of `entities` computed from the events of `source`.

    `ttl`: a value whose newest event is older than this reads as missing, online and
    offline (None: never expires).
    `allowed_lateness`: how far behind its partition's newest event time an event may be
    and still count; later events go to the dead-letter topic with reason `late` (and
    into the history, flagged, for "corrected" training sets). None: no limit.
    """

    name: str
    entities: Sequence[Entity]
    source: KafkaSource
    features: Sequence[Any]
    ttl: timedelta | None = None
    owner: str = ""
    description: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    allowed_lateness: timedelta | None = None
    version: int = 1
    serving: bool = False
    freshness_slo: timedelta | None = None

    def __post_init__(self) -> None:
        normalised(self, entities=tuple(self.entities), features=tuple(self.features), tags=frozen_tags(self.tags))

    __hash__ = hash_of_fields

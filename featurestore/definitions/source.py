"""KafkaSource: a topic of JSON events, their pydantic schema and event-time field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from featurestore.definitions.tags import normalised


@dataclass(frozen=True)
class KafkaSource:
    """A Kafka topic whose JSON events follow `schema` (a pydantic model).

    `timestamp_field` names the event-time field (a timezone-aware datetime).
    Records that cannot be decoded go to `dead_letter_topic` (default: `<topic>.dlq`).
    """

    name: str
    topic: str
    schema: Any
    timestamp_field: str
    dead_letter_topic: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        normalised(self, dead_letter_topic=self.dead_letter_topic or f"{self.topic}.dlq")

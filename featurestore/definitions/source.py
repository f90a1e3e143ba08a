"""KafkaSource: a topic of JSON events, their pydantic schema and event-time field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, init=False)
class KafkaSource:
    """A Kafka topic whose JSON events follow `schema` (a pydantic model).

    `timestamp_field` names the event-time field (a timezone-aware datetime).
    Records that cannot be decoded go to `dead_letter_topic` (default: `<topic>.dlq`).
    """

    name: str
    topic: str
    schema: Any
    timestamp_field: str
    dead_letter_topic: str
    description: str

    def __init__(
        self,
        name: str,
        topic: str,
        schema: Any,
        timestamp_field: str,
        dead_letter_topic: str | None = None,
        description: str = "",
    ) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "topic", topic)
        object.__setattr__(self, "schema", schema)
        object.__setattr__(self, "timestamp_field", timestamp_field)
        dlq = dead_letter_topic if dead_letter_topic is not None else f"{topic}.dlq"
        object.__setattr__(self, "dead_letter_topic", dlq)
        object.__setattr__(self, "description", description)

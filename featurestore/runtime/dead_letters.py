"""Dead-letter record headers: written by the processor, read by tools and tests."""

from __future__ import annotations

from typing import Any

from featurestore.runtime.decode import DeadLetter

ERROR = "error"
DETAIL = "error.detail"
SOURCE_TOPIC = "source.topic"
SOURCE_PARTITION = "source.partition"
SOURCE_OFFSET = "source.offset"


def dead_letter_headers(d: DeadLetter) -> list[tuple[str, str | bytes | None]]:
    """Headers that say why a record was rejected and where it came from."""
    return [
        (ERROR, d.reason.encode()),
        (DETAIL, d.detail.encode()),
        (SOURCE_TOPIC, d.topic.encode()),
        (SOURCE_PARTITION, str(d.partition).encode()),
        (SOURCE_OFFSET, str(d.offset).encode()),
    ]


def read_headers(raw: Any) -> dict[str, str]:
    """A Kafka message's headers (list of pairs or None) as a dict of strings."""
    pairs = raw.items() if isinstance(raw, dict) else (raw or [])
    out: dict[str, str] = {}
    for name, value in pairs:
        out[str(name)] = value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")
    return out

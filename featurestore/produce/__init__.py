"""Getting events into a source's topic: from files or generated, checked first by the
processor's own decoding rules."""

from featurestore.produce.fake import FakeEvents
from featurestore.produce.sender import (
    CheckReport,
    EventChecker,
    Invalid,
    KafkaRecord,
    default_key_fields,
    paced,
    produce_records,
)

__all__ = ["CheckReport", "EventChecker", "FakeEvents", "Invalid", "KafkaRecord", "default_key_fields", "paced",
           "produce_records"]

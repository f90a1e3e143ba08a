"""Send events to a source's topic: checked by the processor's own decoder first, keyed by
entity, with delivery confirmed before returning."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import orjson
from confluent_kafka import Producer

from featurestore.config import Settings
from featurestore.errors import FeatureRequestError, StoreUnavailable, one_of
from featurestore.plan import Plan, SourcePlan
from featurestore.runtime.decode import Decoder, RawRecord

_CHECK_BATCH = 5_000
_PROGRESS_EVERY = 5_000


class KafkaRecord(NamedTuple):
    """A record to produce."""

    key: bytes | None
    value: bytes


class _HasKeyValue(Protocol):
    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes: ...


@dataclass(frozen=True)
class Invalid:
    """An event the processor would dead-letter, and why."""

    position: int
    reason: str
    detail: str


@dataclass
class CheckReport:
    """What checking a stream of events found."""

    checked: int = 0
    invalid: list[Invalid] = field(default_factory=list)

    @property
    def positions(self) -> set[int]:
        return {i.position for i in self.invalid}


def default_key_fields(plan: Plan, source: SourcePlan) -> list[str]:
    """The join keys of the largest view (most features) reading the source: all of that
    entity's events then share a partition (empty when no view reads it)."""
    views = [v for v in plan.views if v.source == source.name]
    if not views:
        return []
    largest = max(views, key=lambda v: len(v.feature_names))
    return [k.name for k in largest.join_keys]


class EventChecker:
    """The processor's decoding rules (schema, join keys, event time, size, transforms) applied
    to events before they are sent."""

    def __init__(self, plan: Plan, source: SourcePlan, settings: Settings, key_fields: list[str]) -> None:
        self.source = source
        self.decoder = Decoder(plan, source, settings.paths.repo, settings.processor.max_future_skew_ms,
                               settings.processor.max_record_bytes)
        unknown = [f for f in key_fields if f not in source.fields]
        if unknown:
            raise FeatureRequestError(f"--key {unknown[0]}: not a field of {source.name}'s events: "
                                      f"{one_of(unknown[0], source.fields)}")
        self.key_fields = key_fields

    def check(self, values: Iterable[bytes], on_progress: Callable[[int], None] | None = None) -> CheckReport:
        """Check every value; the report lists the invalid ones by position (0-based)."""
        report = CheckReport()
        batch: list[RawRecord] = []
        for i, value in enumerate(values):
            batch.append(RawRecord(0, i, None, value))
            if len(batch) >= _CHECK_BATCH:
                self._check_batch(batch, report, on_progress)
                batch = []
        if batch:
            self._check_batch(batch, report, on_progress)
        return report

    def _check_batch(self, batch: list[RawRecord], report: CheckReport, on_progress: Callable[[int], None] | None) -> None:
        _, dead = self.decoder.decode(batch, int(time.time() * 1000))
        report.invalid.extend(Invalid(d.offset, d.reason, d.detail) for d in dead if not d.kept)
        report.checked += len(batch)
        if on_progress:
            on_progress(len(batch))

    def normalized(self, value: bytes) -> bytes:
        """The event as the model writes it (for CSV rows, whose values arrive as strings)."""
        return self.decoder.model.model_validate_json(value).model_dump_json(by_alias=True).encode()

    def key(self, value: bytes) -> bytes | None:
        """The Kafka key of an event: its key fields' values joined by '|' (None without key fields)."""
        if not self.key_fields:
            return None
        event = orjson.loads(value)
        return "|".join(str(event.get(f)) for f in self.key_fields).encode()


def produce_records(
    producer_conf: dict[str, Any],
    topic: str,
    records: Iterable[_HasKeyValue],
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Produce the records in order and wait until all are acknowledged; returns how many
    (raises RuntimeError when any was not delivered)."""
    producer = Producer(producer_conf)
    errors: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    sent = 0
    for sent, rec in enumerate(records, 1):
        while True:
            try:
                producer.produce(topic, key=rec.key, value=rec.value, on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        if sent % _PROGRESS_EVERY == 0:
            producer.poll(0)
            if on_progress:
                on_progress(_PROGRESS_EVERY)
    left = producer.flush(60)
    if on_progress:
        on_progress(sent % _PROGRESS_EVERY)
    if left or errors:
        raise StoreUnavailable(f"{left} records not delivered; errors: {errors[:3]}")
    return sent


def paced(records: Iterable[KafkaRecord], rate: float) -> Iterator[KafkaRecord]:
    """The records at most `rate` per second (a live stream); each is taken from `records`
    only when its turn comes, so a lazy generator can stamp it with the time it is sent."""
    items = iter(records)
    started = time.monotonic()
    for i in itertools.count():
        wait = started + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        rec = next(items, None)
        if rec is None:
            return
        yield rec

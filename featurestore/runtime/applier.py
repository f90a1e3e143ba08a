"""What every stream engine does with a batch of records: decode, write Redis, buffer the
history, dead-letter the bad ones; and the checkpoint of those parts (`checkpointer`).
Engines (confluent-kafka, Faust) only consume and commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import redis
from confluent_kafka import Producer

from featurestore import metrics
from featurestore.collector import collector_paused
from featurestore.config import Settings
from featurestore.errors import StoreUnavailable, unreachable
from featurestore.faults import fault_point
from featurestore.offline.history import HistoryWriter
from featurestore.online.writer import OnlineWriter
from featurestore.plan import Plan
from featurestore.records import ViewRows
from featurestore.runtime.checkpoint import Checkpointer
from featurestore.runtime.dead_letters import DeadLetterSink, LocalDeadLetters
from featurestore.runtime.decode import DeadLetter, Decoder, RawBatch, RawRecord
from featurestore.runtime.kafka import ensure_topics, producer_config
from featurestore.runtime.watermarks import Watermarks

log = logging.getLogger(__name__)
T = TypeVar("T")
P = TypeVar("P")


class Retryable(Exception):
    """A transient failure of a write that is retried."""


@dataclass
class ProcessorStats:
    """Counters of one processor run."""

    records: int = 0
    events: int = 0
    """Records decoded into events (late ones included: they go to the history, flagged)."""
    dead_letters: dict[str, int] = field(default_factory=dict)
    batches: int = 0
    entity_writes: int = 0
    history_rows: int = 0
    checkpoints: int = 0
    repairs: int = 0
    """Times Redis was found to have lost applied events, repaired from the history."""
    retries: int = 0
    last_error: str = ""
    started_at: float = field(default_factory=time.monotonic)
    first_record_at: float | None = None
    """time.monotonic() when the first record arrived (after the group join): throughput's start."""
    caught_up_at: float | None = None
    """time.monotonic() when --until-caught-up found everything processed and durable: throughput's end."""

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letters.values())


class BatchApplier:
    """Applies batches of raw records of a plan's sources to Redis, the history and the dead-letter topics."""

    def __init__(self, plan: Plan, settings: Settings, stop: threading.Event | None = None,
                 background_online: bool = False) -> None:
        """`background_online`: states are sent to Redis while the next batch is decoded (a
        checkpoint waits for them)."""
        self.plan = plan
        self.settings = settings
        skew_ms = settings.processor.max_future_skew_ms
        self.decoders = {
            s.topic: Decoder(plan, s, settings.paths.repo, skew_ms, settings.processor.max_record_bytes)
            for s in plan.sources if _has_views(plan, s.name)
        }
        self.dead_letter_topics = {s.topic: s.dead_letter_topic for s in plan.sources}
        self.watermarks = {s.topic: Watermarks(plan, s, settings.paths.offline) for s in plan.sources}
        self.redis = settings.redis.client(socket_timeout=30, socket_connect_timeout=10)
        self.online = OnlineWriter(self.redis, settings.project, plan, skew_ms,
                                   cache_bytes=settings.processor.online_cache_mb * 1024 * 1024, background=background_online)
        self.history = HistoryWriter(settings.paths.offline, plan)
        self.stats = ProcessorStats()
        metrics.set_freshness_objectives({v.name: v.freshness_slo_ms / 1000 for v in plan.views if v.freshness_slo_ms})
        self.stop_requested = stop or threading.Event()
        self.dead_letters: DeadLetterSink | None = None

    @property
    def topics(self) -> list[str]:
        """Source topics that feed at least one view."""
        return list(self.decoders)

    def open(self) -> None:
        """Check Redis, create the dead-letter topics, start the dead-letter producer."""
        check_redis(self.settings, self.redis)
        ensure_topics(self.settings, self.dead_letter_topics.values())
        producer = Producer(producer_config(self.settings), logger=log)
        local = LocalDeadLetters(self.settings.paths.offline)
        self.dead_letters = DeadLetterSink(producer, self.dead_letter_topics, local, self.settings.processor.max_dead_letter_bytes)

    def close(self) -> None:
        try:
            self.online.close()
        finally:
            if self.dead_letters is not None:
                self.dead_letters.flush(30)

    @collector_paused
    def decode(self, by_topic: Mapping[str, Sequence[RawRecord] | RawBatch]) -> tuple[list[ViewRows], list[DeadLetter]]:
        """Decode records per topic, judging lateness against each partition's watermark."""
        if self.stats.first_record_at is None:
            self.stats.first_record_at = time.monotonic()
        now_ms = int(time.time() * 1000)
        batches: list[ViewRows] = []
        dead: list[DeadLetter] = []
        for topic, given in by_topic.items():
            records = RawBatch.of(given)
            marks = self.watermarks[topic]
            if marks.needed:
                for partition, first in records.first_offsets().items():
                    marks.ensure(partition, first)
            rows, bad = self.decoders[topic].decode(records, now_ms, marks.newest if marks.needed else None)
            batches.extend(rows)
            dead.extend(bad)
            self.stats.records += len(records)
            metrics.RECORDS.labels(topic).inc(len(records))
            self.stats.events += len(records) - sum(1 for d in bad if not d.kept)  # late ones are kept, flagged
        return batches, dead

    def write(self, batches: list[ViewRows], dead: list[DeadLetter]) -> None:
        """Apply decoded rows online (retrying), buffer them for the history, produce dead letters."""
        if batches:
            applied = [metrics.BatchObservation(rows.view, _on_time(rows)) for rows in batches]

            def visible() -> None:
                metrics.observe_online_batch(applied, time.time())

            self.stats.entity_writes += self.with_retry(f"Redis write to {self.settings.redis.display}",
                                                        lambda: self.online.write(batches, visible))
            fault_point("after_online_write")
            for rows in batches:
                self.history.append(rows)
        for d in dead:
            self.stats.dead_letters[d.reason] = self.stats.dead_letters.get(d.reason, 0) + 1
            metrics.DEAD_LETTERS.labels(d.topic, d.reason).inc()
            assert self.dead_letters is not None, "call open() first"
            self.dead_letters.send(d)
        self.stats.batches += 1

    def checkpointer(self, commit: Callable[[P], None], interval_s: float) -> Checkpointer[P]:
        """The checkpoint of this applier's online states, history and dead letters, every
        write retried; `commit` moves the engine's position (offsets, acknowledgements)."""
        return Checkpointer(self.history, commit, self.stats, online=self.online, dead_letters=self._flush_dead_letters,
                            retry=self.with_retry, interval_s=interval_s, history_place=str(self.settings.paths.offline),
                            redis_place=self.settings.redis.display)

    def forget(self, topic: str, partition: int) -> None:
        """A partition moved away: its watermark is recovered again if it comes back, and its
        cached online states are read back from Redis (its next owner may write newer ones)."""
        if topic in self.watermarks:
            self.watermarks[topic].forget(partition)
        self.online.forget(topic, partition)

    def with_retry(self, what: str, action: Callable[[], T]) -> T:
        """Run an idempotent write until it succeeds, backing off; give up only when asked to stop."""
        delay = 0.1
        while True:
            try:
                return action()
            except (redis.RedisError, OSError, Retryable) as exc:
                self.stats.retries += 1
                metrics.RETRIES.labels(what.split(" ")[0]).inc()
                self.stats.last_error = f"{what}: {exc}"
                if self.stop_requested.is_set():
                    raise StoreUnavailable(
                        f"{what} failed ({exc}) and the processor was asked to stop; "
                        "the records since the last commit will be processed again on restart"
                    ) from None
                log.warning("%s failed (%s); retrying in %.1f s, offsets not advanced", what, exc, delay)
                self.stop_requested.wait(delay)  # backoff; a stop request ends the wait early
                delay = min(delay * 2, self.settings.processor.max_retry_backoff_s)

    def _flush_dead_letters(self) -> None:
        if self.dead_letters is None:  # not opened: nothing produced
            return
        remaining = self.dead_letters.flush(30)
        if remaining:
            raise Retryable(f"{remaining} dead letters not yet acknowledged by the broker")


def check_redis(settings: Settings, client: redis.Redis[bytes] | None = None) -> None:
    """Raise StoreUnavailable with a one-line reason if Redis does not answer."""
    try:
        (client or settings.redis.client(socket_connect_timeout=5)).ping()
    except redis.RedisError as exc:
        raise unreachable("Redis", settings.redis.display, exc) from None


def _on_time(rows: ViewRows) -> list[int]:
    """Event times of the rows applied online (late ones are not)."""
    return [t for t, late in zip(rows.ts, rows.late) if not late] if rows.late else rows.ts


def _has_views(plan: Plan, source: str) -> bool:
    return any(v.source == source for v in plan.views)

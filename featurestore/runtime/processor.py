"""The stream processor: consume a batch, decode, write Redis, buffer Parquet, checkpoint.

Checkpoint order (one place): Parquet history committed per partition -> dead letters
flushed to Kafka -> consumer offsets committed. Online writes happen per batch, before
the checkpoint that covers them. A crash anywhere replays the uncommitted records, and
both stores ignore what they already hold (per-entity applied offsets in Redis, per-
partition committed offsets in the history), so every event takes effect exactly once.
Dead letters are produced at least once (their headers identify the source record).

When Redis or the offline folder fails, the processor retries the same work with
exponential backoff, reports it (log + `stats.retries`), and never commits offsets past
data that is not durable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast

import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from featurestore import metrics
from featurestore.config import Settings
from featurestore.errors import StoreUnavailable
from featurestore.faults import fault_point
from featurestore.offline.history import HistoryWriter
from featurestore.online.writer import OnlineWriter
from featurestore.plan import Plan
from featurestore.records import ViewRows
from featurestore.runtime.dead_letters import dead_letter_headers
from featurestore.runtime.decode import DeadLetter, Decoder, RawRecord
from featurestore.runtime.kafka import consumer_config, ensure_topics, producer_config
from featurestore.runtime.watermarks import Watermarks

log = logging.getLogger(__name__)
T = TypeVar("T")


class _Retryable(Exception):
    """A transient failure of a write the processor retries."""


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
    retries: int = 0
    last_error: str = ""
    started_at: float = field(default_factory=time.monotonic)
    first_record_at: float | None = None
    """time.monotonic() when the first record arrived (after the group join): throughput's start."""

    @property
    def dead_lettered(self) -> int:
        return sum(self.dead_letters.values())


class StreamProcessor:
    """Executes a plan against Kafka, Redis and the Parquet history (confluent-kafka engine)."""

    def __init__(self, plan: Plan, settings: Settings) -> None:
        self.plan = plan
        self.settings = settings
        skew_ms = int(settings.max_future_skew_s * 1000)
        self.decoders = {
            s.topic: Decoder(plan, s, skew_ms, settings.max_record_bytes) for s in plan.sources if _has_views(plan, s.name)
        }
        self.dead_letter_topics = {s.topic: s.dead_letter_topic for s in plan.sources}
        self.watermarks = {s.topic: Watermarks(plan, s, Path(settings.offline_root)) for s in plan.sources}
        self.redis = settings.redis_client(socket_timeout=30, socket_connect_timeout=10)
        self.online = OnlineWriter(self.redis, settings.project, plan, skew_ms)
        self.history = HistoryWriter(Path(settings.offline_root), plan)
        self.stats = ProcessorStats()
        self._stop = threading.Event()
        self._offsets: dict[tuple[str, int], int] = {}
        self._eof: dict[tuple[str, int], int] = {}
        self._last_checkpoint = time.monotonic()
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    # -- lifecycle -----------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish its batch, checkpoint and return (thread/signal safe)."""
        self._stop.set()

    def run(
        self,
        until_caught_up: bool = False,
        on_batch: Callable[[ProcessorStats], None] | None = None,
    ) -> ProcessorStats:
        """Process until stop() (or, with until_caught_up, until every record that was in the
        source topics at start has been processed). Always ends with a checkpoint."""
        self._check_redis()
        ensure_topics(self.settings, self.dead_letter_topics.values())
        consumer = self._consumer = Consumer(consumer_config(self.settings), logger=log)
        self._producer = Producer(producer_config(self.settings), logger=log)
        topics = list(self.decoders)
        targets = self._end_offsets(consumer, topics) if until_caught_up else {}
        consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        failed = False
        try:
            while not self._stop.is_set():
                msgs = consumer.consume(self.settings.batch_size, self.settings.batch_timeout_s)
                if msgs:
                    self._process(msgs)
                    if on_batch:
                        on_batch(self.stats)
                if time.monotonic() - self._last_checkpoint >= self.settings.checkpoint_interval_s:
                    self.checkpoint()
                if until_caught_up and self._caught_up(targets):
                    break
        except BaseException:
            failed = True
            raise
        finally:
            try:
                self.checkpoint()  # commits only batches whose writes completed
            except Exception:
                if not failed:
                    raise
                log.exception("final checkpoint failed; uncommitted records will be reprocessed")
            finally:
                consumer.close()
                self._producer.flush(30)
        return self.stats

    # -- helpers -----------------------------------------------------------------------
    def _check_redis(self) -> None:
        self.check_redis(self.settings, self.redis)

    @staticmethod
    def check_redis(settings: Settings, client: redis.Redis | None = None) -> None:
        """Raise StoreUnavailable with a one-line reason if Redis does not answer."""
        try:
            (client or settings.redis_client(socket_connect_timeout=5)).ping()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"Redis at {settings.redis_display} is unreachable: {exc}") from None

    def _end_offsets(self, consumer: Consumer, topics: list[str]) -> dict[tuple[str, int], int]:
        """High watermarks at start (a lower bound on some brokers; EOF events complete it)."""
        meta = consumer.list_topics(timeout=15)
        targets: dict[tuple[str, int], int] = {}
        for topic in topics:
            tmeta = meta.topics.get(topic)
            if tmeta is None or tmeta.error is not None:
                raise StoreUnavailable(
                    f"topic '{topic}' does not exist on {self.settings.kafka_bootstrap_servers}; create it or produce to it first"
                )
            for p in tmeta.partitions:
                _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)
                targets[(topic, p)] = high
        return targets

    def _caught_up(self, targets: dict[tuple[str, int], int]) -> bool:
        """Every partition reported end-of-partition at or beyond its start watermark.

        End-of-partition is signalled when a fetch finds nothing more, so it is exact even
        when a broker under-reports its high watermarks."""
        return all(self._eof.get(tp, -1) >= high for tp, high in targets.items())

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", [(p.topic, p.partition) for p in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", [(p.topic, p.partition) for p in partitions])
        self.checkpoint()
        for p in partitions:
            self._eof.pop((p.topic, p.partition), None)
            if p.topic in self.watermarks:
                self.watermarks[p.topic].forget(p.partition)

    def _process(self, msgs: list[Message]) -> None:
        if self.stats.first_record_at is None:
            self.stats.first_record_at = time.monotonic()
        by_topic: dict[str, list[RawRecord]] = {}
        offsets: dict[tuple[str, int], int] = {}
        for m in msgs:
            topic, partition, offset = cast(str, m.topic()), cast(int, m.partition()), cast(int, m.offset())
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self._eof[(topic, partition)] = offset
                else:
                    log.warning("kafka: %s", err)
                continue
            by_topic.setdefault(topic, []).append(RawRecord(partition, offset, m.key(), m.value()))
            offsets[(topic, partition)] = offset + 1
        now_ms = int(time.time() * 1000)
        batches: list[ViewRows] = []
        dead: list[DeadLetter] = []
        for topic, records in by_topic.items():
            marks = self.watermarks[topic]
            if marks.needed:
                for rec in records:
                    marks.ensure(rec.partition, rec.offset)
            rows, bad = self.decoders[topic].decode(records, now_ms, marks.newest if marks.needed else None)
            batches.extend(rows)
            dead.extend(bad)
            self.stats.records += len(records)
            metrics.RECORDS.labels(topic).inc(len(records))
            self.stats.events += len(records) - sum(1 for d in bad if d.reason != "late")  # late ones are kept, flagged
        self._write(batches, dead)
        # only now may a checkpoint commit these offsets: their effects are applied
        self._offsets.update(offsets)
        metrics.BATCH_SIZE.observe(len(msgs))
        self._observe_lag(offsets)

    def _observe_lag(self, offsets: dict[tuple[str, int], int]) -> None:
        """Consumer lag per partition from the high watermark of the last fetch (no broker round trip)."""
        if self._consumer is None:
            return
        for (topic, partition), nxt in offsets.items():
            try:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                metrics.CONSUMER_LAG.labels(topic, str(partition)).set(max(0, high - nxt))

    def _write(self, batches: list[ViewRows], dead: list[DeadLetter]) -> None:
        if batches:
            self.stats.entity_writes += self._with_retry(f"Redis write to {self.settings.redis_display}",
                                                         lambda: self.online.write(batches))
            fault_point("after_online_write")
            visible_at = time.time()
            metrics.observe_online_batch((metrics.BatchObservation(rows.view, _on_time(rows)) for rows in batches), visible_at)
            for rows in batches:
                self.history.append(rows)
        for d in dead:
            self.stats.dead_letters[d.reason] = self.stats.dead_letters.get(d.reason, 0) + 1
            metrics.DEAD_LETTERS.labels(d.topic, d.reason).inc()
            assert self._producer is not None
            self._producer.produce(
                self.dead_letter_topics[d.topic],
                value=d.value,
                key=d.key,
                headers=dead_letter_headers(d),
            )
            self._producer.poll(0)
        self.stats.batches += 1

    def _with_retry(self, what: str, action: Callable[[], T]) -> T:
        """Run an idempotent write until it succeeds, backing off; give up only when asked to stop."""
        delay = 0.1
        while True:
            try:
                return action()
            except (redis.RedisError, OSError, _Retryable) as exc:
                self.stats.retries += 1
                metrics.RETRIES.labels(what.split(" ")[0]).inc()
                self.stats.last_error = f"{what}: {exc}"
                if self._stop.is_set():
                    raise StoreUnavailable(
                        f"{what} failed ({exc}) and the processor was asked to stop; "
                        "the records since the last commit will be processed again on restart"
                    ) from None
                log.warning("%s failed (%s); retrying in %.1f s, offsets not advanced", what, exc, delay)
                self._stop.wait(delay)  # backoff; a stop request ends the wait early
                delay = min(delay * 2, self.settings.max_retry_backoff_s)

    def _flush_dead_letters(self) -> None:
        assert self._producer is not None
        remaining = self._producer.flush(30)
        if remaining:
            raise _Retryable(f"{remaining} dead letters not yet acknowledged by the broker")

    def _commit_offsets(self) -> None:
        """Commit; a non-retriable failure (the partitions moved in a rebalance) drops the
        offsets: the new owner replays from the last commit and the stores skip what they hold."""
        assert self._consumer is not None
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._offsets.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if err is not None and hasattr(err, "retriable") and err.retriable():
                raise _Retryable(f"offset commit: {err}") from None
            log.warning("offset commit failed (%s); the next owner of these partitions replays them", exc)

    def checkpoint(self) -> None:
        """Make everything processed durable, then commit the offsets that cover it."""
        before = self.history.rows_written
        self._with_retry(f"history flush to {self.settings.offline_root}", self.history.flush)
        self.stats.history_rows += self.history.rows_written - before
        if self._producer is not None:
            self._with_retry("dead-letter delivery", self._flush_dead_letters)
        if self._offsets and self._consumer is not None:
            fault_point("before_offset_commit")
            self._with_retry("offset commit", self._commit_offsets)
            self._offsets.clear()
        self._last_checkpoint = time.monotonic()
        self.stats.checkpoints += 1
        metrics.CHECKPOINTS.inc()


def _on_time(rows: ViewRows) -> list[int]:
    """Event times of the rows applied online (late ones are not)."""
    return [t for t, late in zip(rows.ts, rows.late) if not late] if rows.late else rows.ts


def _has_views(plan: Plan, source: str) -> bool:
    return any(v.source == source for v in plan.views)

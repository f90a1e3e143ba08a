"""The stream processor: consume a batch, decode, write Redis, buffer Parquet, checkpoint.

The checkpoint's order is `runtime/checkpoint.py`'s; here its position is the consumer
offsets. Online writes happen per batch, before the checkpoint that covers them (a worker
thread sends a batch's states to Redis while the next batch is consumed and decoded). A
periodic checkpoint makes what was processed when it started durable in a worker thread
while the next batches are applied; the consumer's own thread commits its offsets once that
is done (a commit from the worker while a rebalance callback waited for that worker stalled
the whole group). Rebalances, the end of a run and stops checkpoint synchronously. A crash
anywhere replays the uncommitted records, and both stores ignore what they already hold
(per-entity applied offsets in Redis, per-partition committed offsets in the history), so
every event takes effect exactly once. Dead letters are produced at least once (their
headers identify the source record).

When Redis or the offline folder fails, the processor retries the same work with
exponential backoff, reports it (log + `stats.retries`), and never commits offsets past
data that is not durable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import cast

import orjson
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from featurestore import metrics
from featurestore.config import Settings
from featurestore.errors import FeatureStoreError, StoreUnavailable
from featurestore.offline.history import HistoryWriter
from featurestore.online.writer import OnlineWriter
from featurestore.plan import Plan
from featurestore.records import ViewRows
from featurestore.registry import FileRegistry, PlanWatch
from featurestore.runtime.applier import BatchApplier, ProcessorStats, Retryable, check_redis
from featurestore.runtime.checkpoint import Checkpointer
from featurestore.runtime.decode import DeadLetter, RawBatch
from featurestore.runtime.imports import forget_repo_modules
from featurestore.runtime.kafka import consumer_config
from featurestore.runtime.repair import Mark, count_repair, marks_command, read_marks, repair_partition

log = logging.getLogger(__name__)


def processing_key(plan: Plan) -> bytes:
    """What a processor computes from a plan: its views, sources and code (not services,
    serving versions or request-time features, which only readers use)."""
    refs = {s.schema_ref for s in plan.sources} | {f.udf_ref for v in plan.views for f in v.row_features if f.udf_ref}
    return orjson.dumps([[v.model_dump(mode="json") for v in plan.views], [s.model_dump(mode="json") for s in plan.sources],
                         {r: h for r, h in plan.code.items() if r in refs}], option=orjson.OPT_SORT_KEYS)


def run_following(
    plan: Plan,
    settings: Settings,
    stop: threading.Event,
    until_caught_up: bool = False,
    on_batch: Callable[[ProcessorStats], None] | None = None,
    on_switch: Callable[[Plan, str | None], None] | None = None,
) -> ProcessorStats:
    """Run the plan and follow the registry: when a version that changes what is computed is
    applied (or restored), checkpoint, then go on with the new plan from the committed offsets
    (a view version it adds starts from there; `backfill --view` fills its past). A plan
    whose code fails to load is reported through `on_switch(plan, error)` and the old one runs on."""
    watch = PlanWatch(FileRegistry(settings.paths.registry))
    watch.plan()
    rejected: set[str] = set()
    previous: Plan | None = None
    while True:
        try:
            processor = StreamProcessor(plan, settings, stop)
        except FeatureStoreError as exc:
            if previous is None:
                raise
            rejected.add(plan.content_hash)
            log.error("registry version %s not taken up, the previous plan runs on: %s", watch.version, exc)
            if on_switch:
                on_switch(plan, str(exc))
            plan, previous = previous, None
            forget_repo_modules(settings.paths.repo)
            continue
        processor.ignored_plans = rejected
        stats = processor.run(until_caught_up=until_caught_up, on_batch=on_batch, follow=watch)
        new = processor.next_plan
        if new is None or stop.is_set():
            return stats
        log.info("registry version %s applied: processing it from the committed offsets", watch.version)
        if on_switch:
            on_switch(new, None)
        forget_repo_modules(settings.paths.repo)  # the new plan's code, not the old one's
        plan, previous = new, plan


def _raw_batch(msgs: list[Message]) -> RawBatch:
    return RawBatch(cast(list[int], list(map(Message.partition, msgs))), cast(list[int], list(map(Message.offset, msgs))),
                    list(map(Message.key, msgs)), list(map(Message.value, msgs)))


class StreamProcessor:
    """Executes a plan against Kafka, Redis and the Parquet history (confluent-kafka engine)."""

    def __init__(self, plan: Plan, settings: Settings, stop: threading.Event | None = None) -> None:
        self.plan = plan
        self.settings = settings
        self._stop = stop or threading.Event()
        self.next_plan: Plan | None = None
        """Set when run() returned to switch to a newly applied plan (see `run(follow=...)`)."""
        self._marks: dict[Mark, int] = {}
        """Per (view, topic, partition) owned: the offset marked in Redis at the last checkpoint."""
        self._unchecked: set[tuple[str, int]] = set()
        """Partitions taken whose marks are not compared with the committed offsets yet."""
        self._views_of = {s.topic: [v.name for v in plan.views if v.source == s.name] for s in plan.sources}
        self._seen_plan: Plan | None = None
        self.ignored_plans: set[str] = set()
        """Content hashes of plans not to switch to (their code failed to load)."""
        self.applier = BatchApplier(plan, settings, self._stop, background_online=True)
        self._offsets: dict[tuple[str, int], int] = {}
        self._eof: dict[tuple[str, int], int] = {}
        self._consumer: Consumer | None = None
        self._checkpoints: Checkpointer[dict[tuple[str, int], int]] = self.applier.checkpointer(
            self._commit, settings.processor.checkpoint_interval_s)

    @property
    def stats(self) -> ProcessorStats:
        return self.applier.stats

    @property
    def online(self) -> OnlineWriter:
        return self.applier.online

    @property
    def history(self) -> HistoryWriter:
        return self.applier.history

    # -- lifecycle -----------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to finish its batch, checkpoint and return (thread/signal safe)."""
        self._stop.set()

    def run(
        self,
        until_caught_up: bool = False,
        on_batch: Callable[[ProcessorStats], None] | None = None,
        follow: PlanWatch | None = None,
    ) -> ProcessorStats:
        """Process until stop() (or, with until_caught_up, until every record that was in the
        source topics at start has been processed). Always ends with a checkpoint.

        With `follow`, also return when a registry version changes what the processor computes
        (views, sources, code), with `next_plan` set: `run_following` starts it from there."""
        self.applier.open()
        consumer = self._consumer = Consumer(consumer_config(self.settings), logger=log)
        topics = self.applier.topics
        targets = self._end_offsets(consumer, topics) if until_caught_up else {}
        consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        failed = False
        try:
            while not self._stop.is_set():
                msgs = self._take(consumer)
                if msgs:
                    self._process(msgs)
                    if on_batch:
                        on_batch(self.stats)
                if self._checkpoints.started_done:
                    self._checkpoints.finish()
                if self._checkpoints.due():
                    self._checkpoint_in_background()
                if follow is not None and self._plan_changed(follow):
                    break
                if until_caught_up and self._caught_up(targets):
                    self.checkpoint()
                    self.stats.caught_up_at = time.monotonic()
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
                self._checkpoints.close()
                consumer.close()
                self.applier.close()
        return self.stats

    # -- helpers -----------------------------------------------------------------------
    def _plan_changed(self, follow: PlanWatch) -> bool:
        try:
            plan = follow.plan()
        except FeatureStoreError:
            return False
        if plan is self.plan or plan is self._seen_plan:
            return False
        self._seen_plan = plan
        if plan.content_hash in self.ignored_plans or processing_key(plan) == processing_key(self.plan):
            return False
        self.next_plan = plan
        return True

    @staticmethod
    def check_redis(settings: Settings, client: redis.Redis[bytes] | None = None) -> None:
        """Raise StoreUnavailable with a one-line reason if Redis does not answer."""
        check_redis(settings, client)

    def _end_offsets(self, consumer: Consumer, topics: list[str]) -> dict[tuple[str, int], int]:
        """High watermarks at start (a lower bound on some brokers; EOF events complete it)."""
        meta = consumer.list_topics(timeout=15)
        targets: dict[tuple[str, int], int] = {}
        for topic in topics:
            tmeta = meta.topics.get(topic)
            if tmeta is None or tmeta.error is not None:
                raise StoreUnavailable(
                    f"topic '{topic}' does not exist on {self.settings.kafka.bootstrap_servers}; create it or produce to it first"
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
        self._unchecked.update((p.topic, p.partition) for p in partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("revoked %s", [(p.topic, p.partition) for p in partitions])
        self.checkpoint()
        for p in partitions:
            self._eof.pop((p.topic, p.partition), None)
            self.applier.forget(p.topic, p.partition)
            self._unchecked.discard((p.topic, p.partition))
            for mark in [m for m in self._marks if m[1:] == (p.topic, p.partition)]:
                del self._marks[mark]

    def _take(self, consumer: Consumer) -> list[Message]:
        """What the consumer holds now, up to batch_size; when it holds nothing, wait up to
        batch_timeout_s for the first record. Under load the batches are large (records queue
        while the previous batch is applied); when idle a record waits for nothing."""
        size = self.settings.processor.batch_size
        msgs = consumer.consume(size, 0)
        if msgs:
            return msgs
        first = consumer.poll(self.settings.processor.batch_timeout_s)
        if first is None:
            return []
        return [first, *consumer.consume(size - 1, 0)] if size > 1 else [first]

    def _process(self, msgs: list[Message]) -> None:
        if self._unchecked:
            self.applier.with_retry("online repair check", self._check_taken)
        by_topic = self._by_topic(msgs)
        offsets = {(topic, p): nxt for topic, batch in by_topic.items() for p, nxt in batch.next_offsets().items()}
        batches, dead = self.applier.decode(by_topic)
        self._write(batches, dead)
        # only now may a checkpoint commit these offsets: their effects are applied
        self._offsets.update(offsets)
        metrics.BATCH_SIZE.observe(len(msgs))
        self._observe_lag(offsets)

    def _by_topic(self, msgs: list[Message]) -> dict[str, RawBatch]:
        """The records of each topic, column by column (end-of-partition events noted, errors logged)."""
        errors = list(map(Message.error, msgs))
        if any(err is not None for err in errors):  # (a KafkaError cannot be compared with None)
            kept = []
            for m, err in zip(msgs, errors):
                if err is None:
                    kept.append(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    self._eof[(cast(str, m.topic()), cast(int, m.partition()))] = cast(int, m.offset())
                else:
                    log.warning("kafka: %s", err)
            msgs = kept
        if len(self.applier.topics) == 1:  # one source topic: every record is of it
            return {self.applier.topics[0]: _raw_batch(msgs)} if msgs else {}
        topics = list(map(Message.topic, msgs))
        return {cast(str, topic): _raw_batch([m for m, t in zip(msgs, topics) if t == topic])
                for topic in dict.fromkeys(topics)}

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
        self.applier.write(batches, dead)

    def _commit_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        """Commit; a non-retriable failure (the partitions moved in a rebalance) drops the
        offsets: the new owner replays from the last commit and the stores skip what they hold."""
        assert self._consumer is not None
        try:
            self._consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if err is not None and hasattr(err, "retriable") and err.retriable():
                raise Retryable(f"offset commit: {err}") from None
            log.warning("offset commit failed (%s); the next owner of these partitions replays them", exc)

    def checkpoint(self) -> None:
        """Make everything processed durable, then commit the offsets that cover it (waits)."""
        self._checkpoints.finish()  # first: its commit may take the offsets applied since (a repair)
        self._checkpoints.run(self._take_offsets())

    def _checkpoint_in_background(self) -> None:
        """The periodic checkpoint: made durable on a worker thread while the next batches are
        applied; its offsets are committed on this thread once that is done."""
        self._checkpoints.finish()  # first, as in checkpoint()
        self._checkpoints.start(self._take_offsets())

    def _take_offsets(self) -> dict[tuple[str, int], int]:
        offsets, self._offsets = self._offsets, {}
        return offsets

    # -- online repair ------------------------------------------------------------------
    def _check_taken(self) -> None:
        """Partitions just taken: a mark in Redis below the group's committed offset (or no
        marks at all) means Redis lost events applied before; re-apply them from the history."""
        assert self._consumer is not None
        taken = sorted(self._unchecked)
        committed = {(tp.topic, tp.partition): tp.offset
                     for tp in self._consumer.committed([TopicPartition(t, p) for t, p in taken], timeout=15) if tp.offset > 0}
        marks = [(v, t, p) for t, p in taken for v in self._views_of.get(t, []) if (t, p) in committed]
        has_marks, held = read_marks(self.online.redis, self.settings.project, marks)
        for mark, value in zip(marks, held):
            upto = committed[mark[1:]]
            if has_marks and (value is None or value >= upto):
                continue  # intact, or a view new to this partition (it starts here)
            self._repair(mark, value or 0, upto)
        fresh = {m: committed[m[1:]] for m in marks}
        self.online.redis.run([marks_command(self.settings.project, fresh)])
        self._marks.update(fresh)
        self._unchecked.clear()

    def _check_marks(self, offsets: dict[tuple[str, int], int]) -> None:
        """Before committing: marks in Redis lower than written mean Redis lost data; make
        everything processed durable (into `offsets`), re-apply the lost range, and mark."""
        mine = list(self._marks)
        if mine:
            has_marks, held = read_marks(self.online.redis, self.settings.project, mine)
            lost = {m: (v or 0) if has_marks else 0 for m, v in zip(mine, held) if v is None or v < self._marks[m]}
            if lost:
                handover = self._checkpoints.hand_over(self._take_offsets())
                self._checkpoints.make_durable(handover)
                offsets.update(handover.position)
                for mark, since in lost.items():
                    self._repair(mark, since, offsets.get(mark[1:], self._marks[mark]))
        fresh = {(v, t, p): o for (t, p), o in offsets.items() for v in self._views_of.get(t, [])}
        if fresh:
            self.online.redis.run([marks_command(self.settings.project, fresh)])
            self._marks.update(fresh)

    def _repair(self, mark: Mark, since: int, upto: int) -> None:
        view, topic, partition = mark
        started = time.monotonic()
        entities, rows = repair_partition(self.applier.redis, self.settings.project, self.settings.paths.offline,
                                          self.plan.view(view), topic, partition, since, upto,
                                          self.settings.processor.max_future_skew_ms)
        self.online.forget(topic, partition)  # what is cached may rest on what Redis lost
        count_repair(self.online.redis, self.settings.project, view)
        metrics.ONLINE_REPAIRS.labels(view).inc()
        metrics.REPAIRED_ENTITIES.labels(view).inc(entities)
        self.stats.repairs += 1
        log.warning("Redis lost online data of view %s, partition %s:%d (it held offsets below %d, %d were applied): "
                    "re-applied %d history rows to %d entities in %.1f s", view, topic, partition, since, upto, rows,
                    entities, time.monotonic() - started)

    def _commit(self, offsets: dict[tuple[str, int], int]) -> None:
        """The checkpoint's last step: check the marks of lost online data, commit the offsets."""
        if self._consumer is not None and (offsets or self._marks):  # idle too: Redis may lose data any time
            self.applier.with_retry("online repair check", lambda: self._check_marks(offsets))
        if offsets and self._consumer is not None:
            self.applier.with_retry("offset commit", lambda: self._commit_offsets(offsets))

"""The Faust engine: the same compiled plan inside Faust agents (faust-streaming, optional).

One agent per source topic takes batches of raw records with `stream.noack_take` and hands
them to the engine-independent BatchApplier (decode, lateness, Redis tiles, history buffer,
dead letters) in a worker thread, so Faust's event loop keeps heartbeating. Events are
acknowledged only at a checkpoint, after the history and the dead letters they produced are
durable; Faust commits acknowledged offsets only. State lives where the default engine keeps
it (Redis tiles with per-entity applied offsets, Parquet history with per-partition commit
files), not in Faust tables, so the two engines give the same results and the same
exactly-once effect, and either can resume the other's consumer group (never both at once:
their group protocols differ).

Mount into an existing Faust app with `FaustEngine(plan, settings).mount(app)`.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import signal as signals
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, TopicPartition

from featurestore import metrics
from featurestore.config import Settings
from featurestore.errors import ConfigError, StoreUnavailable
from featurestore.plan import Plan
from featurestore.runtime.applier import BatchApplier, ProcessorStats
from featurestore.runtime.checkpoint import Checkpointer
from featurestore.runtime.decode import RawRecord
from featurestore.runtime.kafka import consumer_config

if TYPE_CHECKING:
    import faust

log = logging.getLogger(__name__)
#: --until-caught-up: stop once every partition reached its start watermark and nothing arrived for this long.
IDLE_S = 1.0


def _faust_module(name: str = "faust") -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError("the Faust engine needs faust-streaming: pip install 'featurestore[faust]'") from None


class FaustEngine:
    """Runs a plan's stream processing as Faust agents of an app."""

    def __init__(
        self,
        plan: Plan,
        settings: Settings,
        until_caught_up: bool = False,
        on_batch: Callable[[ProcessorStats], None] | None = None,
    ) -> None:
        self.settings = settings
        self.applier = BatchApplier(plan, settings)
        self.until_caught_up = until_caught_up
        self.on_batch = on_batch
        self._pending: list[Any] = []
        self._lock: asyncio.Lock | None = None
        self._checkpoints: Checkpointer[list[Any]] = self.applier.checkpointer(self._acknowledge,
                                                                                settings.processor.checkpoint_interval_s)
        self._last_batch_at = time.monotonic()
        self._next: dict[tuple[str, int], int] = {}
        self._targets: dict[tuple[str, int], int] = {}
        self._finished = False
        self._checkpointing: asyncio.Future[None] | None = None
        self.failure: BaseException | None = None
        self.stop_worker: Callable[[], None] = self._stop_app
        """Ends the worker gracefully (its shutdown checkpoints): `run_faust` sets it to the
        worker's own stop; an app run by other means is stopped."""
        self.app: faust.App | None = None

    @property
    def stats(self) -> ProcessorStats:
        return self.applier.stats

    # -- wiring -------------------------------------------------------------------------
    def mount(self, app: faust.App) -> None:
        """Add the plan's agents, checkpoint timer and rebalance/shutdown hooks to a Faust app."""
        self.app = app
        self.applier.open()
        if self.until_caught_up:
            self._targets, self._next = start_positions(self.settings, self.applier.topics)
        crash = _faust_module("mode").CrashingSupervisor  # a failed batch stops the worker: no ack may pass it
        for topic in self.applier.topics:
            channel = app.topic(topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
            app.agent(channel, name=f"featurestore.{topic}", supervisor_strategy=crash)(self._agent(topic))
        app.timer(0.1, name="featurestore.checkpoint")(self._tick)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_before_shutdown.connect(self._on_shutdown)

    def _agent(self, topic: str) -> Callable[[Any], Any]:
        batch_size, within = faust_batch_size(self.settings), self.settings.processor.batch_timeout_s

        async def process(stream: Any) -> None:
            try:
                async for events in stream.noack_take(batch_size, within=within):
                    await self._process(topic, events)
            except Exception as exc:
                self.failure = exc
                log.exception("batch of %s failed; stopping the worker (nothing past it is acknowledged)", topic)
                self.stop_worker()
                raise

        process.__name__ = process.__qualname__ = f"featurestore_{topic.replace('-', '_').replace('.', '_')}"
        return process

    async def _process(self, topic: str, events: list[Any]) -> None:
        records = [RawRecord(e.message.partition, e.message.offset, e.message.key, e.message.value) for e in events]
        async with self._guard():
            await asyncio.get_running_loop().run_in_executor(None, self._apply, topic, records)
            self._pending.extend(events)
            for r in records:
                tp = (topic, r.partition)
                self._next[tp] = max(self._next.get(tp, 0), r.offset + 1)
            self._last_batch_at = time.monotonic()
        metrics.BATCH_SIZE.observe(len(records))
        if self.on_batch:
            self.on_batch(self.stats)

    def _guard(self) -> asyncio.Lock:
        """One batch or checkpoint at a time (agents of several topics share the applier)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def _apply(self, topic: str, records: list[RawRecord]) -> None:
        batches, dead = self.applier.decode({topic: records})
        self.applier.write(batches, dead)

    # -- checkpoints -----------------------------------------------------------------------
    async def checkpoint(self) -> None:
        """Make the history and dead letters durable, then acknowledge the events they cover
        (acknowledged events are what Faust commits)."""
        async with self._guard():
            events, self._pending = self._pending, []
            handover = self._checkpoints.hand_over(events)
            await asyncio.get_running_loop().run_in_executor(None, self._checkpoints.make_durable, handover)
            self._checkpoints.commit(handover)

    @staticmethod
    def _acknowledge(events: list[Any]) -> None:
        for event in events:
            event.ack()

    async def _tick(self) -> None:
        """Every 0.1 s: start a checkpoint when one is due (or a rebalance waits for acks); stop when caught up."""
        assert self.app is not None
        due = self._checkpoints.due()
        if self._pending and (due or self.app.rebalancing) and self._checkpointing is None:
            self._checkpointing = asyncio.ensure_future(self._background_checkpoint())
        if self.until_caught_up and not self._finished and self._caught_up():
            self._finished = True
            started = time.monotonic()
            await self.checkpoint()
            await self.app.consumer.commit()
            # the end of the work: the last batch plus the final checkpoint, not the idle wait that detects it
            self.stats.caught_up_at = self._last_batch_at + (time.monotonic() - started)
            self.stop_worker()

    def _stop_app(self) -> None:
        assert self.app is not None, "mount() first"
        asyncio.ensure_future(self.app.stop())

    async def _background_checkpoint(self) -> None:
        try:
            await self.checkpoint()
        finally:
            self._checkpointing = None

    def _caught_up(self) -> bool:
        reached = all(self._next.get(tp, 0) >= high for tp, high in self._targets.items() if high > 0)
        return reached and time.monotonic() - self._last_batch_at >= IDLE_S

    async def _on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await self.checkpoint()
        for tp in args[0] if args else kwargs.get("revoked", ()):
            self.applier.forget(tp.topic, tp.partition)

    async def _on_shutdown(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await self.checkpoint()
        self.applier.close()


def start_positions(settings: Settings, topics: list[str]) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
    """(high watermark, committed offset of the group) of every partition now.

    Watermarks are a lower bound on some brokers, hence also IDLE_S; committed offsets say
    where the group resumes, so a group already at the end is caught up at once."""
    consumer = Consumer({**consumer_config(settings), "group.id": settings.kafka.consumer_group})
    try:
        meta = consumer.list_topics(timeout=15)
        tps = [TopicPartition(topic, p) for topic in topics for p in meta.topics[topic].partitions]
        targets = {(tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=15)[1] for tp in tps}
        committed = {(tp.topic, tp.partition): tp.offset for tp in consumer.committed(tps, timeout=15) if tp.offset >= 0}
        return targets, committed
    finally:
        consumer.close()


def build_app(settings: Settings) -> faust.App:
    """A Faust app for the plan: consumer group, broker, credentials and batching from the settings."""
    module = _faust_module()
    opts = settings.kafka.options
    app: faust.App = module.App(
        settings.kafka.consumer_group,
        broker=[f"kafka://{h.strip()}" for h in settings.kafka.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(settings),
        store="memory://",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=float(opts.get("session.timeout.ms", 10_000)) / 1000,
        broker_heartbeat_interval=float(opts.get("heartbeat.interval.ms", 1_000)) / 1000,
        consumer_max_fetch_size=8 * 1024 * 1024,
        stream_buffer_maxsize=max(4096, faust_batch_size(settings)),
    )
    return app


#: Faust takes batches of at most this many events (the size its engine was tested with; a
#: 50,000-event take buffer hung a run once on a slow machine, cause not found).
FAUST_MAX_BATCH = 20_000


def faust_batch_size(settings: Settings) -> int:
    """The records the Faust engine takes per batch: batch_size, at most FAUST_MAX_BATCH."""
    return min(settings.processor.batch_size, FAUST_MAX_BATCH)


def faust_credentials(settings: Settings) -> Any:
    """The TLS/SASL settings as Faust (aiokafka) credentials; None for PLAINTEXT."""
    faust = _faust_module()
    opts = settings.kafka.security_options()
    protocol = opts["security.protocol"]
    if protocol == "PLAINTEXT":
        return None
    import ssl

    context = None
    if protocol.endswith("SSL"):
        context = ssl.create_default_context(cafile=opts.get("ssl.ca.location"))
        if "ssl.certificate.location" in opts:
            context.load_cert_chain(opts["ssl.certificate.location"], opts.get("ssl.key.location"))
    if protocol == "SSL":
        return context
    if opts["sasl.mechanism"] == "OAUTHBEARER":
        raise ConfigError("the Faust engine does not support OAUTHBEARER; use PLAIN or SCRAM, or the default engine")
    return faust.SASLCredentials(username=opts["sasl.username"], password=opts["sasl.password"],
                                 mechanism=opts["sasl.mechanism"], ssl_context=context)


def run_faust(plan: Plan, settings: Settings, until_caught_up: bool = False,
              on_batch: Callable[[ProcessorStats], None] | None = None) -> ProcessorStats:
    """Run the plan in a Faust worker until SIGINT/SIGTERM (or caught up); returns the counters."""
    faust = _faust_module()
    asyncio.set_event_loop(asyncio.new_event_loop())  # a worker closes its loop when it stops
    app = build_app(settings)
    engine = FaustEngine(plan, settings, until_caught_up, on_batch)
    engine.mount(app)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, override_logging=False)
    # the graceful stop the worker makes on SIGTERM (mode names it private), without a signal to the process
    engine.stop_worker = lambda: worker._schedule_shutdown(signals.SIGTERM)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise StoreUnavailable(f"the Faust worker exited with code {exc.code}") from None
    failure = engine.failure or app.crash_reason
    if failure is not None:
        raise StoreUnavailable(f"the Faust worker stopped after a failure: {failure}; "
                               "unacknowledged records are processed again on restart") from None
    return engine.stats

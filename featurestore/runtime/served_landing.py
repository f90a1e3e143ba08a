"""`featurestore served-log land`: the served-value topic written as Parquet beside the history
(the layout and the exactly-once rule: `featurestore.offline.served`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from featurestore.config import Settings
from featurestore.offline.served import LandStats, landed_offsets, write_served

log = logging.getLogger(__name__)


def land_served(settings: Settings, until_caught_up: bool = True, stop: Callable[[], bool] = lambda: False,
                on_progress: Callable[[LandStats], None] | None = None) -> LandStats:
    """Write the served-value topic's records as Parquet (see the module docstring)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from featurestore.runtime.kafka import consumer_config, ensure_topics

    topic = settings.server.served_log_topic
    ensure_topics(settings, [topic])
    landed = landed_offsets(settings.paths.offline)
    conf = {**consumer_config(settings), "group.id": f"{settings.kafka.consumer_group}.served-log", "enable.partition.eof": True}
    consumer = Consumer(conf, logger=log)
    stats = LandStats()
    try:
        meta = consumer.list_topics(topic, timeout=15).topics[topic]
        targets = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=15)[1] for p in meta.partitions}
        eof: dict[int, int] = {}
        consumer.subscribe([topic])
        while not stop():
            msgs = consumer.consume(5000, 0.5)
            batch: dict[int, list[tuple[int, bytes]]] = {}
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof[m.partition() or 0] = m.offset() or 0
                    continue
                p, offset = m.partition() or 0, m.offset() or 0
                if offset <= landed.get(p, -1):
                    stats.skipped += 1
                    continue
                batch.setdefault(p, []).append((offset, m.value() or b""))
            for p, items in batch.items():
                stats.files += write_served(settings.paths.offline, p, items, stats)
                landed[p] = items[-1][0]
            if batch:
                consumer.commit(asynchronous=False)
                if on_progress:
                    on_progress(stats)
            if until_caught_up and all(eof.get(p, -1) >= high for p, high in targets.items()):
                break
    finally:
        consumer.close()
    return stats

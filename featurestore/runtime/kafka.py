"""Kafka client configuration and topic administration for the runtime."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from featurestore.config import Settings

log = logging.getLogger(__name__)

#: Fetch settings that let one consumer keep up with ~1M msg/s (librdkafka defaults cap far lower).
FAST_FETCH: dict[str, Any] = {
    "max.partition.fetch.bytes": 8 * 1024 * 1024,
    "fetch.max.bytes": 64 * 1024 * 1024,
    "queued.min.messages": 200_000,
    "fetch.wait.max.ms": 10,
}
_CONSUMER_ONLY = (
    "max.partition.fetch.bytes", "fetch.", "queued.", "session.", "heartbeat.", "group.",
    "auto.offset", "enable.auto", "enable.partition", "partition.assignment", "isolation.",
)


def _client_options(settings: Settings, consumer: bool) -> dict[str, Any]:
    # the security settings come last: kafka_options can tune a client, never weaken its transport
    opts = {**settings.kafka_options, **settings.kafka_security_options()}
    if not consumer:
        opts = {k: v for k, v in opts.items() if not k.startswith(_CONSUMER_ONLY)}
    return opts


def consumer_config(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": settings.consumer_group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 1_000,
        **FAST_FETCH,
        **_client_options(settings, consumer=True),
    }


def producer_config(settings: Settings) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "linger.ms": 5,
        "acks": "all",
        **_client_options(settings, consumer=False),
    }


def admin_config(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.kafka_bootstrap_servers, **_client_options(settings, consumer=False)}


def ensure_topics(settings: Settings, topics: Iterable[str], partitions: int = 1) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    conf: dict[str, Any] = {**admin_config(settings), "logger": log}
    admin = AdminClient(conf)
    existing = set(admin.list_topics(timeout=15).topics)
    wanted = [t for t in dict.fromkeys(topics) if t not in existing]
    if not wanted:
        return []
    # replication_factor=-1: the broker default (1 on a dev broker, 3 on a typical cluster)
    futures = admin.create_topics([NewTopic(t, partitions, -1) for t in wanted], operation_timeout=15)
    created = []
    for topic, fut in futures.items():
        try:
            fut.result()
            created.append(topic)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created

"""Shared fixtures. Integration tests use the Kafka and Redis named by
FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS / FEATURESTORE_REDIS_URL, or start the embedded
broker (Tansu) and a Redis of their own when those are unset."""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_REPO = ROOT / "feature_defs"
#: Group settings that let a fresh consumer group form in ~3 s on Tansu (default: 15-20 s).
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


@dataclass(frozen=True)
class Services:
    bootstrap_servers: str
    redis_url: str

    def env(self) -> dict[str, str]:
        return {
            "FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "FEATURESTORE_REDIS_URL": self.redis_url,
        }


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    """A real Kafka-protocol broker and a real Redis."""
    bootstrap = os.environ.get("FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS")
    redis_url = os.environ.get("FEATURESTORE_REDIS_URL")
    started = []
    if not bootstrap:
        from featurestore.embedded import start_broker

        broker = start_broker()
        started.append(broker)
        bootstrap = broker.address
    if not redis_url:
        from featurestore.embedded import start_redis

        rs = start_redis()
        started.append(rs)
        redis_url = f"redis://{rs.address}/0"
    try:
        yield Services(bootstrap, redis_url)
    finally:
        for svc in started:
            svc.stop()


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def example_repo(tmp_path: Path, run_id: str) -> Path:
    """A copy of feature_defs/ whose topic is unique to this test (safe on a shared cluster)."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE_REPO, repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    src = repo / "sources.py"
    text = src.read_text()
    assert 'topic="payments"' in text
    src.write_text(text.replace('topic="payments"', f'topic="payments-{run_id}"'))
    return repo


@pytest.fixture
def overrides(services: Services, tmp_path: Path, run_id: str) -> dict[str, object]:
    """Settings isolating one test: its own project (Redis keys), group, registry and history."""
    return {
        "kafka_bootstrap_servers": services.bootstrap_servers,
        "redis_url": services.redis_url,
        "project": f"test-{run_id}",
        "consumer_group": f"test-{run_id}",
        "registry_path": tmp_path / "registry",
        "offline_path": tmp_path / "offline",
        "checkpoint_interval_s": 1.0,
        "kafka_options": dict(FAST_GROUP),
    }


def read_dead_letters(bootstrap_servers: str, topic: str, expected: int) -> list[tuple[dict[str, str], bytes]]:
    """(headers, value) of every dead letter on a topic, read to its end (at least `expected`)."""
    from confluent_kafka import Consumer, KafkaError

    from featurestore.runtime.dead_letters import read_headers

    if expected == 0:
        return []
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": f"dlq-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "enable.partition.eof": True, **FAST_GROUP})
    consumer.subscribe([topic])
    got: list[tuple[dict[str, str], bytes]] = []
    try:
        while True:
            msg = consumer.poll(30)
            assert msg is not None, f"only {len(got)} of {expected} dead letters arrived"
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF and len(got) >= expected:
                    break
                continue
            got.append((read_headers(msg.headers()), msg.value() or b""))
    finally:
        consumer.close()
    return got


def sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)

"""Failures that must not lose data: Redis going away mid-run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.demo import payment_events, produce_records
from featurestore.embedded import start_redis
from featurestore.errors import StoreUnavailable
from featurestore.registry import FileRegistry
from featurestore.runtime import StreamProcessor
from featurestore.runtime.kafka import ensure_topics, producer_config

pytestmark = pytest.mark.integration


def _committed(settings, topic: str, partitions: int) -> int:
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": settings.consumer_group})
    got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=15)
    c.close()
    return sum(max(tp.offset, 0) for tp in got)


def test_redis_loss_mid_run_commits_only_applied_batches(example_repo: Path, overrides: dict, tmp_path: Path) -> None:
    # This test owns its Redis (it kills it), whatever the environment names.
    redis_service = start_redis(log_dir=tmp_path)
    overrides = {**overrides, "redis_url": f"redis://{redis_service.address}/0", "batch_size": 200,
                 "checkpoint_interval_s": 3600.0}
    settings = load_settings(example_repo, **overrides)
    plan = compile_repo(example_repo)
    FileRegistry(settings.registry_root).apply(plan)
    topic = plan.source("payments").topic
    ensure_topics(settings, [topic], partitions=2)
    records = payment_events(3000, end=dt.datetime.now(dt.timezone.utc), malformed_fraction=0.0, seed=9)
    produce_records(producer_config(settings), topic, records)

    applied_before_kill: list[int] = []

    def kill_after_first_batches(stats) -> None:  # type: ignore[no-untyped-def]
        if stats.batches == 3 and not applied_before_kill:
            applied_before_kill.append(stats.records)
            redis_service.stop()

    processor = StreamProcessor(plan, settings)
    with pytest.raises(StoreUnavailable, match="offsets were not committed"):
        processor.run(until_caught_up=True, on_batch=kill_after_first_batches)
    assert applied_before_kill and 0 < applied_before_kill[0] < len(records)
    assert _committed(settings, topic, 2) == applied_before_kill[0], "exactly the applied batches are committed"

    restarted = start_redis(port=redis_service.port, log_dir=tmp_path)
    try:
        stats = StreamProcessor(plan, settings).run(until_caught_up=True)
    finally:
        restarted.stop()
    assert stats.records == len(records) - applied_before_kill[0], "the rest is processed after restart, nothing skipped"
    assert _committed(settings, topic, 2) == len(records)

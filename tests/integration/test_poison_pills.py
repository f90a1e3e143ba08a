"""Records that once stopped ingestion for good: one too large for the dead-letter topic, and a
dead letter the producer refuses. Every valid event is applied exactly once, every bad record is
accounted for, and the processor runs on."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pyarrow.dataset as pads
import pytest

from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.demo import DemoEvent, payment_events, produce_records
from featurestore.registry import FileRegistry
from featurestore.runtime import StreamProcessor
from featurestore.runtime.dead_letters import ORIGINAL_SIZE, PAYLOAD_PATH, TRUNCATED
from featurestore.runtime.kafka import ensure_topics
from tests.conftest import read_dead_letters
from tests.mock_kafka import TOPIC_AUTHORIZATION_FAILED, UNKNOWN_TOPIC_OR_PART, MockCluster

pytestmark = pytest.mark.integration


def _run(example_repo: Path, overrides: dict[str, Any], poison: DemoEvent, **settings_: Any) -> tuple[Any, Any, list[Any]]:
    settings = load_settings(example_repo, **{**overrides, **settings_})
    plan = compile_repo(example_repo)
    FileRegistry(settings.registry_root).apply(plan)
    topic = plan.source("payments").topic
    ensure_topics(settings, [topic], partitions=2)
    end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    valid = [r for r in payment_events(400, end=end, span=dt.timedelta(minutes=20), users=10, merchants=4, seed=3) if r.event]
    records = valid[:200] + [poison] + valid[200:]
    big = {"bootstrap.servers": settings.kafka_bootstrap_servers, "message.max.bytes": 8 * 1024 * 1024, "linger.ms": 5}
    produce_records(big, topic, records)
    stats = StreamProcessor(plan, settings).run(until_caught_up=True)
    return settings, stats, valid


def _history_rows(settings: Any, view: str) -> int:
    return pads.dataset(Path(settings.offline_root) / view, format="parquet", partitioning="hive").count_rows()


def test_a_3mb_record_goes_to_the_dead_letter_topic_truncated(example_repo: Path, overrides: dict[str, Any]) -> None:
    value = b'{"payment_id": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    settings, stats, valid = _run(example_repo, overrides, DemoEvent(b"poison", value, None))
    assert stats.records == len(valid) + 1 and stats.events == len(valid)
    assert stats.dead_letters == {"oversized": 1}
    assert _history_rows(settings, "merchant_payments") == len(valid), "every valid event, once"
    [(headers, body)] = read_dead_letters(settings.kafka_bootstrap_servers, f"{compile_repo(example_repo).source('payments').topic}.dlq", 1)
    assert headers["error"] == "oversized" and headers[TRUNCATED] == "true"
    assert int(headers[ORIGINAL_SIZE]) == len(value) and len(body) == settings.max_dead_letter_bytes
    assert (Path(settings.offline_root) / headers[PAYLOAD_PATH]).read_bytes() == value, "the full record is kept"


def test_a_dead_letter_the_producer_refuses_is_kept_locally(example_repo: Path, overrides: dict[str, Any]) -> None:
    # librdkafka refuses messages over message.max.bytes: the dead-letter topic cannot take this one
    value = b'{"payment_id": 1, "pad": "' + b"y" * 300_000 + b'"}'
    options = {**overrides["kafka_options"], "message.max.bytes": 100_000}
    settings, stats, valid = _run(example_repo, overrides, DemoEvent(b"poison", value, None),
                                  kafka_options=options, max_dead_letter_bytes=512 * 1024)
    assert stats.records == len(valid) + 1 and stats.events == len(valid)
    assert stats.dead_letters == {"schema_violation": 1}
    assert _history_rows(settings, "merchant_payments") == len(valid)
    topic = compile_repo(example_repo).source("payments").topic
    [line] = [orjson.loads(text) for f in (Path(settings.offline_root) / "_dead_letters" / topic).glob("p*.jsonl")
              for text in f.read_bytes().splitlines()]
    assert line["reason"] == "schema_violation" and line["size"] == len(value) and "MSG_SIZE_TOO_LARGE" in line["delivery_error"]
    assert (Path(settings.offline_root) / line["payload_path"]).read_bytes() == value


@pytest.mark.parametrize("error", [TOPIC_AUTHORIZATION_FAILED, UNKNOWN_TOPIC_OR_PART], ids=["unauthorised", "deleted"])
def test_a_dead_letter_topic_that_refuses_everything(example_repo: Path, overrides: dict[str, Any], error: int) -> None:
    """On librdkafka's mock cluster (a real Kafka-protocol broker that can answer with errors a
    dev broker never gives), the dead-letter topic is not authorised, or deleted: the bad records
    are kept locally and every valid event is applied."""
    cluster = MockCluster()
    try:
        plan = compile_repo(example_repo)
        source = plan.source("payments")
        cluster.create_topic(source.topic, partitions=2)
        cluster.create_topic(source.dead_letter_topic)
        options = {**overrides["kafka_options"], "topic.metadata.propagation.max.ms": 1000}
        settings = load_settings(example_repo, **{**overrides, "kafka_bootstrap_servers": cluster.bootstrap_servers,
                                                  "kafka_options": options})
        FileRegistry(settings.registry_root).apply(plan)
        end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
        records = payment_events(300, end=end, span=dt.timedelta(minutes=20), users=10, merchants=4, seed=5,
                                 malformed_fraction=0.05)
        produce_records({"bootstrap.servers": cluster.bootstrap_servers}, source.topic, records)
        cluster.fail_topic(source.dead_letter_topic, error)
        stats = StreamProcessor(plan, settings).run(until_caught_up=True)
    finally:
        cluster.close()
    bad = [r for r in records if r.event is None]
    assert bad and stats.records == len(records) and stats.events == len(records) - len(bad)
    assert _history_rows(settings, "merchant_payments") == len(records) - len(bad)
    lines = [orjson.loads(x) for f in (Path(settings.offline_root) / "_dead_letters" / source.topic).glob("p*.jsonl")
             for x in f.read_bytes().splitlines()]
    assert len({(line["partition"], line["offset"]) for line in lines}) == len(lines), "each kept once"
    assert len(lines) == len(bad) == stats.dead_lettered, "every bad record accounted for"
    assert {r.value for r in bad} == {line["record"].encode() for line in lines}
    expected = "TOPIC_AUTHORIZATION_FAILED" if error == TOPIC_AUTHORIZATION_FAILED else "UNKNOWN_TOPIC"
    assert all(expected in line["delivery_error"] for line in lines), lines[0]["delivery_error"]

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
    [line] = [orjson.loads(x) for x in (Path(settings.offline_root) / "_dead_letters" / topic).glob("p*.jsonl")
              for x in x.read_bytes().splitlines()]
    assert line["reason"] == "schema_violation" and line["size"] == len(value) and "MSG_SIZE_TOO_LARGE" in line["delivery_error"]
    assert (Path(settings.offline_root) / line["payload_path"]).read_bytes() == value

"""Failures that must not lose or double anything: Redis crashing mid-run."""

from __future__ import annotations

import datetime as dt
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import redis
from confluent_kafka import Consumer, TopicPartition

from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.demo import payment_events, produce_records
from featurestore.embedded import start_redis
from featurestore.errors import ConfigError
from featurestore.online.entity_value import unpack_value
from featurestore.online.keys import project_key
from featurestore.registry import FileRegistry
from featurestore.runtime import StreamProcessor
from featurestore.runtime.kafka import ensure_topics, producer_config

pytestmark = pytest.mark.integration


def committed(settings: Any, topic: str, partitions: int) -> int:
    c = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": settings.consumer_group})
    got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=15)
    c.close()
    return sum(max(tp.offset, 0) for tp in got)


def online_state(client: redis.Redis, project: str) -> dict[bytes, dict[int, bytes]]:
    """Every entity's states by source partition, keyed without the project prefix. An entity's states are a
    function of the events applied to it (tiles no read reaches are always trimmed, sums
    canonical, tiles sorted), so runs that applied the same events compare byte for byte,
    however their batches fell."""
    prefix, marker = f"fs:{project}:".encode(), project_key(project).encode()
    return {k[len(prefix):]: dict(unpack_value(client.get(k) or b"", k.decode()))
            for k in client.scan_iter(prefix + b"*") if k != marker}


def assert_same_state(got: dict[bytes, dict[int, bytes]], want: dict[bytes, dict[int, bytes]]) -> None:
    """Byte-for-byte equal online states: tile sums are exact, so they do not depend on how
    batches grouped the additions (compare states read with the plan: see online_state)."""
    assert got.keys() == want.keys()
    for key, fields in got.items():
        assert fields.keys() == want[key].keys(), key
        for name, value in fields.items():
            assert value == want[key][name], f"{key!r} {name!r}: {value!r} != {want[key][name]!r}"


def history_rows(root: Path, view: str) -> list[tuple[Any, ...]]:
    """History rows as tuples (partition, offset, every other column but _processed_at), sorted."""
    table = pads.dataset(root / view, format="parquet", partitioning="hive").to_table()
    rest = [c for c in table.column_names if c not in ("_partition", "_offset", "_processed_at")]
    columns = [table["_partition"].to_pylist(), table["_offset"].to_pylist()] + [table[c].to_pylist() for c in rest]
    return sorted(zip(*columns))


def test_redis_crash_mid_run_is_retried_with_exactly_once_effect(example_repo: Path, overrides: dict, tmp_path: Path) -> None:
    # This test owns its Redis (it kills it); it persists to an fsynced AOF like a production Redis.
    data_dir = tmp_path / "redis-data"
    redis_service = start_redis(log_dir=tmp_path, persist_dir=data_dir)
    crashed = dict(overrides, redis_url=f"redis://{redis_service.address}/0", batch_size=150, max_retry_backoff_s=0.5)
    settings = load_settings(example_repo, **crashed)
    plan = compile_repo(example_repo)
    FileRegistry(settings.registry_root).apply(plan)
    topic = plan.source("payments").topic
    ensure_topics(settings, [topic], partitions=2)
    records = payment_events(2500, end=dt.datetime.now(dt.timezone.utc), seed=9)
    produce_records(producer_config(settings), topic, records)

    processor = StreamProcessor(plan, settings)
    killed = threading.Event()

    def crash_redis_after_third_batch(stats: Any) -> None:
        if stats.batches == 3 and not killed.is_set():
            import os

            os.kill(redis_service.pid, signal.SIGKILL)
            killed.set()

    result: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: result.update(stats=processor.run(
        until_caught_up=True, on_batch=crash_redis_after_third_batch)))
    worker.start()
    deadline = time.monotonic() + 60
    while processor.stats.retries == 0 and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)  # polls a condition: the processor has noticed the outage
    assert killed.is_set() and processor.stats.retries > 0, "the processor did not retry"
    restarted = start_redis(port=redis_service.port, log_dir=tmp_path, persist_dir=data_dir)
    try:
        worker.join(timeout=120)
        assert not worker.is_alive()
        stats = result["stats"]
        assert stats.records == len(records)
        assert committed(settings, topic, 2) == len(records)

        # the reference: the same records through an uninterrupted processor, into another namespace
        clean = load_settings(example_repo, **dict(crashed, project=f"{overrides['project']}-ref",
                                                   consumer_group=f"{overrides['consumer_group']}-ref",
                                                   offline_path=tmp_path / "offline-ref"))
        StreamProcessor(plan, clean).run(until_caught_up=True)
        client = redis.Redis.from_url(settings.redis_url)
        assert_same_state(online_state(client, settings.project), online_state(client, clean.project))
        for view in ("user_payments", "merchant_payments"):
            assert history_rows(Path(settings.offline_root), view) == history_rows(Path(clean.offline_root), view)
    finally:
        restarted.stop()


def test_redis_restarted_empty_then_rebuild_online(example_repo: Path, overrides: dict, tmp_path: Path, services) -> None:
    import os
    import subprocess
    import sys

    from featurestore import FeatureStore

    redis_service = start_redis(log_dir=tmp_path)  # in memory: a restart loses everything
    crashed = dict(overrides, redis_url=f"redis://{redis_service.address}/0", batch_size=150, max_retry_backoff_s=0.5)
    settings = load_settings(example_repo, **crashed)
    plan = compile_repo(example_repo)
    FileRegistry(settings.registry_root).apply(plan)
    topic = plan.source("payments").topic
    ensure_topics(settings, [topic], partitions=2)
    end = dt.datetime.now(dt.timezone.utc)
    records = payment_events(2000, end=end, seed=4)
    produce_records(producer_config(settings), topic, records)

    processor = StreamProcessor(plan, settings)
    killed = threading.Event()

    def lose_redis_after_third_batch(stats: Any) -> None:
        if stats.batches == 3 and not killed.is_set():
            os.kill(redis_service.pid, signal.SIGKILL)
            killed.set()

    worker = threading.Thread(target=lambda: processor.run(until_caught_up=True, on_batch=lose_redis_after_third_batch))
    worker.start()
    deadline = time.monotonic() + 60
    while processor.stats.retries == 0 and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)  # polls a condition: the processor has noticed the outage
    restarted = start_redis(port=redis_service.port, log_dir=tmp_path)  # empty
    try:
        worker.join(timeout=120)
        assert not worker.is_alive() and processor.stats.retries > 0

        reference = load_settings(example_repo, **dict(crashed, project=f"{overrides['project']}-ref",
                                                       consumer_group=f"{overrides['consumer_group']}-ref",
                                                       offline_path=tmp_path / "offline-ref"))
        StreamProcessor(plan, reference).run(until_caught_up=True)
        users = sorted({r.event["user_id"] for r in records if r.event})
        feats = [f"user_payments:{f}" for f in plan.view("user_payments").feature_names]

        def values(s: Any) -> dict[str, list[Any]]:
            return FeatureStore(example_repo, settings=s).get_online_features(
                feats, [{"user_id": u} for u in users], at=end).to_dict()

        def same(a: dict[str, list[Any]], b: dict[str, list[Any]]) -> bool:
            # sums may differ in the last bits: batches group additions differently
            return a.keys() == b.keys() and all(
                x == pytest.approx(y, rel=1e-12) if isinstance(x, float) and isinstance(y, float) else x == y
                for k in a for x, y in zip(a[k], b[k], strict=True)
            )

        # the processor writes an entity's whole state each time (from its cache), so every entity
        # with events after the restart is whole again; lose everything once more, then repair
        want = values(reference)
        restarted.stop()
        restarted = start_redis(port=redis_service.port, log_dir=tmp_path)
        with pytest.raises(ConfigError, match="holds no online data of project"):  # lost: the SDK says so
            values(settings)

        env = {**os.environ, **services.env(), "FEATURESTORE_REDIS_URL": settings.redis_url,
               "FEATURESTORE_KAFKA_OPTIONS": json.dumps(overrides["kafka_options"])}
        for name in ("project", "consumer_group", "registry_path", "offline_path"):
            env[f"FEATURESTORE_{name.upper()}"] = str(crashed[name])
        res = subprocess.run([sys.executable, "-m", "featurestore", "rebuild-online", "--repo", str(example_repo)],
                             env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        assert "Check: online equals offline" in res.stdout
        assert same(values(settings), want)
    finally:
        restarted.stop()


def test_disk_full_during_a_history_flush_is_retried(example_repo: Path, overrides: dict, monkeypatch) -> None:
    import errno


    settings = load_settings(example_repo, **dict(overrides, max_retry_backoff_s=0.2))
    plan = compile_repo(example_repo)
    FileRegistry(settings.registry_root).apply(plan)
    topic = plan.source("payments").topic
    ensure_topics(settings, [topic], partitions=2)
    records = payment_events(1200, end=dt.datetime.now(dt.timezone.utc), malformed_fraction=0.0, seed=12)
    produce_records(producer_config(settings), topic, records)

    real_write = pq.write_table
    failures = {"left": 3}

    def full_disk(table: Any, where: Any, **kwargs: Any) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            Path(where).write_bytes(b"partial")  # a half-written staged file, as a full disk leaves
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(table, where, **kwargs)

    monkeypatch.setattr(pq, "write_table", full_disk)
    processor = StreamProcessor(plan, settings)
    stats = processor.run(until_caught_up=True)
    assert stats.retries >= 3 and "No space left" in stats.last_error
    assert stats.records == len(records)
    assert committed(settings, topic, 2) == len(records)
    rows = history_rows(Path(settings.offline_root), "user_payments")
    assert sorted((r[0], r[1]) for r in rows) == sorted({(r[0], r[1]) for r in rows}) and len(rows) == len(records)
    assert not list(Path(settings.offline_root).rglob(".*.staged")), "failed attempts leave no staged files"

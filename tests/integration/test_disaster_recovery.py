"""Redis losing writes while processors run: restarted from an older snapshot, or flushed; the
running processor notices at its next checkpoint and repairs the online store from the
history by itself, so online equals offline again, nothing counted twice."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from featurestore import FeatureStore
from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.demo import payment_events, produce_records
from featurestore.embedded import start_broker, start_redis
from featurestore.embedded.services import free_port, start_sentinel
from featurestore.errors import FeatureStoreError
from featurestore.online.keys import project_key, repairs_field
from featurestore.registry import FileRegistry
from featurestore.runtime import run_following
from featurestore.runtime.kafka import ensure_topics, producer_config
from tests.integration.server_harness import wait_for
from tests.integration.tcp_proxy import TcpProxy
from tests.unit.test_cli import cli

pytestmark = pytest.mark.integration

USERS = 300
CLEAN: dict[str, Any] = {"late_fraction": 0.0, "malformed_fraction": 0.0, "users": USERS}
"""Payments without late or malformed ones, of USERS users."""
OUTAGE_S = 30


def _counts(store: FeatureStore, rows: list[dict[str, Any]]) -> int:
    """Events counted online over all users (the lifetime count: every event once), -1 before any write."""
    try:
        return sum(v or 0 for v in store.get_online_features(["user_payments:amount_count_lifetime"], rows)
                   .column("amount_count_lifetime"))
    except FeatureStoreError:  # nothing written yet, or Redis down
        return -1


def _marked(client: redis.Redis, project: str) -> int:
    """Records of the topic marked as held by Redis for user_payments (over its partitions)."""
    return sum(int(v) for k, v in client.hgetall(project_key(project)).items() if k.startswith(b"applied|user_payments|"))


def _setup(example_repo: Path, overrides: dict[str, Any], seed: int, sizes: tuple[int, int],
           **settings_overrides: Any) -> tuple[Any, Any, str, dt.datetime, list[Any], list[Any]]:
    """Settings, the applied example plan, its topic (2 partitions), and two clean batches of
    payments of USERS users: the first 20 to 40 minutes ago, the second in the last 20."""
    settings = load_settings(example_repo, **{**overrides, **settings_overrides})
    plan = compile_repo(example_repo)
    FileRegistry(settings.registry_root).apply(plan)
    topic = plan.source("payments").topic
    ensure_topics(settings, [topic], partitions=2)
    end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=30)
    first = payment_events(sizes[0], end=end - dt.timedelta(minutes=20), span=dt.timedelta(minutes=20), seed=seed, **CLEAN)
    second = payment_events(sizes[1], end=end, span=dt.timedelta(minutes=20), seed=seed + 1, **CLEAN)
    return settings, plan, topic, end, first, second


@pytest.mark.parametrize("loss", ["older_snapshot", "flushall"])
def test_redis_data_loss_is_repaired_by_the_running_processor(example_repo: Path, services: Any, overrides: dict[str, Any],
                                                                tmp_path: Path, loss: str) -> None:
    port = free_port()
    data_dir = tmp_path / "redis-data"
    args = ("--dir", str(data_dir))
    data_dir.mkdir()
    server = start_redis(port, tmp_path, extra_args=args)
    settings, plan, topic, end, first, second = _setup(example_repo, overrides, 51, (1500, 1500),
                                                       redis_url=f"redis://127.0.0.1:{port}/0")
    rows = [{"user_id": u} for u in range(1, USERS + 1)]
    client = redis.Redis(port=port)
    stop = threading.Event()
    processor = threading.Thread(target=run_following, args=(plan, settings, stop), daemon=True)
    processor.start()
    store = FeatureStore(example_repo, settings=settings)
    try:
        produce_records(producer_config(settings), topic, first)
        wait_for(lambda: _counts(store, rows) == len(first), 60, "the first events online")
        wait_for(lambda: _marked(client, settings.project) == len(first), 30, "a checkpoint marking them")
        client.save()  # the snapshot Redis will come back from

        produce_records(producer_config(settings), topic, second)
        total = len(first) + len(second)
        wait_for(lambda: _counts(store, rows) == total, 60, "the second events online")
        wait_for(lambda: _marked(client, settings.project) == total, 30, "a checkpoint marking them")

        if loss == "older_snapshot":  # killed, and back from the snapshot: the second events are gone
            os.kill(server.pid, signal.SIGKILL)
            os.waitpid(server.pid, 0)
            server = start_redis(port, tmp_path, extra_args=args)
            client = redis.Redis(port=port)
        else:
            client.flushall()
        # no command from anyone: the processor notices at its next checkpoint and repairs
        lost_at = time.monotonic()
        wait_for(lambda: _counts(store, rows) == total, 60, "the online store repaired by the processor")
        print(f"{loss}: repaired {time.monotonic() - lost_at:.1f} s after the loss")
        assert int(client.hget(project_key(settings.project), repairs_field("user_payments")) or 0) >= 1
        wait_for(lambda: store.check_consistency(sample=100).mismatches == 0, 60, "online to equal offline in every view")
        env = {**services.env(), "FEATURESTORE_REDIS_URL": settings.redis_url, "FEATURESTORE_PROJECT": settings.project,
               "FEATURESTORE_CONSUMER_GROUP": settings.consumer_group, "FEATURESTORE_REGISTRY_PATH": str(settings.registry_root),
               "FEATURESTORE_OFFLINE_PATH": str(settings.offline_root)}
        shown = cli("status", "--json", "--repo", str(example_repo), env=env)
        assert shown.returncode == 0, shown.stderr
        views = {v["view"]: v for v in json.loads(shown.stdout)["views"]}
        assert views["user_payments"]["repairs"] >= 1 and views["merchant_payments"]["repairs"] >= 1

        # later events are applied on top, once
        third = payment_events(500, end=end, span=dt.timedelta(minutes=5), seed=53, **CLEAN)
        produce_records(producer_config(settings), topic, third)
        wait_for(lambda: _counts(store, rows) == total + len(third), 60, "later events online")
    finally:
        stop.set()
        processor.join(60)
        store.close()
        client.close()
        server.stop()
    assert not processor.is_alive()


def test_a_primary_killed_mid_stream_fails_over_through_sentinel(example_repo: Path, services: Any,
                                                                 overrides: dict[str, Any], tmp_path: Path) -> None:
    primary = start_redis(log_dir=tmp_path)
    replica = start_redis(log_dir=tmp_path, extra_args=("--replicaof", "127.0.0.1", str(primary.port)))
    sentinel = start_sentinel(primary.port, log_dir=tmp_path)
    watcher = redis.Redis(port=sentinel.port)
    try:
        wait_for(lambda: redis.Redis(port=replica.port).info("replication").get("master_link_status") == "up", 30,
                 "the replica to follow the primary")
        wait_for(lambda: watcher.execute_command("SENTINEL", "REPLICAS", "mymaster"), 30, "the sentinel to see the replica")
        settings, plan, topic, end, first, second = _setup(
            example_repo, overrides, 61, (1500, 3000), redis_url=f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster")
        rows = [{"user_id": u} for u in range(1, USERS + 1)]
        stop = threading.Event()
        processor = threading.Thread(target=run_following, args=(plan, settings, stop), daemon=True)
        processor.start()
        store = FeatureStore(example_repo, settings=settings)
        try:
            produce_records(producer_config(settings), topic, first)
            wait_for(lambda: _counts(store, rows) == len(first), 60, "the first events online")
            produce_records(producer_config(settings), topic, second)
            os.kill(primary.pid, signal.SIGKILL)  # mid-stream: the processor is applying the second events
            total = len(first) + len(second)
            killed_at = time.monotonic()
            wait_for(lambda: _counts(store, rows) == total, 120, "every event online once, on the new primary")
            print(f"failover: every event online {time.monotonic() - killed_at:.1f} s after the primary was killed")
            assert redis.Redis(port=replica.port).execute_command("ROLE")[0] == b"master"
            wait_for(lambda: store.check_consistency(sample=100).mismatches == 0, 60, "online to equal offline in every view")
        finally:
            stop.set()
            processor.join(60)
            store.close()
        assert not processor.is_alive()
    finally:
        watcher.close()
        for service in (sentinel, replica, primary):
            service.stop()


def test_the_processor_survives_a_broker_outage_and_reads_go_on(example_repo: Path, services: Any, overrides: dict[str, Any],
                                                                tmp_path: Path) -> None:
    broker_port, proxy_port = free_port(), free_port()
    proxy = TcpProxy(proxy_port, broker_port)
    broker = start_broker(broker_port, tmp_path, advertised_port=proxy_port)  # clients only ever reach it through the proxy
    try:
        # small batches: the processor is far from done when the broker goes
        settings, plan, topic, end, first, second = _setup(
            example_repo, overrides, 71, (1500, 60_000), kafka_bootstrap_servers=f"127.0.0.1:{proxy_port}", batch_size=200)
        rows = [{"user_id": u} for u in range(1, USERS + 1)]
        produce_records(producer_config(settings), topic, first + second)  # all there before the processor starts
        total = len(first) + len(second)
        stop = threading.Event()
        processor = threading.Thread(target=run_following, args=(plan, settings, stop), daemon=True)
        processor.start()
        store = FeatureStore(example_repo, settings=settings)
        try:
            wait_for(lambda: _counts(store, rows) >= len(first), 60, "the processor under way")
            at_cut = _counts(store, rows)
            proxy.cut()  # the broker is unreachable for 30 s, mid-stream
            outage = time.monotonic()
            # events produced meanwhile wait in the producer until the broker is back
            third = payment_events(2000, end=end, span=dt.timedelta(minutes=5), seed=73, **CLEAN)
            late_producer = threading.Thread(target=produce_records, args=(producer_config(settings), topic, third))
            late_producer.start()
            served = 0
            while time.monotonic() - outage < OUTAGE_S:
                answer = store.get_online_features(["user_payments:amount_count_lifetime"], rows,
                                                   max_staleness=dt.timedelta(seconds=5))
                assert len(answer.column("amount_count_lifetime")) == USERS  # reads go on, from Redis
                served += 1
                time.sleep(0.5)  # a client reading at 2 requests/s during the outage
            assert served >= OUTAGE_S
            statuses = set(answer.status("amount_count_lifetime"))
            assert statuses <= {"stale", "not_found"}, statuses  # events are older than 5 s: stale, as documented
            assert at_cut < total, "the outage came mid-stream"
            assert _counts(store, rows) <= total, "nothing produced during the outage reached the processor"
            proxy.restore()
            back_at = time.monotonic()
            late_producer.join(120)
            total += len(third)
            wait_for(lambda: _counts(store, rows) == total, 120, "every event online once after the outage")
            print(f"broker outage: every event online {time.monotonic() - back_at:.1f} s after the broker came back")
            wait_for(lambda: store.check_consistency(sample=100).mismatches == 0, 60, "online to equal offline")
        finally:
            stop.set()
            processor.join(60)
            store.close()
        assert not processor.is_alive()
    finally:
        proxy.close()
        broker.stop()

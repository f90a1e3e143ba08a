"""Kill the processor with SIGKILL at random points and at the dangerous ones, restart it
each time, and check that every event took effect exactly once, online and offline."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.demo.events import DemoEvent, produce_records
from featurestore.demo.sequenced import sequenced_events, write_sequenced_repo
from featurestore.registry import FileRegistry
from featurestore.runtime import StreamProcessor
from featurestore.runtime.kafka import ensure_topics, producer_config
from tests.crash_loop import crash_loop

from .test_failures import assert_same_state, committed, history_rows, online_state

pytestmark = pytest.mark.integration

N_EVENTS = 100_000
PARTITIONS = 3
def check_exactly_once(client: redis.Redis, settings, records: list[DemoEvent], plan, view: str):
    """Each user's events counted once and in order, and each record once in the history
    (the entity's states decoded: the count and exact sum of its `seq` tiles, its newest row)."""
    from featurestore.online.layout import tile_sets
    from featurestore.online.packed import columns, decode_rows
    from featurestore.online.state import StateCodec, decode_state

    expected: dict[int, int] = {}
    for r in records:
        assert r.event is not None
        expected[r.event["user_id"]] = r.event["seq"]
    state = online_state(client, settings.project)
    assert len(state) == len(expected)
    sets = tile_sets(plan.view(view))
    k = next(i for i, ts in enumerate(sets) if ts.column == "seq")
    cols = columns(sets[k].packed)
    for user, n in expected.items():
        parts = [decode_state(v, StateCodec.of(sets)) for v in state[f"{view}:{user}".encode()].values()]
        assert len(parts) == 1, "a user's events come from one partition"
        tiles = decode_rows(parts[0].packed[k], sets[k].packed)
        counts = int(tiles[:, cols["c"]].sum())
        sums = math.fsum(tiles[:, cols["s"] : cols["s"] + 2].ravel().tolist())
        assert counts == n and sums == n * (n + 1) / 2, f"user {user}: count {counts}, sum {sums}, expected n={n}"
        assert parts[0].row == [n]
    rows = history_rows(Path(settings.offline_root), view)
    coords = [(r[0], r[1]) for r in rows]
    assert len(coords) == len(set(coords)) == len(records), "no duplicate and no missing history row"
    return state, rows


def test_sigkill_at_random_and_dangerous_points(tmp_path: Path, services, overrides: dict, run_id: str) -> None:
    topic = f"txns-{run_id}"
    repo = write_sequenced_repo(tmp_path / "repo", topic)
    overrides = dict(overrides, batch_size=4000, checkpoint_interval_s=0.3)
    settings = load_settings(repo, **overrides)
    plan = compile_repo(repo)
    FileRegistry(settings.registry_root).apply(plan)
    ensure_topics(settings, [topic], partitions=PARTITIONS)
    records = sequenced_events(N_EVENTS, dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1))
    produce_records(producer_config(settings), topic, records)

    env = {**os.environ, **services.env(), "FEATURESTORE_KAFKA_OPTIONS": json.dumps(overrides["kafka_options"])}
    for name in ("project", "consumer_group", "registry_path", "offline_path", "batch_size", "checkpoint_interval_s"):
        env[f"FEATURESTORE_{name.upper()}"] = str(overrides[name])
    cmd = [sys.executable, "-m", "featurestore", "run", "--until-caught-up", "--repo", str(repo)]
    # the two dangerous points first; then alternately random moments and random fault points
    counts = crash_loop(cmd, env, kills=12, seed=7, dangerous=("after_online_write:2", "after_history_staged:1"),
                        random_time=(3.5, 8.0))
    kills = sum(counts.values())
    assert counts.get("random time", 0) >= 5
    assert kills >= 10, f"only {kills} runs were killed"
    assert committed(settings, topic, PARTITIONS) == N_EVENTS

    client = redis.Redis.from_url(settings.redis_url)
    state, rows = check_exactly_once(client, settings, records, plan, "user_txns")
    # and identical to an uninterrupted run
    clean = load_settings(repo, **dict(overrides, project=f"{overrides['project']}-ref",
                                       consumer_group=f"{overrides['consumer_group']}-ref",
                                       offline_path=tmp_path / "offline-ref", batch_size=20_000))
    StreamProcessor(plan, clean).run(until_caught_up=True)
    assert_same_state(state, online_state(client, clean.project))
    assert rows == history_rows(Path(clean.offline_root), "user_txns")
    for key in client.scan_iter(f"fs:{settings.project}*"):
        client.delete(key)
    for key in client.scan_iter(f"fs:{clean.project}*"):
        client.delete(key)


def test_rebalances_while_one_of_two_processors_keeps_dying(tmp_path: Path, services, overrides: dict, run_id: str) -> None:
    """Two processors share a group; one is killed again and again mid-batch and restarted,
    so partitions move back and forth while events keep arriving."""
    import signal
    import time

    topic = f"txns-{run_id}"
    repo = write_sequenced_repo(tmp_path / "repo", topic)
    overrides = dict(overrides, batch_size=500, checkpoint_interval_s=0.3)
    settings = load_settings(repo, **overrides)
    plan = compile_repo(repo)
    FileRegistry(settings.registry_root).apply(plan)
    partitions = 4
    ensure_topics(settings, [topic], partitions=partitions)
    records = sequenced_events(24_000, dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1))
    env = {**os.environ, **services.env(), "FEATURESTORE_KAFKA_OPTIONS": json.dumps(overrides["kafka_options"])}
    for name in ("project", "consumer_group", "registry_path", "offline_path", "batch_size", "checkpoint_interval_s"):
        env[f"FEATURESTORE_{name.upper()}"] = str(overrides[name])
    cmd = [sys.executable, "-m", "featurestore", "run", "--repo", str(repo)]
    rnd = random.Random(11)
    logs: list[Path] = []

    def start(fault: str = "") -> subprocess.Popen[str]:
        # stderr goes to a file: a pipe nobody reads would block a long-lived processor once full
        logs.append(tmp_path / f"processor-{len(logs)}.log")
        with logs[-1].open("w") as log:
            return subprocess.Popen(cmd, env=dict(env, FEATURESTORE_FAULT=fault), stdout=subprocess.DEVNULL,
                                    stderr=log, text=True)

    def tails() -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in (logs[0], logs[-1]))

    survivor = start()
    victim = start(f"after_online_write:{rnd.randint(1, 3)}")
    kills = 0
    try:
        produced = 0
        waves = 8
        for wave in range(waves):
            chunk = records[wave * len(records) // waves:(wave + 1) * len(records) // waves]
            produce_records(producer_config(settings), topic, chunk)
            produced += len(chunk)
            deadline = time.monotonic() + 120
            while committed(settings, topic, partitions) < produced and time.monotonic() < deadline:
                if victim.poll() is not None:
                    assert victim.returncode == -signal.SIGKILL, tails()
                    kills += 1
                    victim = start(f"{rnd.choice(['after_online_write', 'after_history_staged', 'before_offset_commit'])}:"
                                   f"{rnd.randint(1, 3)}")
                time.sleep(0.2)  # polls a condition: everything produced so far is committed
            assert committed(settings, topic, partitions) == produced, f"wave {wave} was not processed\n{tails()}"
        for proc in (survivor, victim):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in (survivor, victim):
            proc.wait(timeout=60)
    finally:  # a failed test leaves no processor behind
        for proc in (survivor, victim):
            if proc.poll() is None:
                proc.kill()
    assert survivor.returncode == 0
    assert kills >= 3, f"the victim died only {kills} times"
    client = redis.Redis.from_url(settings.redis_url)
    check_exactly_once(client, settings, records, plan, "user_txns")
    for key in client.scan_iter(f"fs:{settings.project}*"):
        client.delete(key)


def test_every_batch_delivered_twice_plus_a_zombie(tmp_path: Path, overrides: dict, run_id: str) -> None:
    """The processor writes each batch twice, and a stale batch again at the end (as a
    zombie former owner would): the result equals a single, clean delivery."""
    from featurestore.records import ViewRows
    from featurestore.runtime.decode import DeadLetter

    class TwiceAndAZombie(StreamProcessor):
        first: list[ViewRows] | None = None
        background = 0
        commit_threads: set[str] = set()

        def _commit_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
            self.commit_threads.add(threading.current_thread().name)
            super()._commit_offsets(offsets)

        def _write(self, batches: list[ViewRows], dead: list[DeadLetter]) -> None:
            super()._write(batches, dead)
            super()._write(batches, [])
            if self.first is None:
                self.first = batches

        def checkpoint(self) -> None:
            if self.first is not None:
                super()._write(self.first, [])  # the zombie: an old batch, once more
            super().checkpoint()

        def _checkpoint_in_background(self) -> None:
            self.background += 1
            if self.first is not None:
                super()._write(self.first, [])
            super()._checkpoint_in_background()

    topic = f"txns-{run_id}"
    repo = write_sequenced_repo(tmp_path / "repo", topic)
    settings = load_settings(repo, **dict(overrides, batch_size=700, checkpoint_interval_s=0.02))
    plan = compile_repo(repo)
    FileRegistry(settings.registry_root).apply(plan)
    ensure_topics(settings, [topic], partitions=3)
    records = sequenced_events(6_000, dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1))
    produce_records(producer_config(settings), topic, records)
    processor = TwiceAndAZombie(plan, settings)
    processor.run(until_caught_up=True)
    assert processor.online.groups_skipped > 0 and processor.history.rows_skipped > 0
    # background checkpoints ran, and offsets were committed only by the consumer's own thread
    # (a commit from the checkpoint worker deadlocked against a rebalance callback)
    assert processor.background > 0
    assert processor.commit_threads == {threading.current_thread().name}
    client = redis.Redis.from_url(settings.redis_url)
    state, rows = check_exactly_once(client, settings, records, plan, "user_txns")
    clean = load_settings(repo, **dict(overrides, project=f"{overrides['project']}-ref",
                                       consumer_group=f"{overrides['consumer_group']}-ref",
                                       offline_path=tmp_path / "offline-ref"))
    StreamProcessor(plan, clean).run(until_caught_up=True)
    assert_same_state(state, online_state(client, clean.project))
    assert rows == history_rows(Path(clean.offline_root), "user_txns")

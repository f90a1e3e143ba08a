"""Kill the processor with SIGKILL at random points and at the dangerous ones, restart it
each time, and check that every event took effect exactly once, online and offline."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis

from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.demo.events import DemoEvent, produce_records
from featurestore.faults import POINTS
from featurestore.registry import FileRegistry
from featurestore.runtime import StreamProcessor
from featurestore.runtime.kafka import ensure_topics, producer_config

from .test_failures import committed, history_rows, online_state

pytestmark = pytest.mark.integration

N_EVENTS = 100_000
N_USERS = 2_000
PARTITIONS = 3
REPO = '''
from datetime import timedelta
from pydantic import AwareDatetime, BaseModel
from featurestore import Aggregation, Entity, FeatureView, Field, KafkaSource

class Txn(BaseModel):
    user_id: int
    seq: int
    amount: float
    ts: AwareDatetime

user = Entity("user", join_keys=["user_id"])
txns = KafkaSource("txns", topic="TOPIC", schema=Txn, timestamp_field="ts")
user_txns = FeatureView("user_txns", entities=[user], source=txns, features=[
    Aggregation("seq", "count", windows=[timedelta(days=30)]),
    Aggregation("seq", "sum", windows=[timedelta(days=30)]),
    Aggregation("seq", "max", windows=[timedelta(days=30)]),
    Aggregation("amount", "sum", windows=[timedelta(hours=1)]),
    Field("seq", name="last_seq"),
])
'''


def _events(end: dt.datetime) -> list[DemoEvent]:
    rnd = random.Random(2024)
    seq: dict[int, int] = {}
    out = []
    start_ms = int(end.timestamp() * 1000) - 10 * 86_400_000
    for i in range(N_EVENTS):
        user = rnd.randrange(N_USERS)
        seq[user] = seq.get(user, 0) + 1
        ts = dt.datetime.fromtimestamp((start_ms + i * 8_640) / 1000, dt.timezone.utc)
        event = {"user_id": user, "seq": seq[user], "amount": round(rnd.uniform(1, 100), 2), "ts": ts.isoformat()}
        out.append(DemoEvent(str(user).encode(), orjson.dumps(event), event))
    return out


def test_sigkill_at_random_and_dangerous_points(tmp_path: Path, services, overrides: dict, run_id: str) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    topic = f"txns-{run_id}"
    (repo / "defs.py").write_text(REPO.replace("TOPIC", topic))
    overrides = dict(overrides, batch_size=4000, checkpoint_interval_s=0.3)
    settings = load_settings(repo, **overrides)
    plan = compile_repo(repo)
    FileRegistry(settings.registry_root).apply(plan)
    ensure_topics(settings, [topic], partitions=PARTITIONS)
    records = _events(dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1))
    produce_records(producer_config(settings), topic, records)

    env = {**os.environ, **services.env(), "FEATURESTORE_KAFKA_OPTIONS": json.dumps(overrides["kafka_options"])}
    for name in ("project", "consumer_group", "registry_path", "offline_path", "batch_size", "checkpoint_interval_s"):
        env[f"FEATURESTORE_{name.upper()}"] = str(overrides[name])
    rnd = random.Random(7)
    # the two dangerous points first, then random points at random occurrences
    faults = ["after_online_write:2", "after_history_staged:1"] + [
        f"{rnd.choice(POINTS)}:{rnd.randint(1, 4)}" for _ in range(10)
    ]
    kills = 0
    for fault in faults + [""]:
        run_env = dict(env, FEATURESTORE_FAULT=fault) if fault else env
        res = subprocess.run([sys.executable, "-m", "featurestore", "run", "--until-caught-up", "--repo", str(repo)],
                             env=run_env, capture_output=True, text=True, timeout=300)
        if res.returncode == -9:
            kills += 1
        else:
            assert res.returncode == 0, f"run with FEATURESTORE_FAULT={fault!r} failed: {res.stderr[-2000:]}"
            if not fault:
                break
    assert kills >= 10, f"only {kills} runs were killed"
    assert committed(settings, topic, PARTITIONS) == N_EVENTS

    # absolute checks: each user's events counted once, in order, nothing missing
    client = redis.Redis.from_url(settings.redis_url)
    expected: dict[int, int] = {}
    for r in records:
        expected[r.event["user_id"]] = r.event["seq"]
    state = online_state(client, settings.project)
    assert len(state) == len(expected)
    for user, n in expected.items():
        fields = state[f"user_txns:{user}".encode()]
        counts = sum(int(v) for k, v in fields.items() if k.startswith(b"seq|") and k.endswith(b"|c"))
        sums = sum(float(v) for k, v in fields.items() if k.startswith(b"seq|") and k.endswith(b"|s"))
        assert counts == n and sums == n * (n + 1) / 2, f"user {user}: count {counts}, sum {sums}, expected n={n}"
        assert fields[b"r:last_seq"] == str(n).encode()
    rows = history_rows(Path(settings.offline_root), "user_txns")
    coords = [(r[0], r[1]) for r in rows]
    assert len(coords) == len(set(coords)) == N_EVENTS, "no duplicate and no missing history row"

    # and identical to an uninterrupted run
    clean = load_settings(repo, **dict(overrides, project=f"{overrides['project']}-ref",
                                       consumer_group=f"{overrides['consumer_group']}-ref",
                                       offline_path=tmp_path / "offline-ref", batch_size=20_000))
    StreamProcessor(plan, clean).run(until_caught_up=True)
    assert state == online_state(client, clean.project)
    assert rows == history_rows(Path(clean.offline_root), "user_txns")
    for key in client.scan_iter(f"fs:{settings.project}*"):
        client.delete(key)
    for key in client.scan_iter(f"fs:{clean.project}*"):
        client.delete(key)

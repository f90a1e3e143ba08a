"""The Faust engine against the default engine on a real broker and Redis: the same stream
(out of order, late beyond the allowed lateness, malformed) gives identical online values
(each tile to the last bit), identical history (but processing time) and identical dead letters; and
SIGKILLs of the Faust worker at the dangerous points change nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.demo import payment_events, produce_records
from featurestore.demo.events import DemoEvent
from featurestore.demo.sequenced import sequenced_events, write_sequenced_repo
from featurestore.runtime.dead_letters import ERROR, SOURCE_OFFSET, SOURCE_PARTITION
from featurestore.runtime.kafka import ensure_topics, producer_config
from tests.conftest import FAST_GROUP, read_dead_letters
from tests.crash_loop import crash_loop
from tests.integration.test_failures import assert_same_state, history_rows, online_state
from tests.unit.test_cli import cli

pytestmark = pytest.mark.integration


def _engine_env(services: Any, name: str) -> dict[str, str]:
    return {
        **services.env(),
        "FEATURESTORE_PROJECT": name,
        "FEATURESTORE_CONSUMER_GROUP": name,
        "FEATURESTORE_KAFKA_OPTIONS": json.dumps(FAST_GROUP),
        "FEATURESTORE_CHECKPOINT_INTERVAL_S": "1",
    }


def _dead_letters(settings: Any, topic: str, expected: int) -> list[tuple[str, int, int, bytes]]:
    """(reason, source partition, source offset, value) of every dead letter (at least once: duplicates collapse)."""
    got = read_dead_letters(settings.kafka_bootstrap_servers, topic, expected)
    return sorted({(h[ERROR], int(h[SOURCE_PARTITION]), int(h[SOURCE_OFFSET]), value) for h, value in got})


def test_faust_engine_equals_the_default_engine(example_repo: Path, services: Any, run_id: str, tmp_path: Path) -> None:
    import shutil

    faust_repo = tmp_path / "faust_repo"
    shutil.copytree(example_repo, faust_repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    src = faust_repo / "sources.py"
    src.write_text(src.read_text().replace('    description="Card payments',
                                           f'    dead_letter_topic="payments-{run_id}.faust.dlq",\n    description="Card payments'))
    default_env, faust_env = _engine_env(services, f"def-{run_id}"), _engine_env(services, f"faust-{run_id}")
    assert cli("apply", "--repo", str(example_repo), env=default_env).returncode == 0
    assert cli("apply", "--repo", str(faust_repo), env=faust_env).returncode == 0
    plan = compile_repo(example_repo)
    source = plan.source("payments")
    assert compile_repo(faust_repo).source("payments").dead_letter_topic == f"payments-{run_id}.faust.dlq"

    settings = load_settings(example_repo, **{"kafka_bootstrap_servers": services.bootstrap_servers})
    ensure_topics(settings, [source.topic], partitions=3)
    end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    records = payment_events(6000, end=end, span=dt.timedelta(hours=3), users=60, merchants=12, seed=21,
                             late_fraction=0.05, malformed_fraction=0.01)
    # and some events later than the views' allowed lateness (1 h): dead letters `late`, history rows flagged
    rnd = random.Random(5)
    stale = []
    for i in range(40):
        event = {"payment_id": f"stale-{i}", "user_id": rnd.randrange(60), "merchant_id": f"m{rnd.randrange(12)}",
                 "amount": 12.5, "currency": "EUR", "country": "FR", "ts": (end - dt.timedelta(hours=2, minutes=i)).isoformat()}
        stale.append(DemoEvent(str(event["user_id"]).encode(), orjson.dumps(event), event))
    produce_records(producer_config(settings), source.topic, records + stale)

    ran_default = cli("run", "--until-caught-up", "--repo", str(example_repo), env=default_env)
    assert ran_default.returncode == 0, ran_default.stderr
    ran_faust = cli("run", "--engine", "faust", "--until-caught-up", "--repo", str(faust_repo), env=faust_env)
    assert ran_faust.returncode == 0, ran_faust.stderr
    done = re.findall(r"Done: .*", ran_default.stdout)
    assert done and done == re.findall(r"Done: .*", ran_faust.stdout), (ran_default.stdout, ran_faust.stdout)

    again = cli("run", "--engine", "faust", "--until-caught-up", "--repo", str(faust_repo), env=faust_env)
    assert again.returncode == 0 and "Done: 0 events applied" in again.stdout, "a group at the end is caught up at once"

    client = redis.Redis.from_url(services.redis_url)
    default_state = online_state(client, f"def-{run_id}")
    assert len(default_state) > 60
    assert_same_state(online_state(client, f"faust-{run_id}"), default_state)
    default_offline = example_repo / ".featurestore" / "offline"
    faust_offline = faust_repo / ".featurestore" / "offline"
    for view in plan.views:
        rows = history_rows(default_offline, view.name)
        assert rows and rows == history_rows(faust_offline, view.name), view.name
    default_dl = _dead_letters(settings, source.dead_letter_topic, 1)
    faust_dl = _dead_letters(settings, f"payments-{run_id}.faust.dlq", 1)
    assert default_dl == faust_dl
    reasons = {reason for reason, *_ in default_dl}
    assert {"late", "malformed_json"} <= reasons, reasons


def test_faust_engine_exactly_once_through_sigkills(tmp_path: Path, services: Any, run_id: str) -> None:
    """20,000 sequenced events; the Faust worker SIGKILLed 6 times (after the online write, after
    the history commit, before the acknowledgement, and at random moments); the result equals an
    uninterrupted default-engine run."""
    topic = f"txns-{run_id}"
    repo = write_sequenced_repo(tmp_path / "repo", topic)
    env = _engine_env(services, f"fk-{run_id}")
    assert cli("apply", "--repo", str(repo), env=env).returncode == 0
    settings = load_settings(repo, kafka_bootstrap_servers=services.bootstrap_servers)
    ensure_topics(settings, [topic], partitions=3)
    records = sequenced_events(20_000, dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1))
    produce_records(producer_config(settings), topic, records)
    cmd = [sys.executable, "-m", "featurestore", "run", "--engine", "faust", "--until-caught-up", "--repo", str(repo)]
    kills = crash_loop(cmd, {**os.environ, **env}, kills=6, seed=3,
                       dangerous=("after_online_write:3", "after_history_commit:1", "before_offset_commit:2"),
                       random_time=(3.0, 8.0), run_timeout=180)
    assert sum(kills.values()) >= 3, kills

    clean_repo = tmp_path / "clean"
    import shutil

    shutil.copytree(repo, clean_repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    clean_env = _engine_env(services, f"fk-clean-{run_id}")
    assert cli("apply", "--repo", str(clean_repo), env=clean_env).returncode == 0
    assert cli("run", "--until-caught-up", "--repo", str(clean_repo), env=clean_env).returncode == 0
    client = redis.Redis.from_url(services.redis_url)
    assert_same_state(online_state(client, f"fk-{run_id}"), online_state(client, f"fk-clean-{run_id}"))
    rows = history_rows(repo / ".featurestore" / "offline", "user_txns")
    assert len(rows) == 20_000 and len({(r[0], r[1]) for r in rows}) == 20_000, "each record exactly once in the history"
    assert rows == history_rows(clean_repo / ".featurestore" / "offline", "user_txns")

"""The CLI against real services: dev up/stop, run --until-caught-up, online, training-set."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis

from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.demo import payment_events, produce_records
from featurestore.online.reader import OnlineReader, ViewRequest
from featurestore.runtime.kafka import ensure_topics, producer_config
from tests.unit.test_cli import cli

pytestmark = pytest.mark.integration


def test_dev_starts_and_stops_exactly_its_services(tmp_path: Path) -> None:
    old_history = tmp_path / ".featurestore" / "offline" / "user_payments" / "_commits"
    old_history.mkdir(parents=True)
    res = cli("dev", "--detach", "--repo", str(tmp_path))
    assert res.returncode == 0, res.stderr
    # the previous services' history is kept aside: its offsets would hide the new topics' events
    assert not old_history.exists() and "Moved the history of the previous dev services" in res.stderr
    assert len(list((tmp_path / ".featurestore").glob("offline.before-*/user_payments/_commits"))) == 1
    exports = dict(line[len("export "):].split("=", 1) for line in res.stdout.splitlines() if line.startswith("export "))
    state = json.loads((tmp_path / ".featurestore" / "dev.json").read_text())
    pids = [state["broker"]["pid"], state["redis"]["pid"]]
    try:
        assert redis.Redis.from_url(exports["FEATURESTORE_REDIS_URL"]).ping()
        from confluent_kafka.admin import AdminClient

        AdminClient({"bootstrap.servers": exports["FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS"]}).list_topics(timeout=10)
        again = cli("dev", "--detach", "--repo", str(tmp_path))
        assert "Already running" in again.stderr
        # stdout holds only the exports: eval-able, and printed again by `dev env`
        assert all(line.startswith("export ") for line in again.stdout.splitlines())
        assert cli("dev", "env", "--repo", str(tmp_path)).stdout == res.stdout
    finally:
        stop = cli("dev", "stop", "--repo", str(tmp_path))
    assert stop.returncode == 0 and "Stopped" in stop.stdout
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or b"" == Path(f"/proc/{pid}/cmdline").read_bytes()
    assert "Nothing to stop" in cli("dev", "stop", "--repo", str(tmp_path)).stdout
    gone = cli("dev", "env", "--repo", str(tmp_path))
    assert gone.returncode == 1 and "no dev services started from" in gone.stderr and gone.stdout == ""


def test_cli_run_until_caught_up_then_read(example_repo: Path, services, overrides: dict, tmp_path: Path) -> None:
    env = {
        **services.env(),
        "FEATURESTORE_PROJECT": str(overrides["project"]),
        "FEATURESTORE_CONSUMER_GROUP": str(overrides["consumer_group"]),
        "FEATURESTORE_KAFKA_OPTIONS": json.dumps(overrides["kafka_options"]),
    }
    assert cli("apply", "--repo", str(example_repo), env=env).returncode == 0
    settings = load_settings(example_repo, **overrides)
    topic = compile_repo(example_repo).source("payments").topic
    ensure_topics(settings, [topic], partitions=2)
    end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    records = payment_events(1500, end=end, span=dt.timedelta(minutes=30), users=10, seed=5)
    produce_records(producer_config(settings), topic, records)

    res = cli("run", "--until-caught-up", "--repo", str(example_repo), env=env)
    assert res.returncode == 0, res.stderr
    valid = sum(1 for r in records if r.event)
    assert f"{valid:,} events applied" in res.stdout
    assert any(line.startswith("Done:") for line in res.stdout.splitlines()), "piped: the summary has a line of its own"

    user = next(r.event["user_id"] for r in reversed(records) if r.event)
    expected_count = sum(1 for r in records if r.event and r.event["user_id"] == user)
    out = cli("online", "-f", "user_payments:amount_count_1d", "-e", f"user_id={user}", "--repo", str(example_repo), env=env)
    assert out.returncode == 0, out.stderr
    assert str(expected_count) in out.stdout
    as_json = cli("online", "-f", "user_payments:amount_count_1d", "-e", f"user_id={user}", "--json", "--repo",
                  str(example_repo), env=env)
    assert json.loads(as_json.stdout)["amount_count_1d"] == [expected_count]

    entities = tmp_path / "entities.parquet"
    pd.DataFrame({"user_id": [user, user], "event_timestamp": [end - dt.timedelta(hours=1), end]}).to_parquet(entities)
    target = tmp_path / "train.parquet"
    res = cli("training-set", "--entities", str(entities), "-f", "user_payments:amount_count_1d",
              "-o", str(target), "--repo", str(example_repo), env=env)
    assert res.returncode == 0, res.stderr
    got = pd.read_parquet(target)["amount_count_1d"]
    assert got.isna().tolist() == [True, False], "an hour before the first event the user is unknown"
    assert got.iloc[1] == expected_count

    check = cli("consistency", "--sample", "5", "--repo", str(example_repo), env=env)
    assert check.returncode == 0, check.stderr
    assert "user_payments:amount_count_1d" in check.stdout and "0.00%" in check.stdout
    narrow = cli("consistency", "--sample", "5", "--repo", str(example_repo), env={**env, "COLUMNS": "80"})
    assert narrow.returncode == 0 and "…" not in narrow.stdout, "at 80 columns cells wrap, nothing is cut"
    checked = json.loads(cli("consistency", "--sample", "5", "--json", "--repo", str(example_repo), env=env).stdout)
    assert {f["feature"]: f["mismatches"] for f in checked["features"]}["user_payments:amount_count_1d"] == 0
    versions = json.loads(cli("registry", "list", "--json", "--repo", str(example_repo), env=env).stdout)
    assert versions[-1]["version"] >= 1 and "user_payments" in versions[-1]["views"]

    bad = cli("online", "-f", "user_payments:nope", "-e", "user_id=1", "--repo", str(example_repo), env=env)
    assert bad.returncode == 1 and "no feature 'nope'" in bad.stderr and "Traceback" not in bad.stderr

    # status without any processor metrics: newest event from Redis, lag from the broker
    status = cli("status", "--json", "--repo", str(example_repo), env=env)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    newest = max(int(dt.datetime.fromisoformat(r.event["ts"]).timestamp() * 1000) for r in records if r.event)
    assert {v["view"]: v["newest_event_ms"] for v in report["views"]}["user_payments"] == newest
    assert sum(p["committed"] for p in report["lag"]) == len(records) and len(report["lag"]) == 2
    assert report["dead_letters"] is None and "metrics_address" in report["metrics"]
    table = cli("status", "--repo", str(example_repo), env=env)
    assert table.returncode == 0 and "user_payments" in table.stdout and " ago" in table.stdout

    # another project on the same Redis holds nothing: reading it is refused, naming the URL
    other = {**env, "FEATURESTORE_PROJECT": f"{overrides['project']}-none"}
    empty = cli("online", "-f", "user_payments:amount_count_1d", "-e", "user_id=1", "--repo", str(example_repo), env=other)
    assert empty.returncode == 1 and "holds no online data of project" in empty.stderr
    assert services.redis_url.split("@")[-1].split("/")[2] in empty.stderr and "Traceback" not in empty.stderr
    allowed = cli("online", "-f", "user_payments:amount_count_1d", "-e", "user_id=1", "--json", "--repo", str(example_repo),
                  env={**other, "FEATURESTORE_ALLOW_EMPTY_ONLINE_STORE": "1"})
    assert allowed.returncode == 0 and json.loads(allowed.stdout)["amount_count_1d"] == [None]


def test_ctrl_c_stops_cleanly_with_everything_flushed(example_repo: Path, services, overrides: dict) -> None:
    import signal
    import subprocess
    import sys
    import time

    import pyarrow.dataset as pads

    env = {
        **os.environ,
        **services.env(),
        "COLUMNS": "200",
        "FEATURESTORE_PROJECT": str(overrides["project"]),
        "FEATURESTORE_CONSUMER_GROUP": str(overrides["consumer_group"]),
        "FEATURESTORE_KAFKA_OPTIONS": json.dumps(overrides["kafka_options"]),
        "FEATURESTORE_CHECKPOINT_INTERVAL_S": "3600",  # only the stop may flush and commit
        "FEATURESTORE_OFFLINE_PATH": str(overrides["offline_path"]),
        "FEATURESTORE_REGISTRY_PATH": str(overrides["registry_path"]),
    }
    assert cli("apply", "--repo", str(example_repo), env=env).returncode == 0
    settings = load_settings(example_repo, **overrides)
    plan = compile_repo(example_repo)
    topic = plan.source("payments").topic
    ensure_topics(settings, [topic], partitions=2)
    records = payment_events(800, end=dt.datetime.now(dt.timezone.utc), malformed_fraction=0.0, seed=3)
    produce_records(producer_config(settings), topic, records)

    proc = subprocess.Popen([sys.executable, "-m", "featurestore", "run", "--repo", str(example_repo)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = redis.Redis.from_url(services.redis_url)
    newest: dict[int, int] = {}
    for r in records:
        assert r.event is not None
        ts = int(dt.datetime.fromisoformat(r.event["ts"]).timestamp() * 1000)
        newest[r.event["user_id"]] = max(ts, newest.get(r.event["user_id"], 0))
    reader = OnlineReader(client, str(overrides["project"]), plan)
    request = [ViewRequest(plan.view("user_payments"), ["amount_count_1d"], [(u,) for u in newest])]

    def all_applied() -> bool:
        got = reader.read_results(request, max(newest.values()))[0].event_ms
        return [v or 0 for v in got] == list(newest.values())

    deadline = time.monotonic() + 60
    while not all_applied() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)  # polls a condition (every user's newest event applied), bounded by the deadline
    assert all_applied(), "the processor did not apply the events"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "800 events applied" in out
    history = pads.dataset(Path(settings.offline_root) / "user_payments", format="parquet", partitioning="hive").to_table()
    assert history.num_rows == 800, "the stop flushed the buffered history"
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": services.bootstrap_servers, "group.id": settings.consumer_group})
    committed = c.committed([TopicPartition(topic, p) for p in range(2)], timeout=15)
    c.close()
    assert sum(tp.offset for tp in committed) == 800, "the stop committed the offsets"


def test_cli_backfill_equals_streaming_and_is_idempotent(example_repo: Path, services, overrides: dict, tmp_path: Path) -> None:
    """The same demo events streamed through Kafka and backfilled from files give the same
    online values and the same training set; re-running a backfill writes nothing twice."""
    from featurestore.client import FeatureStore

    def env_for(project: str) -> dict[str, str]:
        return {**services.env(), "FEATURESTORE_PROJECT": project, "FEATURESTORE_CONSUMER_GROUP": project,
                "FEATURESTORE_OFFLINE_PATH": str(tmp_path / project), "FEATURESTORE_KAFKA_OPTIONS": json.dumps(overrides["kafka_options"])}

    streamed, backfilled = f"{overrides['project']}-s", f"{overrides['project']}-b"
    assert cli("apply", "--repo", str(example_repo), env=env_for(streamed)).returncode == 0
    settings = load_settings(example_repo, **dict(overrides, project=streamed))
    topic = compile_repo(example_repo).source("payments").topic
    ensure_topics(settings, [topic], partitions=1)
    end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    records = payment_events(1200, end=end, span=dt.timedelta(hours=2), users=15, merchants=6, late_fraction=0.05,
                             malformed_fraction=0.02, seed=9)
    produce_records(producer_config(settings), topic, records)
    assert cli("run", "--until-caught-up", "--repo", str(example_repo), env=env_for(streamed)).returncode == 0

    events_file = tmp_path / "payments.jsonl"
    events_file.write_bytes(b"\n".join(r.value for r in records) + b"\n")
    res = cli("backfill", "--from", str(events_file), "--materialize", "--repo", str(example_repo), env=env_for(backfilled))
    assert res.returncode == 0, res.stderr
    valid = sum(1 for r in records if r.event)
    assert f"{valid:,} events" in res.stdout and "Dead letters" in res.stdout
    again = cli("backfill", "--from", str(events_file), "--materialize", "--repo", str(example_repo), env=env_for(backfilled))
    assert again.returncode == 0 and "0 history rows written" in again.stdout, again.stdout

    users = sorted({r.event["user_id"] for r in records if r.event})
    plan = compile_repo(example_repo)
    feats = [f"user_payments:{f}" for f in plan.view("user_payments").feature_names]
    common = {k: v for k, v in overrides.items() if k != "registry_path"}  # the CLI applied to the repo's registry
    stores = [FeatureStore(example_repo, settings=load_settings(example_repo, **dict(common, project=p, offline_path=tmp_path / p)))
              for p in (streamed, backfilled)]
    online = [s.get_online_features(feats, [{"user_id": u} for u in users]).to_dict() for s in stores]
    assert online[0] == online[1]
    times = [end - dt.timedelta(minutes=m) for m in (0, 17, 45, 90)]
    entity_df = pd.DataFrame({"user_id": [u for u in users for _ in times], "event_timestamp": [t for _ in users for t in times]})
    training = [s.get_historical_features(entity_df, feats).to_pandas() for s in stores]
    pd.testing.assert_frame_equal(training[0], training[1])
    for s in stores:
        s.close()

    # a time range, from Parquet, history only
    parquet = tmp_path / "payments.parquet"
    pd.DataFrame([r.event for r in records if r.event]).assign(ts=lambda d: pd.to_datetime(d["ts"], utc=True)).to_parquet(parquet)
    start = (end - dt.timedelta(hours=1)).isoformat()
    res = cli("backfill", "--from", str(parquet), "--start", start, "--repo", str(example_repo), env=env_for(f"{backfilled}-pq"))
    assert res.returncode == 0, res.stderr
    in_range = sum(1 for r in records if r.event and dt.datetime.fromisoformat(r.event["ts"]) >= end - dt.timedelta(hours=1))
    assert f"{in_range:,} events" in res.stdout

    for args, message in [
        (("--from", str(tmp_path / "missing.jsonl")), "does not exist"),
        (("--from", str(events_file), "--start", "yesterday"), "--start 'yesterday' is not an ISO date/time"),
    ]:
        bad = cli("backfill", *args, "--repo", str(example_repo), env=env_for(backfilled))
        assert bad.returncode == 1 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_produce_checks_a_file_first_then_sends_it_keyed_by_entity(example_repo: Path, services, tmp_path: Path) -> None:
    """`produce FILE`: an invalid line stops the whole file (named by line, nothing sent);
    --skip-invalid sends the rest; CSV rows arrive as typed JSON; keys are the entity."""
    import uuid

    from confluent_kafka import Consumer

    env = services.env()
    topic = compile_repo(example_repo).source("payments").topic
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    good = {"payment_id": "p1", "user_id": 7, "merchant_id": "m1", "amount": 12.5, "currency": "EUR", "country": "FR", "ts": now}
    lines = [json.dumps(good), json.dumps(dict(good, payment_id="p2", amount=-1)), "{not json", json.dumps(dict(good, user_id=8))]
    jsonl = tmp_path / "payments.jsonl"
    jsonl.write_text("\n".join(lines) + "\n")

    refused = cli("produce", str(jsonl), "--repo", str(example_repo), env=env)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "2 of 4 events are invalid (nothing sent" in refused.stderr
    assert "payments.jsonl, line 2: schema_violation: amount" in refused.stderr
    assert "payments.jsonl, line 3: malformed_json" in refused.stderr

    sent = cli("produce", str(jsonl), "--skip-invalid", "--partitions", "3", "--repo", str(example_repo), env=env)
    assert sent.returncode == 0, sent.stderr
    assert f"Created topic '{topic}' with 3 partitions" in sent.stdout and "Sent 2 events" in sent.stdout
    csv_file = tmp_path / "payments.csv"
    csv_file.write_text(f"payment_id,user_id,merchant_id,amount,currency,country,ts\np3,9,m2,1e3,USD,US,{now}\n")
    assert cli("produce", str(csv_file), "--repo", str(example_repo), env=env).returncode == 0

    consumer = Consumer({"bootstrap.servers": services.bootstrap_servers, "group.id": f"check-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got: list[tuple[bytes | None, dict[str, Any]]] = []
    deadline = dt.datetime.now() + dt.timedelta(seconds=30)
    while len(got) < 3 and dt.datetime.now() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            got.append((msg.key(), json.loads(msg.value() or b"null")))
    consumer.close()
    by_id = {v["payment_id"]: (k, v) for k, v in got}
    assert sorted(by_id) == ["p1", "p3"] and len(got) == 3, "p1 twice (7 and 8), p3 once; p2 never"
    assert {k for k, v in got if v["payment_id"] == "p1"} == {b"7", b"8"}
    assert by_id["p3"][0] == b"9" and by_id["p3"][1]["amount"] == 1000.0 and by_id["p3"][1]["user_id"] == 9

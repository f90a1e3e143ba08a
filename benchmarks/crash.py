"""`python -m benchmarks.crash [--events 1000000] [--kills 20]`: the long crash test.

Produces sequenced transactions (each user's events numbered 1, 2, 3, ...), then runs
`featurestore run --until-caught-up` again and again, each run killed with SIGKILL: every
other run at a random time (wherever it is), the others at a fault point (after the Redis
write, after Parquet files are staged, after the history commit, before the offset commit)
at a random occurrence; then once more to the end. Then it
checks that every event took effect exactly once: per user, the online count equals the
last sequence number and the sum equals n(n+1)/2; the history holds every (partition,
offset) exactly once. Prints a markdown table and writes JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import duckdb
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from featurestore.compile import compile_repo  # noqa: E402
from featurestore.config import load_settings  # noqa: E402
from featurestore.demo import produce_records  # noqa: E402
from featurestore.demo.sequenced import sequenced_events, write_sequenced_repo  # noqa: E402
from featurestore.embedded.services import services_from_env_or_start  # noqa: E402
from featurestore.offline.history import history_glob  # noqa: E402
from featurestore.online.reader import OnlineReader, ViewRequest  # noqa: E402
from featurestore.registry import FileRegistry  # noqa: E402
from featurestore.runtime.kafka import ensure_topics, producer_config  # noqa: E402
from tests.crash_loop import crash_loop  # noqa: E402

FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    env, env_started = services_from_env_or_start()
    tmp = Path(tempfile.mkdtemp(prefix="featurestore-crash-"))
    run = uuid.uuid4().hex[:8]
    try:
        topic = f"crash-{run}"
        repo = write_sequenced_repo(tmp / "repo", topic)
        overrides = {"kafka_bootstrap_servers": env["FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS"],
                     "redis_url": env["FEATURESTORE_REDIS_URL"], "project": f"crash-{run}",
                     "consumer_group": f"crash-{run}", "registry_path": tmp / "registry", "offline_path": tmp / "offline",
                     "checkpoint_interval_s": 1.0, "kafka_options": FAST_GROUP}
        settings = load_settings(repo, **overrides)
        plan = compile_repo(repo)
        FileRegistry(settings.registry_root).apply(plan)
        ensure_topics(settings, [topic], partitions=args.partitions)
        records = sequenced_events(args.events, dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1))
        produce_records(producer_config(settings), topic, records)
        print(f"produced {len(records):,} sequenced events", flush=True)

        run_env = {**os.environ, **env, "FEATURESTORE_KAFKA_OPTIONS": json.dumps(FAST_GROUP)}
        for name in ("project", "consumer_group", "registry_path", "offline_path", "checkpoint_interval_s"):
            run_env[f"FEATURESTORE_{name.upper()}"] = str(overrides[name])
        started = time.monotonic()
        cmd = [sys.executable, "-m", "featurestore", "run", "--until-caught-up", "--repo", str(repo)]
        dangerous = ("after_online_write:2", "after_history_staged:1", "after_history_commit:1", "before_offset_commit:1")
        kills = crash_loop(cmd, run_env, args.kills, args.seed, dangerous,
                           on_kill=lambda where: print(f"killed {where}", flush=True))
        wall = time.monotonic() - started

        # checks
        client = redis.Redis.from_url(settings.redis_url)
        last: dict[int, int] = {}
        for r in records:
            assert r.event is not None  # sequenced events are all valid
            last[r.event["user_id"]] = r.event["seq"]
        reader = OnlineReader(client, settings.project, plan)
        users = list(last)
        got = reader.read([ViewRequest(plan.view("user_txns"), ["seq_count_30d", "seq_sum_30d", "last_seq"],
                                       [(u,) for u in users])], int(time.time() * 1000))[0]
        wrong = sum(not (c == n and total == n * (n + 1) // 2 and seq == n)
                    for n, c, total, seq in zip(last.values(), got["seq_count_30d"], got["seq_sum_30d"], got["last_seq"]))
        glob = history_glob(Path(settings.offline_root), "user_txns")
        rows, distinct = duckdb.connect().execute(
            f"SELECT count(*), count(DISTINCT (_partition, _offset)) FROM read_parquet('{glob}', hive_partitioning = true)"
        ).fetchone() or (0, 0)
        ok = wrong == 0 and rows == distinct == len(records)
        for key in client.scan_iter(f"fs:{settings.project}:*"):
            client.delete(key)
    finally:
        if env_started:
            env_started.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    table = "\n".join([
        f"Long crash test, {when}: {args.events:,} sequenced events, {len(last):,} users, {args.partitions} partitions",
        "",
        "| what | value |",
        "| --- | --- |",
        f"| SIGKILLs | {sum(kills.values())} ({', '.join(f'{k} {v}' for k, v in sorted(kills.items()))}) |",
        f"| wall time, all runs incl. restarts and group joins | {wall:.0f} s |",
        f"| users whose online count/sum/last differ from their sequence | {wrong} |",
        f"| history rows / distinct (partition, offset) / events | {rows:,} / {distinct:,} / {len(records):,} |",
        f"| exactly once | {'yes' if ok else 'NO'} |",
    ])
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "crash-latest.md").write_text(table + "\n")
    (args.out / f"crash-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}.json").write_text(json.dumps({
        "when": when, "events": args.events, "kills": dict(kills), "wall_s": wall, "wrong_users": wrong,
        "history_rows": rows, "history_distinct": distinct, "exactly_once": ok}, indent=2))
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

"""`python -m benchmarks [--quick] [--reps N] [--events N]`

Starts the embedded broker and Redis (or uses FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS /
FEATURESTORE_REDIS_URL), then measures, each beside its raw limit in the same run:

- ingest: `StreamProcessor` (what `featurestore run` executes) over the example plan
  (2 views, 23 features, Redis + Parquet) and over the peers' scenario (1 view: count, sum,
  last of amount over 1 h) vs a bare confluent-kafka consume of the same topic, and Quix
  Streams on the same topic in its own venv (benchmarks.peers; --no-peers skips it); the Faust
  engine (`run --engine faust`) over the example plan, same events, profiled with py-spy;
- online: `FeatureStore.get_online_features` 1x10 and 100x10 vs a bare redis-py GET / MGET
  and Feast 0.67's SDK on the same users (benchmarks.peers, its own venv);
- HTTP: `featurestore serve` (tokens, audit, metrics on) at a fixed request rate, open loop,
  1x10 and 100x10, beside the SDK reading Redis directly and the bare redis-py round trip;
- training: `get_historical_features` vs a hand-written DuckDB ASOF JOIN of the same history
  and Feast's DuckDB store, each in its own process (benchmarks.training_job: its own peak
  RSS), at 1M entity rows and once at 10M;
- backfill: `featurestore backfill --materialize` (the `Backfill` job) over the same events
  from a JSON lines file vs streaming them (the ingest figure), and the same online values;
- storage: Redis fields and bytes per entity of each view after ingest;
- materialize: `rebuild-online`'s load of the Parquet history into Redis vs DuckDB
  latest-per-key + pipelined HSET (benchmarks.materialize) and Feast's materialize;
- freshness: produce → readable with `get_online_features`, through `featurestore run`
  as its own process, at fixed produce rates (benchmarks.freshness).

Every scenario checks a sample of its results against an independent computation and
reports a wrong answer as a failure. Jobs and latency loops run --reps times (3). Ingest,
materialize and training rows carry the CPU seconds and peak RSS of the measured process
and Redis's CPU seconds; the default and
Faust engines are profiled with py-spy on the first repetition. Prints a markdown table,
writes JSON and a PNG plot (with matplotlib: the [bench] extra) to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import redis
from confluent_kafka import Consumer, KafkaError, TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.faust_engine import run_engine  # noqa: E402
from benchmarks.freshness import bench_freshness  # noqa: E402
from benchmarks.http_server import bench_http  # noqa: E402
from benchmarks.materialize import bench_materialize  # noqa: E402
from benchmarks.peers import run_feast, run_quix  # noqa: E402
from benchmarks.plot import plot  # noqa: E402
from benchmarks.profiling import profile_path, profiled, summarise_profile  # noqa: E402
from benchmarks.resources import job_result, measured  # noqa: E402
from featurestore import FeatureStore  # noqa: E402
from featurestore.compile import compile_repo  # noqa: E402
from featurestore.compile.loader import ensure_importable  # noqa: E402
from featurestore.config import load_settings  # noqa: E402
from featurestore.demo import payment_events, produce_records  # noqa: E402
from featurestore.embedded.services import services_from_env_or_start  # noqa: E402
from featurestore.online.entity_value import unpack_value  # noqa: E402
from featurestore.registry import FileRegistry  # noqa: E402
from featurestore.runtime import StreamProcessor  # noqa: E402
from featurestore.runtime.kafka import FAST_FETCH, ensure_topics, producer_config  # noqa: E402

FEATURES_10 = [
    "user_payments:amount_sum_1h", "user_payments:amount_sum_1d", "user_payments:amount_count_1h",
    "user_payments:amount_count_1d", "user_payments:amount_mean_1d", "user_payments:amount_max_1d",
    "user_payments:amount_eur_sum_1h", "user_payments:last_merchant", "user_payments:last_country",
    "user_payments:amount_eur",
]
#: FEATURES_10 plus one request-time feature (its input, amount_mean_1d, is among the ten).
FEATURES_10_RT = [*FEATURES_10, "payment_checks:amount_vs_1d_mean"]


PEER_VIEWS = '''
from datetime import timedelta

from entities import user
from sources import payments

from featurestore import Aggregation, FeatureView

user_txn = FeatureView(
    "user_txn", entities=[user], source=payments,
    features=[Aggregation("amount", f, windows=[timedelta(hours=1)]) for f in ("count", "sum", "last")],
)
'''


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rows: list[dict[str, Any]] = []
        self.failures: list[str] = []
        self.profiles: dict[str, list[tuple[str, float]]] = {}

    def record(self, scenario: str, who: str, metric: str, values: list[float], unit: str,
               usage: list[dict[str, float]] | None = None, **extra: Any) -> None:
        """One table row; `usage`: per run CPU s / peak RSS MB / Redis CPU s (medians reported)."""
        if usage:
            extra.update({k: statistics.median(u[k] for u in usage) for k in usage[0]})
        self.rows.append({"scenario": scenario, "who": who, "metric": metric, "unit": unit,
                          "median": statistics.median(values), "min": min(values), "max": max(values),
                          "runs": len(values), **extra})

    def record_latency(self, scenario: str, who: str, runs: list[list[float]]) -> None:
        """p50 and p99 rows of repeated latency runs (ms): each run's percentile, then their median."""
        for q, metric in ((0.5, "p50"), (0.99, "p99")):
            self.record(scenario, who, metric, [pct(lat, q) for lat in runs], "ms")

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(what)


def setup(args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    repo = tmp / "repo"
    shutil.copytree(ROOT / "feature_defs", repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    run = uuid.uuid4().hex[:8]
    src = repo / "sources.py"
    src.write_text(src.read_text().replace('topic="payments"', f'topic="bench-{run}"'))
    settings = load_settings(
        repo, kafka_bootstrap_servers=env["FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS"], redis_url=env["FEATURESTORE_REDIS_URL"],
        project=f"bench-{run}", registry_path=tmp / "registry", offline_path=tmp / "offline",
        kafka_options={"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
    )
    plan = compile_repo(repo)
    FileRegistry(settings.registry_root).apply(plan)
    ensure_importable(repo)
    topic = plan.source("payments").topic
    ensure_topics(settings, [topic], partitions=4)
    end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=10)
    records = payment_events(args.events, end=end, span=dt.timedelta(hours=6), users=10_000, merchants=500,
                             late_fraction=0.02, malformed_fraction=0.0)
    t0 = time.perf_counter()
    produce_records(producer_config(settings), topic, records)
    print(f"produced {len(records):,} events in {time.perf_counter() - t0:.1f} s", flush=True)
    # the peers' scenario (issue "Benchmarks"): one view, count / sum / last of amount over 1 h
    peer_repo = tmp / "peer_repo"
    shutil.copytree(repo, peer_repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    (peer_repo / "views.py").write_text(PEER_VIEWS)
    (peer_repo / "services.py").unlink()
    (peer_repo / "request_features.py").unlink()
    peer_plan = compile_repo(peer_repo)
    events_file = tmp / "events.jsonl"
    events_file.write_bytes(b"\n".join(r.value for r in records) + b"\n")
    # two live versions of user_payments (the second a copy with a longer TTL): the cost of dual-writing
    v1 = plan.view("user_payments")
    two_versions = plan.model_copy(update={"views": [*plan.views, v1.model_copy(update={"name": "user_payments@2",
                                                                                        "ttl_ms": (v1.ttl_ms or 0) * 2})]})
    return {"repo": repo, "settings": settings, "plan": plan, "topic": topic, "records": records, "end": end,
            "events_file": events_file, "peer_plan": peer_plan, "peer_repo": peer_repo, "tmp": tmp,
            "two_versions_plan": two_versions}


def bench_ingest(b: Bench, ctx: dict[str, Any], rep: int) -> None:
    settings = ctx["settings"]
    n = len(ctx["records"])
    # raw limits: a bare consume, and the same consume parsing each record with json.loads
    got, raw_secs = _bare_consume(settings.kafka_bootstrap_servers, ctx["topic"], n, parse=False)
    b.check(got == n, f"raw consume saw {got} of {n}")
    parsed, parse_secs = _bare_consume(settings.kafka_bootstrap_servers, ctx["topic"], n, parse=True)
    b.check(parsed == n, f"consume + json.loads loop saw {parsed} of {n}")
    ctx.setdefault("parse_eps", []).append(parsed / max(parse_secs, 1e-9))
    # ours: the processor over a fresh group, fresh Redis namespace and history folder
    run_settings = settings.model_copy(update={
        "project": f"{settings.project}-r{rep}", "consumer_group": f"{settings.project}-r{rep}",
        "offline_path": Path(str(settings.offline_root) + f"-r{rep}"),
    })
    ctx["ingest_settings"] = run_settings
    client = redis.Redis.from_url(settings.redis_url)
    profile = profile_path() if rep == 0 else None
    with measured(client) as usage, profiled(profile):
        ctx.setdefault("ingest_eps", []).append(_run_processor(b, ctx["plan"], run_settings, n))
    if profile is not None:
        ctx["ingest_profile"] = summarise_profile(profile)
    ctx.setdefault("ingest_usage", []).append(usage.as_dict())
    ctx.setdefault("raw_eps", []).append(got / max(raw_secs, 1e-9))
    peer_settings = run_settings.model_copy(update={
        "project": f"{settings.project}-p{rep}", "consumer_group": f"{settings.project}-p{rep}",
        "offline_path": Path(str(settings.offline_root) + f"-p{rep}"),
    })
    with measured(client) as usage:
        ctx.setdefault("peer_eps", []).append(_run_processor(b, ctx["peer_plan"], peer_settings, n))
    ctx.setdefault("peer_usage", []).append(usage.as_dict())
    two_settings = run_settings.model_copy(update={
        "project": f"{settings.project}-v{rep}", "consumer_group": f"{settings.project}-v{rep}",
        "offline_path": Path(str(settings.offline_root) + f"-v{rep}"),
    })
    with measured(client) as usage:
        ctx.setdefault("two_versions_eps", []).append(_run_processor(b, ctx["two_versions_plan"], two_settings, n))
    ctx.setdefault("two_versions_usage", []).append(usage.as_dict())
    ctx["two_versions_settings"] = two_settings
    # the Faust engine over the same plan and events
    faust_settings = run_settings.model_copy(update={
        "project": f"{settings.project}-f{rep}", "consumer_group": f"{settings.project}-f{rep}",
        "offline_path": Path(str(settings.offline_root) + f"-f{rep}"),
    })
    profile = profile_path() if rep == 0 else None
    with measured(client) as usage:
        ctx.setdefault("faust_eps", []).append(run_engine(b, ctx["plan"], faust_settings, n, profile))
    ctx.setdefault("faust_usage", []).append(usage.as_dict())
    client.close()
    if profile is not None:
        ctx["faust_profile"] = summarise_profile(profile)
    if b.args.peers:
        quix = run_quix(b, ctx, rep)
        if quix is not None:
            ctx.setdefault("quix_eps", []).append(quix[0])
            ctx.setdefault("quix_usage", []).append({"cpu_s": quix[1]})
    _check_same_online(b, ctx, run_settings, faust_settings)


def _bare_consume(servers: str, topic: str, n: int, parse: bool) -> tuple[int, float]:
    """(records, seconds) of a plain confluent-kafka consume of the topic's 4 partitions
    (assigned, no group; same fetch settings), with `parse`: json.loads of every record (the
    naive loop a pipeline must match). Seconds from the first record to the last."""
    consumer = Consumer({"bootstrap.servers": servers, "group.id": f"raw-{uuid.uuid4().hex[:6]}",
                         "enable.partition.eof": True, "auto.offset.reset": "earliest", **FAST_FETCH})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(4)])
    got, first, last = 0, 0.0, 0.0
    eof: set[int] = set()
    while len(eof) < 4:
        for m in consumer.consume(20_000, 0.1):
            error = m.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition() or 0)
                continue
            first = first or time.perf_counter()
            if parse:
                json.loads(m.value())  # type: ignore[arg-type]  # never None: errors were skipped above
            got += 1
        last = time.perf_counter() if got and not last and got >= n else last
    consumer.close()
    return got, (last or time.perf_counter()) - first


def _check_same_online(b: Bench, ctx: dict[str, Any], a: Any, other: Any) -> None:
    """Both engines hold the same online values (a sample of users, every user feature)."""
    users = sorted({r.event["user_id"] for r in ctx["records"] if r.event})[:200]
    feats = [f"user_payments:{f}" for f in ctx["plan"].view("user_payments").feature_names]
    rows = [{"user_id": u} for u in users]
    stores = [FeatureStore(ctx["repo"], settings=s) for s in (a, other)]
    got = [st.get_online_features(feats, rows, at=ctx["end"]).to_dict() for st in stores]
    for st in stores:
        st.close()
    b.check(got[0] == got[1], "the Faust engine's online values differ from the default engine's")


def _run_processor(b: Bench, plan: Any, settings: Any, n: int) -> float:
    """events/s of StreamProcessor from the first record (after the group join) to caught up."""
    stats = StreamProcessor(plan, settings).run(until_caught_up=True)
    assert stats.first_record_at is not None
    b.check(stats.events == n, f"processor applied {stats.events} of {n}")
    return n / (time.monotonic() - stats.first_record_at)


def bench_online(b: Bench, ctx: dict[str, Any]) -> None:
    settings = ctx["ingest_settings"]
    store = FeatureStore(ctx["repo"], settings=settings)
    users = sorted({r.event["user_id"] for r in ctx["records"] if r.event})
    # correctness: amount_count_1d of a sample equals a plain count of the generated events
    at = ctx["end"]
    counts: dict[int, int] = {}
    for r in ctx["records"]:
        if r.event:
            ts = dt.datetime.fromisoformat(r.event["ts"])
            if ts > at - dt.timedelta(days=1) + dt.timedelta(minutes=30):  # well inside the 1d window
                counts[r.event["user_id"]] = counts.get(r.event["user_id"], 0) + 1
    sample = users[:200]
    got = store.get_online_features(["user_payments:amount_count_1d"], [{"user_id": u} for u in sample], at=at).to_dict()
    b.check(got["amount_count_1d"] == [counts.get(u, 0) for u in sample], "online amount_count_1d differs from a plain count")
    client = redis.Redis.from_url(settings.redis_url)
    client.set("bench:raw", b"x" * 200)
    client.mset({f"bench:raw:{i}": b"x" * 200 for i in range(100)})
    iters = 300 if b.args.quick else 2000
    for n_ent in (1, 100):
        rows = [{"user_id": u} for u in users[:n_ent]]
        keys = [f"bench:raw:{i}" for i in range(n_ent)]
        raw_name = "redis-py GET" if n_ent == 1 else "redis-py MGET x100"
        runs: dict[str, list[list[float]]] = {"ours": [], "raw": []}
        for _ in range(b.args.reps):  # each repetition: its own percentiles; the table gives their median
            ours, raw = [], []
            for i in range(iters + 100):
                t0 = time.perf_counter()
                store.get_online_features(FEATURES_10, rows)
                t1 = time.perf_counter()
                client.get("bench:raw") if n_ent == 1 else client.mget(keys)
                t2 = time.perf_counter()
                if i >= 100:
                    ours.append((t1 - t0) * 1000)
                    raw.append((t2 - t1) * 1000)
            runs["ours"].append(ours)
            runs["raw"].append(raw)
        b.record_latency(f"online {n_ent}x10", "featurestore SDK", runs["ours"])
        b.record_latency(f"online {n_ent}x10", raw_name, runs["raw"])
    _bench_request_time(b, store, users[0], iters)
    store.close()
    _bench_served_log(b, ctx, users[0], iters)


def _bench_served_log(b: Bench, ctx: dict[str, Any], user: int, iters: int) -> None:
    """A 1x10 read of a service with and without its served-value log (every read logged),
    alternating in one loop: the log's cost on a read."""
    settings = ctx["ingest_settings"]
    plan = ctx["plan"]
    logged = plan.model_copy(update={"services": [s.model_copy(update={"log_sample_rate": 1.0}) for s in plan.services]})
    registry = Path(str(settings.registry_root) + "-logged")
    FileRegistry(registry).apply(logged)
    plain = FeatureStore(ctx["repo"], settings=settings)
    logging_store = FeatureStore(ctx["repo"], settings=settings.model_copy(update={"registry_path": registry,
                                                                                   "served_log_pii_keys": True}))
    rows = [{"user_id": user}]
    runs: dict[str, list[list[float]]] = {"with": [], "without": []}
    for _ in range(b.args.reps):
        with_log, without = [], []
        for i in range(iters + 100):
            t0 = time.perf_counter()
            logging_store.get_online_features(service="fraud_model_v1", entity_rows=rows)
            t1 = time.perf_counter()
            plain.get_online_features(service="fraud_model_v1", entity_rows=rows)
            t2 = time.perf_counter()
            if i >= 100:
                with_log.append((t1 - t0) * 1000)
                without.append((t2 - t1) * 1000)
        runs["with"].append(with_log)
        runs["without"].append(without)
    logging_store.close()
    plain.close()
    b.record_latency("online 1x10 service read, served-value log", "featurestore SDK, every read logged to Kafka", runs["with"])
    b.record_latency("online 1x10 service read, served-value log", "featurestore SDK, not logged", runs["without"])


def _bench_request_time(b: Bench, store: FeatureStore, user: int, iters: int) -> None:
    """1x10 with and without one request-time feature on top, alternating in the same loop."""
    rows = [{"user_id": user, "amount": 120.0}]
    got = store.get_online_features(FEATURES_10_RT, rows)
    mean = got.column("amount_mean_1d")[0]
    b.check(got.column("amount_vs_1d_mean")[0] == (round(120.0 / mean, 6) if mean else None),
            "the request-time feature differs from its formula")
    runs: dict[str, list[list[float]]] = {"with": [], "without": []}
    for _ in range(b.args.reps):
        with_rt, without = [], []
        for i in range(iters + 100):
            t0 = time.perf_counter()
            store.get_online_features(FEATURES_10_RT, rows)
            t1 = time.perf_counter()
            store.get_online_features(FEATURES_10, rows)
            t2 = time.perf_counter()
            if i >= 100:
                with_rt.append((t1 - t0) * 1000)
                without.append((t2 - t1) * 1000)
        runs["with"].append(with_rt)
        runs["without"].append(without)
    b.record_latency("online 1x10 + 1 request-time feature", "featurestore SDK, 10 stored + amount_vs_1d_mean", runs["with"])
    b.record_latency("online 1x10 + 1 request-time feature", "featurestore SDK, the 10 stored only", runs["without"])


def bench_training(b: Bench, ctx: dict[str, Any]) -> None:
    """Ours and the raw ASOF join, each in its own process (benchmarks.training_job), on
    entity rows at the events' own instants; then once at 10x the rows (full runs)."""
    events = [r.event for r in ctx["records"] if r.event]
    users = np.array([e["user_id"] for e in events], dtype=np.int64)
    stamps = pd.to_datetime([e["ts"] for e in events], utc=True, format="ISO8601")
    sizes = [b.args.entity_rows] if b.args.quick else [b.args.entity_rows, 10 * b.args.entity_rows]
    for size in sizes:
        pick = np.arange(0, size * 7, 7) % len(events)  # each event's instant, cycled
        entity_df = pd.DataFrame({"user_id": users[pick], "event_timestamp": stamps[pick],
                                  "amount": np.round(np.linspace(1.0, 900.0, size), 2)})  # request field
        path = ctx["tmp"] / f"entity_df_{size}.parquet"
        entity_df.to_parquet(path)
        if size == b.args.entity_rows:
            ctx["entity_df"] = entity_df
        del entity_df
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "raw": []}
        if size == b.args.entity_rows:
            runs["ours_rt"] = []
        if b.args.spark:
            runs["spark"] = []
        for _ in range(b.args.reps if size == b.args.entity_rows else 1):
            for who in runs:
                result = _training_job(ctx, path, who)
                if result is None:
                    b.check(False, f"training set of {size:,} rows ({who}) failed")
                    return
                runs[who].append(result)
        for who, results in runs.items():
            b.check(all(r["rows"] == size for r in results), f"training set ({who}) lost or added rows")
        # every row is at one of its own events, so the count in the 1h window is at least 1
        b.check(min(r["min_count_1h"] for r in runs["ours"]) >= 1, "a training row does not see its own event")
        if "spark" in runs:
            b.check(all(r["min_count_1h"] == runs["ours"][0]["min_count_1h"] for r in runs["spark"]),
                    "the Spark engine's training set differs from DuckDB's")
        label = f"training set {size:,} rows"
        if "ours_rt" in runs:
            b.check(all(r["request_time_ok"] for r in runs["ours_rt"]), "training-set request-time values differ from the formula")
        for who, name in (("ours", "featurestore (10 features, 7 windowed)"), ("raw", "DuckDB ASOF JOIN (3 last-value columns)"),
                          ("ours_rt", "featurestore (the 10 + 1 request-time feature)"),
                          ("spark", "featurestore engine=spark, local[*] (the 10 features; start apart)")):
            if who in runs:
                b.record(label, name, "seconds", [r["seconds"] for r in runs[who]], "s",
                         [{"cpu_s": r["cpu_s"], "peak_rss_mb": r["peak_rss_mb"]} for r in runs[who]])
        print(f"training {size:,} rows: ours {runs['ours'][-1]['seconds']:.1f} s / {runs['ours'][-1]['peak_rss_mb']:,.0f} MB, "
              f"raw ASOF {runs['raw'][-1]['seconds']:.1f} s / {runs['raw'][-1]['peak_rss_mb']:,.0f} MB", flush=True)


def _training_job(ctx: dict[str, Any], entity_df: Path, who: str) -> dict[str, Any] | None:
    settings = ctx["ingest_settings"]
    features = FEATURES_10_RT if who == "ours_rt" else FEATURES_10
    config = {"repo": str(ctx["repo"]), "entity_df": str(entity_df), "features": features, "who": who.removesuffix("_rt"),
              "settings": {"redis_url": settings.redis_url, "project": settings.project,
                           "registry_path": str(settings.registry_root), "offline_path": str(settings.offline_root)}}
    path = ctx["tmp"] / "training_job.json"
    path.write_text(json.dumps(config))
    result, errors = job_result([sys.executable, "-m", "benchmarks.training_job", str(path)], 3600, cwd=ROOT)
    if result is None:
        print(errors, flush=True)
    return result


def bench_backfill(b: Bench, ctx: dict[str, Any], rep: int) -> None:
    """The same events from a file through `Backfill` (history + online), vs streaming them."""
    from featurestore.runtime.backfill import Backfill

    settings = ctx["settings"]
    run_settings = settings.model_copy(update={
        "project": f"{settings.project}-b{rep}", "offline_path": Path(str(settings.offline_root) + f"-b{rep}"),
    })
    stats = Backfill(ctx["plan"], run_settings).run(ctx["events_file"], materialize=True)
    n = len(ctx["records"])
    b.check(stats.events == n, f"backfill applied {stats.events} of {n}")
    ctx.setdefault("backfill_eps", []).append(n / stats.seconds)
    if rep == 0:  # the same online values as streaming the same events
        users = sorted({r.event["user_id"] for r in ctx["records"] if r.event})[:200]
        feats = ["user_payments:amount_count_1d", "user_payments:amount_sum_1d", "user_payments:merchants_1d"]
        rows = [{"user_id": u} for u in users]
        streamed = FeatureStore(ctx["repo"], settings=ctx["ingest_settings"])
        backfilled = FeatureStore(ctx["repo"], settings=run_settings)
        a = streamed.get_online_features(feats, rows, at=ctx["end"]).to_dict()
        c = backfilled.get_online_features(feats, rows, at=ctx["end"]).to_dict()
        b.check(a["amount_count_1d"] == c["amount_count_1d"] and a["merchants_1d"] == c["merchants_1d"]
                and all(abs(x - y) <= 1e-9 * max(1, abs(x)) for x, y in zip(a["amount_sum_1d"], c["amount_sum_1d"])),
                "backfilled online values differ from streamed ones")
        streamed.close()
        backfilled.close()


def bench_storage(b: Bench, ctx: dict[str, Any]) -> None:
    """Redis states and bytes (MEMORY USAGE) per entity, per view: one string per entity holds all of it."""
    settings = ctx["ingest_settings"]
    client = redis.Redis.from_url(settings.redis_url)
    for view in ctx["plan"].views:
        keys = [k for _, k in zip(range(500), client.scan_iter(f"fs:{settings.project}:{view.name}:*", count=1000))]
        states = [len(unpack_value(client.get(key) or b"", key.decode())) for key in keys]
        # SAMPLES 0: every field (the default samples 5 and extrapolates)
        size = [client.memory_usage(key, samples=0) or 0 for key in keys]
        if keys:
            b.record(f"storage {view.name}", "Redis per entity", "states", [statistics.mean(states)], "states")
            b.record(f"storage {view.name}", "Redis per entity", "bytes", [statistics.mean(size)], "bytes")
    for who, plan, run in (("one version of each view", ctx["plan"], settings),
                           ("user_payments in two live versions", ctx["two_versions_plan"], ctx["two_versions_settings"])):
        b.record("storage, whole project", who, "MB", [_project_mb(client, run.project, plan)], "MB")
    client.close()


def _project_mb(client: redis.Redis[bytes], project: str, plan: Any) -> float:
    """Redis memory of a project's entity hashes: per view, its key count times the mean size of 200 of them."""
    total = 0.0
    for view in plan.views:
        keys = list(client.scan_iter(f"fs:{project}:{view.name}:*", count=1000))
        sample = keys[:200]
        if sample:
            total += len(keys) * statistics.mean(client.memory_usage(k, samples=0) or 0 for k in sample)
    return total / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: small data, 1 repetition")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--entity-rows", type=int, default=None)
    parser.add_argument("--no-peers", dest="peers", action="store_false",
                        help="skip the peers run in their own venvs (benchmarks/.venvs, made once from PyPI)")
    parser.add_argument("--no-spark", dest="spark", action="store_false",
                        help="skip the training sets built with the Spark engine (needs Java 17+)")
    parser.add_argument("--freshness", default="", help="comma-separated produce rates (ev/s) of the freshness runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    args.events = args.events or (20_000 if args.quick else 300_000)
    args.reps = args.reps or (1 if args.quick else 3)
    args.entity_rows = args.entity_rows or (2_000 if args.quick else 1_000_000)
    args.freshness_rates = [int(r) for r in args.freshness.split(",")] if args.freshness else (
        [500] if args.quick else [1_000, 10_000, 50_000])
    b = Bench(args)
    env, env_started = services_from_env_or_start()
    tmp = Path(tempfile.mkdtemp(prefix="featurestore-bench-"))
    try:
        ctx = setup(args, tmp, env)
        # the generated events are ~300k long-lived objects of this process only: a full
        # collection of them (~120 ms) would land in the latency samples measured here
        gc.freeze()
        for rep in range(args.reps):
            bench_ingest(b, ctx, rep)
            print(f"ingest rep {rep + 1}: ours {ctx['ingest_eps'][-1]:,.0f} ev/s (peer scenario {ctx['peer_eps'][-1]:,.0f}), "
                  f"Faust engine {ctx['faust_eps'][-1]:,.0f} ev/s, raw consume {ctx['raw_eps'][-1]:,.0f} ev/s, "
                  f"consume + json.loads {ctx['parse_eps'][-1]:,.0f} ev/s", flush=True)
        b.record("ingest", "featurestore run (Redis + Parquet)", "events/s", ctx["ingest_eps"], "ev/s", ctx["ingest_usage"])
        b.record("ingest", "bare confluent-kafka consume", "events/s", ctx["raw_eps"], "ev/s")
        b.record("ingest", "confluent-kafka consume + json.loads loop", "events/s", ctx["parse_eps"], "ev/s")
        b.record("ingest", "featurestore run --engine faust (Redis + Parquet)", "events/s", ctx["faust_eps"], "ev/s",
                 ctx["faust_usage"])
        b.profiles = {"default engine": ctx.get("ingest_profile", []), "Faust engine": ctx.get("faust_profile", [])}
        b.record("ingest, peers' scenario (1 view: count/sum/last 1h)", "featurestore run (Redis + Parquet)", "events/s",
                 ctx["peer_eps"], "ev/s", ctx["peer_usage"])
        b.record("ingest, user_payments in two live versions (dual-writing)", "featurestore run (Redis + Parquet)",
                 "events/s", ctx["two_versions_eps"], "ev/s", ctx["two_versions_usage"])
        if ctx.get("quix_eps"):
            b.record("ingest, peers' scenario (1 view: count/sum/last 1h)",
                     "Quix Streams (own venv; RocksDB + changelog, Redis sink)", "events/s", ctx["quix_eps"], "ev/s",
                     ctx["quix_usage"])
        for rep in range(args.reps):
            bench_backfill(b, ctx, rep)
            print(f"backfill rep {rep + 1}: {ctx['backfill_eps'][-1]:,.0f} ev/s", flush=True)
        b.record("ingest", "featurestore backfill --materialize (file)", "events/s", ctx["backfill_eps"], "ev/s")
        for rep in range(args.reps):
            bench_materialize(b, ctx, rep)
            ours, raw, rows, keys, _, _ = ctx["materialize"][-1]
            print(f"materialize rep {rep + 1}: {rows:,} history rows loaded in {ours:.1f} s; "
                  f"latest-per-key floor {raw:.1f} s ({keys:,} keys)", flush=True)
        runs = ctx["materialize"]
        label = f"load {runs[0][2]:,} history rows into Redis"
        b.record(label, "featurestore rebuild-online (windows + exactly-once marks)", "seconds", [r[0] for r in runs], "s",
                 [r[4] for r in runs])
        b.record(label, "DuckDB latest per key + pipelined HSET (no windows)", "seconds", [r[1] for r in runs], "s",
                 [r[5] for r in runs])
        bench_storage(b, ctx)
        for rate in args.freshness_rates:
            bench_freshness(b, ctx, rate, 5 if args.quick else 20, pct)
        bench_online(b, ctx)
        bench_http(b, ctx, FEATURES_10)
        bench_training(b, ctx)
        if args.peers:
            run_feast(b, ctx, ctx["entity_df"])
    finally:
        if env_started:
            env_started.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(b)
    if b.failures:
        print("CORRECTNESS FAILURES:\n  " + "\n  ".join(b.failures))
        sys.exit(1)


def report(b: Bench) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Run {when} on {machine}; {b.args.events:,} events, {b.args.reps} repetition(s)"
             + (" (--quick)" if b.args.quick else ""), "",
             "| scenario | who | metric | median | min–max | runs | CPU s | peak RSS MB | Redis CPU s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in b.rows:
        whole = r["unit"] in ("ev/s", "bytes")

        def fmt(v: float, whole: bool = whole) -> str:
            return f"{v:,.0f}" if whole else f"{v:.3f}"
        extra = " | ".join(f"{r[k]:,.1f}" if k in r else "" for k in ("cpu_s", "peak_rss_mb", "redis_cpu_s"))
        lines.append(f"| {r['scenario']} | {r['who']} | {r['metric']} ({r['unit']}) | {fmt(r['median'])} | "
                     f"{fmt(r['min'])}–{fmt(r['max'])} | {r['runs']} | {extra} |")
    ratios = []
    by = {(r["scenario"], r["who"], r["metric"]): r["median"] for r in b.rows}
    ours_key, raw_key = ("ingest", "featurestore run (Redis + Parquet)", "events/s"), ("ingest", "bare confluent-kafka consume", "events/s")
    if ours_key in by and raw_key in by:
        ratios.append(f"ingest: ours / bare consume = {by[ours_key] / by[raw_key]:.2f}")
    parse_key = ("ingest", "confluent-kafka consume + json.loads loop", "events/s")
    if ours_key in by and parse_key in by:
        ratios.append(f"ingest: ours / consume + json.loads loop = {by[ours_key] / by[parse_key]:.2f}")
    for r in b.rows:
        if r["unit"] == "ev/s" and r.get("redis_cpu_s") and r["scenario"].startswith("ingest"):
            per_event = r["redis_cpu_s"] / b.args.events * 1e6
            ratios.append(f"{r['scenario']}, {r['who'].split(' (')[0]}: Redis CPU {per_event:.1f} us/event")
    faust_key = ("ingest", "featurestore run --engine faust (Redis + Parquet)", "events/s")
    if ours_key in by and faust_key in by:
        ratios.append(f"Faust engine / default engine = {by[faust_key] / by[ours_key]:.2f}")
    back_key = ("ingest", "featurestore backfill --materialize (file)", "events/s")
    if ours_key in by and back_key in by:
        ratios.append(f"backfill / streaming = {by[back_key] / by[ours_key]:.2f}")
    for n, raw, rate in ((1, "redis-py GET", 200), (100, "redis-py MGET x100", 10)):
        key = f"online {n}x10"
        if (key, "featurestore SDK", "p99") in by:
            ratios.append(f"{key} p99: ours / {raw} = {by[(key, 'featurestore SDK', 'p99')] / by[(key, raw, 'p99')]:.1f}x")
        http_key = (key, f"feature server HTTP, open loop {rate} req/s", "p99")
        if http_key in by and (key, "featurestore SDK", "p99") in by:
            ratios.append(f"{key} p99: HTTP / SDK direct = {by[http_key] / by[(key, 'featurestore SDK', 'p99')]:.1f}x")
    jobs = [sc for sc in dict.fromkeys(r["scenario"] for r in b.rows) if sc.startswith(("load ", "training set"))]
    for scenario in jobs:  # one scenario per size: ratios within it
        rows = {r["who"].split(" (")[0]: r["median"] for r in b.rows if r["scenario"] == scenario}
        mine = rows.get("featurestore rebuild-online") or rows.get("featurestore")
        floor = rows.get("DuckDB latest per key + pipelined HSET") or rows.get("DuckDB ASOF JOIN")
        if mine and floor:
            ratios.append(f"{scenario}: ours / raw floor = {mine / floor:.1f}x")
        for who, value in rows.items():
            if mine and who.startswith("Feast"):
                ratios.append(f"{scenario}: ours / {who} = {mine / value:.2f}")
    for n in (1, 100):
        feast = next((r["median"] for r in b.rows if r["scenario"] == f"online {n}x10" and r["who"].startswith("Feast")
                      and r["metric"] == "p99"), None)
        if feast and (f"online {n}x10", "featurestore SDK", "p99") in by:
            ratios.append(f"online {n}x10 p99: ours / Feast = {by[(f'online {n}x10', 'featurestore SDK', 'p99')] / feast:.1f}x")
    quix = ("ingest, peers' scenario (1 view: count/sum/last 1h)", "Quix Streams (own venv; RocksDB + changelog, Redis sink)",
            "events/s")
    ours_peer = ("ingest, peers' scenario (1 view: count/sum/last 1h)", "featurestore run (Redis + Parquet)", "events/s")
    if quix in by and ours_peer in by:
        ratios.append(f"peers' scenario: ours / Quix Streams = {by[ours_peer] / by[quix]:.2f}")
    lines += ["", "Ratios: " + "; ".join(ratios)]
    for engine, profile in b.profiles.items():
        if profile:
            lines += ["", f"{engine} profile (py-spy, busy samples of this process by layer): "
                      + "; ".join(f"{name} {share:.0f}%" for name, share in profile)]
    lines += ["", "Correctness: " + ("all checks passed" if not b.failures else "FAILED")]
    text = "\n".join(lines)
    print("\n" + text)
    b.args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    (b.args.out / f"bench-{stamp}.json").write_text(json.dumps(
        {"when": when, "machine": machine, "args": {k: str(v) for k, v in vars(b.args).items()}, "rows": b.rows,
         "profiles": b.profiles, "failures": b.failures}, indent=2))
    (b.args.out / "latest.md").write_text(text + "\n")
    plotted = plot(b.rows, b.args.out / "latest.png", f"{when}, {machine}")
    print(f"plot: {plotted}" if plotted else "plot: skipped (pip install matplotlib, or the [bench] extra)")


if __name__ == "__main__":
    main()

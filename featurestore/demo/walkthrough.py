"""`featurestore demo`: the whole path on embedded services, printed step by step."""

from __future__ import annotations

import datetime as dt
import os
import random
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
from confluent_kafka import Consumer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text

from featurestore.client import FeatureStore
from featurestore.compile import compile_repo
from featurestore.config import Settings, load_settings
from featurestore.demo.events import payment_events, produce_records
from featurestore.embedded import DevEnvironment
from featurestore.registry import FileRegistry
from featurestore.runtime import StreamProcessor
from featurestore.runtime.dead_letters import read_headers
from featurestore.runtime.kafka import consumer_config, ensure_topics, producer_config

ONLINE_FEATURES = [
    "user_payments:amount_sum_1h",
    "user_payments:amount_count_1h",
    "user_payments:amount_mean_1d",
    "user_payments:merchants_1d",
    "user_payments:recent_merchants_1h",
    "merchant_payments:amount_count_10m",
]


def _step(console: Console, n: int, text: str) -> None:
    """One numbered step of the walkthrough (text printed as is)."""
    console.print(Text(f"{n}.", style="bold"), text, highlight=False)


def _by_feature(columns: dict[str, list[object]], keys: list[str], title: str) -> Table:
    """One row per feature, one column per entity (readable at 80 columns)."""
    heads = ["/".join(str(columns[k][i]) for k in keys) for i in range(len(columns[keys[0]]))]
    table = Table("", *heads, title=title)
    for name, values in columns.items():
        if name not in keys:
            table.add_row(name, *("—" if v is None else f"{v:,.2f}" if isinstance(v, float) else str(v) for v in values))
    return table


def _table(columns: dict[str, list[object]], title: str) -> Table:
    table = Table(*columns, title=title)
    for row in zip(*columns.values()):
        table.add_row(*("—" if v is None else f"{v:,.2f}" if isinstance(v, float) else str(v) for v in row))
    return table


def run_demo(repo: Path, n_events: int, console: Console) -> None:
    """Run the walkthrough; services it starts are stopped at the end, whatever happens."""
    env: DevEnvironment | None = None
    if "FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
        with console.status("Starting the embedded broker (Tansu) and Redis..."):
            env = DevEnvironment.start()
        os.environ.update(env.env())
        _step(console, 1, f"Started Tansu on {env.broker.address} and Redis on {env.redis.address}")
    else:
        _step(console, 1, f"Using Kafka at {os.environ['FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS']}")
    try:
        _walk(repo, n_events, console)
    finally:
        if env is not None:
            env.stop()
            console.print("Stopped the embedded services.")


def _walk(repo: Path, n_events: int, console: Console) -> None:
    state = Path(tempfile.mkdtemp(prefix="featurestore-demo-"))
    run_id = uuid.uuid4().hex[:8]
    overrides = {
        "registry_path": state / "registry",
        "offline_path": state / "offline",
        "project": f"demo-{run_id}",
        "consumer_group": f"featurestore-demo-{run_id}",
        "checkpoint_interval_s": 2.0,
        "kafka_options": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500},
    }
    settings = load_settings(repo, **overrides)

    plan = compile_repo(repo)
    version = FileRegistry(settings.paths.registry).apply(plan)
    assert version is not None
    _step(console, 2, f"Applied {repo}: registry version {version.version} "
                  f"({len(plan.views)} views, {sum(len(v.feature_names) for v in plan.views)} features) in {state}")

    topic = plan.source("payments").topic
    ensure_topics(settings, [topic], partitions=4)
    end = dt.datetime.now(dt.timezone.utc)
    records = payment_events(n_events, end=end)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"Producing to '{topic}'", total=len(records))
        produce_records(producer_config(settings), topic, records, lambda k: progress.advance(task, k))
    bad = sum(1 for r in records if r.event is None)
    _step(console, 3, f"Produced {len(records):,} payments over the last 3 hours "
                  f"({bad} malformed, ~3% arriving late) to '{topic}'")

    processor = StreamProcessor(plan, settings)
    started = time.monotonic()
    with console.status("Processing (waiting for the consumer group to form)...") as status:
        stats = processor.run(
            until_caught_up=True,
            on_batch=lambda s: status.update(f"Processing: {s.records:,} records, {s.dead_lettered} dead letters"),
        )
    _step(console, 4, f"Processed {stats.records:,} records in {time.monotonic() - started:.1f} s "
                  f"(incl. consumer group join): {stats.events:,} applied, dead letters {stats.dead_letters}")

    store = FeatureStore(repo, settings=settings)
    users = sorted({r.event["user_id"] for r in records if r.event})[:5]
    merchants = sorted({r.event["merchant_id"] for r in records if r.event})
    rows = [{"user_id": u, "merchant_id": m} for u, m in zip(users, merchants)] + [{"user_id": 999_999, "merchant_id": "m000"}]
    store.get_online_features(ONLINE_FEATURES, rows)  # the first call also connects
    t0 = time.perf_counter()
    resp = store.get_online_features(ONLINE_FEATURES, rows)
    ms = (time.perf_counter() - t0) * 1000
    shown = resp.to_dict()
    # a request-time feature: this payment's amount against the card holder's mean of the last day
    amounts = [round(random.Random(u).uniform(5, 500), 2) for u in users] + [42.0]
    checks = store.get_online_features(["payment_checks:amount_vs_1d_mean"], rows, request_data={"amount": amounts})
    shown["new payment"] = amounts
    shown["x its 1d mean"] = checks.column("amount_vs_1d_mean")
    shown["user status"] = resp.status("amount_sum_1h")  # freshness travels with every value
    shown["user newest event"] = [f"{s.total_seconds():,.0f} s ago" if s is not None else "-" for s in resp.staleness("amount_sum_1h")]
    console.print(_by_feature(shown, ["user_id", "merchant_id"],
                              f"5. Online features ({len(rows)} entities, one Redis round trip, {ms:.2f} ms; user 999999 "
                              "is unknown; 'x its 1d mean' is computed at request time from 'new payment')"))

    rnd = random.Random(1)
    stamps = [end - dt.timedelta(minutes=m) for m in (150, 90, 30, 0)]
    entity_df = pd.DataFrame(
        [{"user_id": u, "event_timestamp": t} for u in users[:3] for t in stamps]
        + [{"user_id": rnd.choice(users), "event_timestamp": end - dt.timedelta(hours=5)}]
    )
    train = store.get_historical_features(
        entity_df, ["user_payments:amount_sum_1h", "user_payments:amount_count_1h", "user_payments:last_merchant"]
    ).to_arrow()
    columns = train.to_pydict()
    columns["event_timestamp"] = [f"{t:%H:%M:%S}" for t in columns["event_timestamp"]]
    console.print(_table(columns, "6. Point-in-time training set (values as of each row's timestamp; "
                                "the 5-hours-ago row predates every event)"))

    _show_dead_letters(settings, plan.source("payments").dead_letter_topic, console)

    report = store.check_consistency(sample=200)
    worst = max(report.features, key=lambda f: f.mismatch_rate)
    checked = sum(f.checked for f in report.features)
    _step(console, 8, f"Online vs offline consistency: {checked:,} values of {len(report.features)} features "
                  f"checked, {report.mismatches} mismatches (worst feature: {worst.feature}, {worst.mismatch_rate:.2%})")
    store.close()


def _show_dead_letters(settings: Settings, topic: str, console: Console, limit: int = 5) -> None:
    conf = consumer_config(settings) | {"group.id": f"demo-dlq-{uuid.uuid4().hex[:6]}"}
    consumer = Consumer(conf)
    consumer.subscribe([topic])
    table = Table("source", "error", "detail", title=f"7. First dead letters on '{topic}'")
    seen = 0
    deadline = time.monotonic() + 30
    while seen < limit and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is None or msg.error():
            continue
        h = read_headers(msg.headers())
        table.add_row(f"{h['source.topic']}[{h['source.partition']}]@{h['source.offset']}", h["error"], h["error.detail"][:70])
        seen += 1
    consumer.close()
    console.print(table)

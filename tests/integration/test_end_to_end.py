"""The whole path on a real broker and a real Redis: produce -> run --until-caught-up ->
online reads and a point-in-time training set, checked against plain Python."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import orjson
import pandas as pd
import pyarrow.dataset as pads
import pytest
from confluent_kafka import Consumer, TopicPartition

from featurestore import FeatureStore
from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.demo import payment_events, produce_records
from featurestore.registry import FileRegistry
from featurestore.runtime import StreamProcessor
from featurestore.runtime.dead_letters import read_headers
from featurestore.runtime.kafka import ensure_topics, producer_config

from .reference import Ev, expected

pytestmark = pytest.mark.integration

MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
RATES = {"EUR": 1.0, "USD": 0.92, "GBP": 1.17, "CHF": 1.05}
# Feature semantics as documented in the README (tile sizes included).
USER_SPEC = {
    "amount_sum_1h": ("agg", "amount", "sum", HOUR, MIN),
    "amount_sum_1d": ("agg", "amount", "sum", DAY, 30 * MIN),
    "amount_count_1h": ("agg", "amount", "count", HOUR, MIN),
    "amount_count_1d": ("agg", "amount", "count", DAY, 30 * MIN),
    "amount_mean_1d": ("agg", "amount", "mean", DAY, 30 * MIN),
    "amount_max_1d": ("agg", "amount", "max", DAY, 30 * MIN),
    "amount_eur_sum_1h": ("agg", "amount_eur", "sum", HOUR, MIN),
    "last_merchant": ("row", "merchant_id"),
    "last_country": ("row", "country"),
    "amount_eur": ("row", "amount_eur"),
    "is_large": ("row", "is_large"),
}
MERCHANT_SPEC = {
    "amount_count_10m": ("agg", "amount", "count", 10 * MIN, 10_000),
    "amount_count_1h": ("agg", "amount", "count", HOUR, MIN),
    "amount_sum_1h": ("agg", "amount", "sum", HOUR, MIN),
    "amount_min_1h": ("agg", "amount", "min", HOUR, MIN),
    "amount_last_1h": ("agg", "amount", "last", HOUR, MIN),
}


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def _event_values(e: dict) -> dict:
    return {
        **e,
        "amount_eur": round(e["amount"] * RATES[e["currency"]], 2),
        "is_large": e["amount"] > 1000,
    }


def _assert_same(got: dict, want: dict, where: str) -> None:
    for name, w in want.items():
        g = got[name]
        if isinstance(w, float) or isinstance(g, float):
            assert g == pytest.approx(w, rel=1e-9, abs=1e-6), f"{where}: {name} = {g}, expected {w}"
        else:
            assert g == w, f"{where}: {name} = {g!r}, expected {w!r}"


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, services):
    """Produce ~3,000 payments (late + 1% malformed), run the processor until caught up."""
    import uuid

    from tests.conftest import EXAMPLE_REPO, FAST_GROUP

    run_id = uuid.uuid4().hex[:10]
    tmp = tmp_path_factory.mktemp("e2e")
    repo = tmp / "repo"
    import shutil

    shutil.copytree(EXAMPLE_REPO, repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    (repo / "sources.py").write_text(
        (repo / "sources.py").read_text().replace('topic="payments"', f'topic="payments-{run_id}"')
    )
    settings = load_settings(
        repo, kafka_bootstrap_servers=services.bootstrap_servers, redis_url=services.redis_url,
        project=f"e2e-{run_id}", consumer_group=f"e2e-{run_id}", registry_path=tmp / "registry",
        offline_path=tmp / "offline", checkpoint_interval_s=1.0, kafka_options=dict(FAST_GROUP),
    )
    plan = compile_repo(repo)
    FileRegistry(settings.registry_root).apply(plan)
    source = plan.source("payments")
    ensure_topics(settings, [source.topic], partitions=3)

    end = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) - dt.timedelta(minutes=1)
    records = payment_events(3000, end=end, users=40, merchants=12, late_fraction=0.05,
                             malformed_fraction=0.01, seed=11)
    produce_records(producer_config(settings), source.topic, records)
    stats = StreamProcessor(plan, settings).run(until_caught_up=True)
    return {"settings": settings, "plan": plan, "records": records, "stats": stats, "end": end, "repo": repo}


def _events(records, key_field: str) -> list[Ev]:
    return [Ev(_ms(dt.datetime.fromisoformat(r.event["ts"])), r.event[key_field], _event_values(r.event))
            for r in records if r.event is not None]


def test_every_record_is_processed_or_dead_lettered(pipeline):
    records, stats = pipeline["records"], pipeline["stats"]
    malformed = sum(1 for r in records if r.event is None)
    assert malformed > 10
    assert stats.records == len(records)
    assert stats.events == len(records) - malformed
    assert stats.dead_lettered == malformed
    # the stream really was out of order
    ts = [dt.datetime.fromisoformat(r.event["ts"]) for r in records if r.event]
    assert sum(1 for a, b in zip(ts, ts[1:]) if b < a) > 20


def test_dead_letters_carry_reason_and_source(pipeline, services):
    plan, records = pipeline["plan"], pipeline["records"]
    source = plan.source("payments")
    consumer = Consumer({"bootstrap.servers": services.bootstrap_servers, "group.id": "unused",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    consumer.assign([TopicPartition(source.dead_letter_topic, 0, 0)])
    got = []
    while True:
        msg = consumer.poll(10)
        assert msg is not None, "dead-letter topic ended without EOF"
        if msg.error():
            break
        got.append(msg)
    consumer.close()
    malformed = [r.value for r in records if r.event is None]
    assert sorted(m.value() or b"" for m in got) == sorted(v or b"" for v in malformed)
    for m in got:
        headers = read_headers(m.headers())
        assert headers["error"] in {"malformed_json", "schema_violation"}
        assert headers["error.detail"]
        assert headers["source.topic"] == source.topic
        assert int(headers["source.offset"]) >= 0
        if headers["error"] == "schema_violation":
            assert any(f in headers["error.detail"] for f in ("amount", "user_id"))
    reasons = {read_headers(m.headers())["error"] for m in got}
    assert reasons == {"malformed_json", "schema_violation"}


def test_online_values_match_reference(pipeline):
    store = FeatureStore(pipeline["repo"], settings=pipeline["settings"])
    users = _events(pipeline["records"], "user_id")
    merchants = _events(pipeline["records"], "merchant_id")
    end_ms = _ms(pipeline["end"])
    user_ids = sorted({e.key for e in users}) + [123_456]
    merchant_ids = sorted({e.key for e in merchants}) + ["m-unknown"]
    refs = [f"user_payments:{f}" for f in USER_SPEC] + [f"merchant_payments:{f}" for f in MERCHANT_SPEC]
    for offset_ms in (0, 2 * DAY, 8 * DAY):  # now, past the merchant TTL (1d), past the user TTL (7d)
        t = end_ms + offset_ms
        rows = [{"user_id": u, "merchant_id": merchant_ids[i % len(merchant_ids)]} for i, u in enumerate(user_ids)]
        resp = store.get_online_features(refs, rows, full_feature_names=True,
                                         at=dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc)).to_dict()
        for i, row in enumerate(rows):
            want_u = expected(users, row["user_id"], t, 7 * DAY, USER_SPEC)
            want_m = expected(merchants, row["merchant_id"], t, DAY, MERCHANT_SPEC)
            got_u = {f: resp[f"user_payments__{f}"][i] for f in USER_SPEC}
            got_m = {f: resp[f"merchant_payments__{f}"][i] for f in MERCHANT_SPEC}
            _assert_same(got_u, want_u, f"user {row['user_id']} at +{offset_ms}ms")
            _assert_same(got_m, want_m, f"merchant {row['merchant_id']} at +{offset_ms}ms")
    # the TTL edge: exactly TTL old is alive, 1 ms more is missing
    for m in merchant_ids[:3]:
        newest = max(e.ts for e in merchants if e.key == m)
        for t in (newest + DAY, newest + DAY + 1):
            at = dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc)
            got = store.get_online_features([f"merchant_payments:{f}" for f in MERCHANT_SPEC],
                                            [{"merchant_id": m}], at=at).to_dict()
            _assert_same({f: got[f][0] for f in MERCHANT_SPEC}, expected(merchants, m, t, DAY, MERCHANT_SPEC),
                         f"merchant {m} at TTL edge {t - newest}")
    # sanity: the checks above were not all about missing values
    now = store.get_online_features(["user_payments:amount_count_1h"], [{"user_id": user_ids[0]}],
                                    at=pipeline["end"]).to_dict()
    assert now["amount_count_1h"][0] > 0
    store.close()


def test_training_set_is_point_in_time_correct(pipeline):
    store = FeatureStore(pipeline["repo"], settings=pipeline["settings"])
    users = _events(pipeline["records"], "user_id")
    end_ms = _ms(pipeline["end"])
    rnd = random.Random(3)
    rows = []
    for uid in sorted({e.key for e in users})[:12]:
        mine = sorted(e.ts for e in users if e.key == uid)
        pick = rnd.choice(mine)
        for t in (
            end_ms, pick, pick - 1,  # exactly at an event (included) and 1 ms before (excluded)
            (pick // MIN) * MIN, (pick // MIN) * MIN + 1,  # on and just after a tile boundary
            end_ms - 37 * MIN - 13_500, mine[0] - 1,  # mid-stream; before the entity's first event
            end_ms + 3 * DAY, end_ms + 8 * DAY,  # windows empty but alive; past the 7-day TTL
            mine[-1] + 7 * DAY, mine[-1] + 7 * DAY + 1,  # exactly TTL old (alive) and 1 ms past it
        ):
            rows.append({"user_id": uid, "event_timestamp": pd.Timestamp(t, unit="ms", tz="UTC")})
    rows.append({"user_id": 987_654, "event_timestamp": pd.Timestamp(end_ms, unit="ms", tz="UTC")})
    entity_df = pd.DataFrame(rows)
    feats = [f"user_payments:{f}" for f in USER_SPEC]
    result = store.get_historical_features(entity_df, feats).to_arrow().to_pylist()
    assert len(result) == len(rows)
    for row, got in zip(rows, result):
        t = int(row["event_timestamp"].value // 1_000_000)
        assert got["user_id"] == row["user_id"]
        want = expected(users, row["user_id"], t, 7 * DAY, USER_SPEC)
        _assert_same(got, want, f"user {row['user_id']} at {t}")
    store.close()


def test_online_equals_offline_at_the_same_instant(pipeline):
    store = FeatureStore(pipeline["repo"], settings=pipeline["settings"])
    merchants = sorted({r.event["merchant_id"] for r in pipeline["records"] if r.event})
    at = pipeline["end"]
    feats = [f"merchant_payments:{f}" for f in MERCHANT_SPEC]
    online = store.get_online_features(feats, [{"merchant_id": m} for m in merchants], at=at).to_dict()
    offline = store.get_historical_features(
        pd.DataFrame({"merchant_id": merchants, "event_timestamp": [at] * len(merchants)}), feats
    ).to_arrow().to_pydict()
    for f in MERCHANT_SPEC:
        assert offline[f] == pytest.approx(online[f], rel=1e-9), f


def test_history_is_hive_partitioned_with_kafka_coordinates(pipeline):
    root = Path(pipeline["settings"].offline_root) / "user_payments"
    assert all(p.name.startswith("date=") for p in root.iterdir() if not p.name.startswith("_"))
    table = pads.dataset(root, format="parquet", partitioning="hive").to_table()
    valid = [r for r in pipeline["records"] if r.event]
    assert table.num_rows == len(valid)
    coords = set(zip(table["_partition"].to_pylist(), table["_offset"].to_pylist()))
    assert len(coords) == len(valid)  # every update once, with its own partition/offset
    ids = {orjson.loads(r.value)["user_id"] for r in valid}
    assert set(table["user_id"].to_pylist()) == ids


def test_consistency_check_passes_and_catches_a_broken_definition(pipeline):
    from featurestore.client.consistency import check_consistency
    from featurestore.online.reader import OnlineReader

    store = FeatureStore(pipeline["repo"], settings=pipeline["settings"])
    report = store.check_consistency(sample=25, at=pipeline["end"])
    assert report.mismatches == 0
    assert all(f.checked == 25 for f in report.features if f.feature.startswith("user_payments:"))
    assert report.to_pandas()["mismatch_rate"].max() == 0.0

    # the offline side computes amount_sum_1h over 2 hours: the checker must notice
    plan = pipeline["plan"]
    view = plan.view("user_payments")
    broken_aggs = [a.model_copy(update={"window_ms": 2 * HOUR}) if a.name == "amount_sum_1h" else a for a in view.aggregations]
    broken = plan.model_copy(update={"views": [view.model_copy(update={"aggregations": broken_aggs}) if v.name == view.name
                                               else v for v in plan.views]})
    reader = OnlineReader(store.redis, pipeline["settings"].project, plan)
    bad = check_consistency(reader, pipeline["settings"].offline_root, plan, _ms(pipeline["end"]), 25, offline_plan=broken)
    rates = {f.feature: f.mismatch_rate for f in bad.features}
    assert rates["user_payments:amount_sum_1h"] > 0
    assert next(f for f in bad.features if f.feature == "user_payments:amount_sum_1h").max_abs_diff > 0
    assert all(rate == 0 for name, rate in rates.items() if name != "user_payments:amount_sum_1h")
    store.close()

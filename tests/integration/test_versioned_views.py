"""Two versions of a view live side by side: a running processor takes up version 2 when it is
applied, a backfill fills version 2 alone, a rollout service splits entities 90/10 (sticky, and
raising the share only moves entities to the treatment), and serving switches to version 2 and
back by apply and restore while reads go on without a failure."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import urllib3

from featurestore import FeatureStore
from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.demo import payment_events, produce_records
from featurestore.errors import ConfigError
from featurestore.plan import Plan
from featurestore.registry import FileRegistry
from featurestore.runtime import StreamProcessor, run_following
from featurestore.runtime.backfill import Backfill, only_view
from featurestore.runtime.kafka import ensure_topics, producer_config
from tests.integration.server_harness import free_port, server_answers, wait_for
from tests.unit.test_cli import cli

pytestmark = pytest.mark.integration

USERS = 400
V2 = '''

user_payments_v2 = FeatureView(
    "user_payments",
    version=2,
    entities=[user],
    source=payments,
    ttl=timedelta(days=7),
    allowed_lateness=timedelta(hours=1),
    tags={"domain": "payments", "pii": "true"},
    features=[
        Aggregation("amount_cents", "sum", windows=[timedelta(hours=1)], name="amount_sum"),
        Aggregation("amount", "count", windows=[timedelta(hours=1)], name="amount_count"),
        Transform("amount_cents", udf=amount_cents),
    ],{serving}
)
'''
ROLLOUT = '''

fraud_rollout = FeatureService(
    "fraud_rollout",
    variants={{"control": ["user_payments@1:amount_sum_1h", "user_payments@1:amount_count_1h"],
              "treatment": ["user_payments@2:amount_sum_1h", "user_payments@2:amount_count_1h"]}},
    split={{"treatment": {share}}},
)
'''


def _write_v2(repo: Path, serving: bool = False) -> None:
    (repo / "cents.py").write_text("def amount_cents(event) -> float:\n    return event.amount * 100\n")
    views = repo / "views.py"
    text = views.read_text().split("\n\nuser_payments_v2 = ")[0]
    if "from cents import" not in text:
        text = text.replace("from sources import payments", "from cents import amount_cents\nfrom sources import payments")
    views.write_text(text + V2.replace("{serving}", "\n    serving=True," if serving else ""))


def _write_rollout(repo: Path, share: float) -> None:
    services = repo / "services.py"
    services.write_text(services.read_text().split("\n\nfraud_rollout = ")[0] + ROLLOUT.format(share=share))


def _close(a: list[Any], b: list[Any]) -> bool:
    return all(x is None and y is None or x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9)
               for x, y in zip(a, b, strict=True))


def test_two_versions_side_by_side(example_repo: Path, services: Any, overrides: dict[str, Any], tmp_path: Path) -> None:
    settings = load_settings(example_repo, **overrides)
    registry = FileRegistry(settings.registry_root)
    plan = compile_repo(example_repo)
    registry.apply(plan)
    topic = plan.source("payments").topic
    ensure_topics(settings, [topic], partitions=2)
    producer = producer_config(settings)
    end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=30)
    clean: dict[str, Any] = {"late_fraction": 0.0, "malformed_fraction": 0.0, "users": USERS}
    first = payment_events(2000, end=end - dt.timedelta(minutes=20), span=dt.timedelta(minutes=20), seed=31, **clean)
    second = payment_events(2000, end=end, span=dt.timedelta(minutes=20), seed=32, **clean)
    archive = tmp_path / "first.jsonl"
    archive.write_bytes(b"".join(r.value + b"\n" for r in first))

    stop = threading.Event()
    switched: list[tuple[Plan, str | None]] = []
    processor = threading.Thread(target=run_following, args=(plan, settings, stop),
                                 kwargs={"on_switch": lambda p, e: switched.append((p, e))}, daemon=True)
    processor.start()
    store = FeatureStore(example_repo, settings=settings)
    rows = [{"user_id": u} for u in range(1, USERS + 1)]
    try:
        produce_records(producer, topic, first)
        counts_1 = sum(r.event is not None for r in first)
        wait_for(lambda: _count(store, "user_payments:amount_count_1h", rows) == counts_1, 60,
                 "version 1 to apply the first events")

        # version 2 (a transform in a new module) is applied while the processor runs: it takes it up
        _write_v2(example_repo)
        res = cli("plan", "--repo", str(example_repo), env=_env(services, settings))
        assert res.returncode == 0 and "+ FeatureView user_payments@2" in res.stdout, res.stdout + res.stderr
        registry.apply(compile_repo(example_repo))
        wait_for(lambda: switched, 30, "the processor to take up version 2")
        assert switched[0][1] is None and {v.name for v in switched[0][0].views} >= {"user_payments", "user_payments@2"}

        produce_records(producer, topic, second)
        counts_2 = sum(r.event is not None for r in second)
        wait_for(lambda: _count(store, "user_payments@2:amount_count_1h", rows) == counts_2, 60,
                 "version 2 to apply the new events")
        before_v1 = store.get_online_features(["user_payments@1:amount_sum_1h"], rows).column("amount_sum_1h")

        # backfill version 2 alone from the first events: it now equals 100 x version 1; version 1 is untouched
        Backfill(only_view(store.plan, "user_payments@2"), settings).run(archive, materialize=True)
        both = store.get_online_features(["user_payments@1:amount_sum_1h", "user_payments@2:amount_sum_1h"], rows,
                                         full_feature_names=True)
        v1, v2 = both.column("user_payments__amount_sum_1h"), both.column("user_payments@2__amount_sum_1h")
        assert _close(v1, before_v1), "a backfill of version 2 does not touch version 1"
        assert _close([None if x is None else 100 * x for x in v1], v2)
        assert sum(store.get_online_features(["user_payments@2:amount_count_1h"], rows).column("amount_count_1h")) \
            == counts_1 + counts_2

        # shadow comparison: the sums differ everywhere (x100), the counts nowhere, online and over the history
        res = cli("compare", "user_payments@1", "user_payments@2", "--sample", "300", "--json", "--repo", str(example_repo),
                  env=_env(services, settings))
        assert res.returncode == 0, res.stderr
        report = {(r["feature"], r["where"]): r for r in json.loads(res.stdout)}
        assert set(report) == {(f, w) for f in ("amount_sum_1h", "amount_count_1h") for w in ("online", "history")}
        assert report[("amount_count_1h", "online")]["mismatch_rate"] == 0.0
        assert report[("amount_sum_1h", "online")]["mismatch_rate"] == 1.0
        assert math.isclose(report[("amount_sum_1h", "online")]["mean_b"], 100 * report[("amount_sum_1h", "online")]["mean_a"])
        assert report[("amount_count_1h", "history")]["rows"] == 300

        # a rollout: 10% of the entities read version 2, always the same ones
        _write_rollout(example_repo, 0.1)
        registry.apply(compile_repo(example_repo))
        store.refresh()
        answer = store.get_online_features(service="fraud_rollout", entity_rows=rows)
        variants = answer.variants
        assert variants is not None and set(variants) == {"control", "treatment"}
        assert 0.05 < variants.count("treatment") / USERS < 0.16
        for i, variant in enumerate(variants):
            expected = v2[i] if variant == "treatment" else v1[i]
            assert _close([answer.column("amount_sum_1h")[i]], [expected])
        assert store.get_online_features(service="fraud_rollout", entity_rows=rows).variants == variants

        # the same answer over HTTP, and a split changed by apply reaches the running server and the SDK
        token = _admin_token(example_repo, services, settings)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "featurestore", "serve", "--repo", str(example_repo), "--port",
                                   str(port)], env={**os.environ, **_env(services, settings)}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        http = urllib3.PoolManager(retries=False)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: server_answers(server, http, url), 30, "the feature server")

            def over_http(body: dict[str, Any]) -> dict[str, Any]:
                r = http.request("POST", url + "/v1/features/online", body=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
                assert r.status == 200, r.data
                return dict(json.loads(r.data))

            keys = {"user_id": [r["user_id"] for r in rows]}
            assert over_http({"service": "fraud_rollout", "entities": keys})["variants"] == variants
            _write_rollout(example_repo, 0.5)
            registry.apply(compile_repo(example_repo))
            wider = wait_for(lambda: (got := over_http({"service": "fraud_rollout", "entities": keys})["variants"]) != variants
                             and got, 15, "the server to take up the new split")
            assert all(w == "treatment" for v, w in zip(variants, wider) if v == "treatment"), "assignment is sticky"
            assert 0.4 < wider.count("treatment") / USERS < 0.6
            assert wait_for(lambda: store.get_online_features(service="fraud_rollout", entity_rows=rows).variants == wider,
                            15, "the SDK to take up the new split")

            # promote version 2 (serving=True), then restore the previous registry version: reads never fail
            unpinned = {"features": ["user_payments:amount_sum_1h"], "entities": keys}
            assert _close(over_http(unpinned)["features"]["amount_sum_1h"]["values"], v1)
            before_promotion = registry.latest()
            assert before_promotion is not None
            for name in ("services.py", "request_features.py"):  # what reads features version 2 lacks pins version 1
                f = example_repo / name
                f.write_text(f.read_text().replace('"user_payments:', '"user_payments@1:'))
            _write_v2(example_repo, serving=True)
            registry.apply(compile_repo(example_repo))
            wait_for(lambda: _close(over_http(unpinned)["features"]["amount_sum_1h"]["values"], v2), 15,
                     "the server to serve version 2")
            assert wait_for(lambda: _close(store.get_online_features(["user_payments:amount_sum_1h"], rows)
                                           .column("amount_sum_1h"), v2), 15, "the SDK to serve version 2")
            registry.restore(before_promotion.version)
            wait_for(lambda: _close(over_http(unpinned)["features"]["amount_sum_1h"]["values"], v1), 15,
                     "the server to serve version 1 again")
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(30)

        # editing version 2's transform without a new version is refused
        (example_repo / "cents.py").write_text("def amount_cents(event) -> float:\n    return event.amount * 1000\n")
        res = cli("plan", "--repo", str(example_repo), env=_env(services, settings))
        assert res.returncode == 1 and "'user_payments' version 2" in res.stdout, res.stdout
        assert "code of cents:amount_cents changed" in res.stdout

        # retire version 2: its definition and the rollout go from the repository, then its keys from Redis
        (example_repo / "cents.py").write_text("def amount_cents(event) -> float:\n    return event.amount * 100\n")
        views = example_repo / "views.py"
        views.write_text(views.read_text().split("\n\nuser_payments_v2 = ")[0])
        services_py = example_repo / "services.py"
        services_py.write_text(services_py.read_text().split("\n\nfraud_rollout = ")[0])
        res = cli("retire", "user_payments@2", "--yes", "--grace", "3", "--repo", str(example_repo), env=_env(services, settings))
        assert res.returncode == 0 and "Retired user_payments@2" in res.stdout, res.stdout + res.stderr
        assert all(v.name != "user_payments@2" for v in registry.current_plan().views)
        redis = settings.redis_client()
        assert not list(redis.scan_iter(f"fs:{settings.project}:user_payments@2:*")), "no key of version 2 is left"
        assert list(redis.scan_iter(f"fs:{settings.project}:user_payments:*", count=1000)), "version 1 keeps its keys"
        redis.close()
    finally:
        stop.set()
        processor.join(60)
        store.close()
    assert not processor.is_alive()


def _count(store: FeatureStore, ref: str, rows: list[dict[str, Any]]) -> int:
    """The sum of a count feature over the rows (-1 before any processor wrote the project)."""
    try:
        return sum(v or 0 for v in store.get_online_features([ref], rows).column(ref.partition(":")[2]))
    except ConfigError:
        return -1


def _env(services: Any, settings: Any) -> dict[str, str]:
    return {**services.env(), "FEATURESTORE_PROJECT": settings.project, "FEATURESTORE_CONSUMER_GROUP": settings.consumer_group,
            "FEATURESTORE_REGISTRY_PATH": str(settings.registry_root), "FEATURESTORE_OFFLINE_PATH": str(settings.offline_root)}


def _admin_token(repo: Path, services: Any, settings: Any) -> str:
    res = cli("tokens", "create", "admin", "--grant", "admin", "--repo", str(repo), env=_env(services, settings))
    assert res.returncode == 0, res.stderr
    return res.stdout.strip().splitlines()[-1]


def test_a_crossed_guard_rolls_the_split_back(example_repo: Path, services: Any, overrides: dict[str, Any]) -> None:
    settings = load_settings(example_repo, **overrides)
    registry = FileRegistry(settings.registry_root)
    plan = compile_repo(example_repo)
    registry.apply(plan)
    topic = plan.source("payments").topic
    ensure_topics(settings, [topic], partitions=2)
    end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=30)
    produce_records(producer_config(settings), topic, payment_events(1000, end=end, span=dt.timedelta(minutes=20), seed=41,
                                                                     late_fraction=0.0, malformed_fraction=0.0, users=200))
    StreamProcessor(plan, settings).run(until_caught_up=True)
    # version 2 is applied but nothing writes it: every value the treatment serves is missing
    _write_v2(example_repo)
    _write_rollout(example_repo, 0.5)
    services_py = example_repo / "services.py"
    services_py.write_text(services_py.read_text().replace('split={"treatment": 0.5},', 'split={"treatment": 0.5}, '
                           'guards=[Guard("null_rate", max=0.2)], guard_window=timedelta(seconds=2),')
                           .replace("from featurestore import ", "from datetime import timedelta\n\nfrom featurestore import Guard, "))
    registry.apply(compile_repo(example_repo))
    applied = registry.latest()
    assert applied is not None and applied.plan.service("fraud_rollout").guards

    token = _admin_token(example_repo, services, settings)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "featurestore", "serve", "--repo", str(example_repo), "--port", str(port)],
                              env={**os.environ, **_env(services, settings)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    http = urllib3.PoolManager(retries=False)
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps({"service": "fraud_rollout", "entities": {"user_id": list(range(1, 201))}}).encode()
    seen: list[list[str]] = []
    try:
        wait_for(lambda: server_answers(server, http, url), 30, "the feature server")

        def only_control() -> bool:
            r = http.request("POST", url + "/v1/features/online", body=body, headers=auth)
            assert r.status == 200, r.data  # no read fails while the rollout is rolled back
            seen.append(json.loads(r.data)["variants"])
            return set(seen[-1]) == {"control"}

        wait_for(only_control, 30, "the guard to move the split back to the control")
        assert "treatment" in seen[0], "the treatment served before the guard was crossed"
        latest = registry.latest()
        assert latest is not None and latest.version == applied.version + 1
        assert latest.note.startswith("automatic rollback of fraud_rollout: null_rate 1 > 0.2")
        assert latest.plan.service("fraud_rollout").split == {"treatment": 0.0}
        scraped = http.request("GET", url + "/metrics", headers=auth).data.decode()
        assert 'featurestore_rollout_rollbacks_total{metric="null_rate",service="fraud_rollout"} 1.0' in scraped
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)

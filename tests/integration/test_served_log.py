"""The served-value log end to end: reads of a logged service by the SDK and over HTTP go to
the served-value topic, `featurestore served-log land` writes them as Parquet exactly once,
keys of pii views stay out unless configured, and the rows join to a training set."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
import urllib3

from featurestore import FeatureStore
from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.demo import payment_events, produce_records
from featurestore.registry import FileRegistry
from featurestore.runtime import StreamProcessor
from featurestore.runtime.kafka import ensure_topics, producer_config
from tests.integration.server_harness import free_port, server_answers, wait_for
from tests.unit.test_cli import cli

pytestmark = pytest.mark.integration


def test_served_values_are_logged_landed_and_joined_to_a_training_set(example_repo: Path, services: Any,
                                                                      overrides: dict[str, Any]) -> None:
    services_py = example_repo / "services.py"
    services_py.write_text(services_py.read_text().replace('description="Inputs of the card fraud model',
                                                           'log_sample_rate=1.0,\n    description="Inputs of the card fraud model'))
    settings = load_settings(example_repo, **overrides)
    plan = compile_repo(example_repo)
    assert plan.service("fraud_model_v1").log_sample_rate == 1.0
    FileRegistry(settings.registry_root).apply(plan)
    topic = plan.source("payments").topic
    ensure_topics(settings, [topic], partitions=2)
    end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=10)
    produce_records(producer_config(settings), topic, payment_events(1500, end=end, span=dt.timedelta(hours=3), users=40,
                                                                     seed=91, late_fraction=0.0, malformed_fraction=0.0))
    StreamProcessor(plan, settings).run(until_caught_up=True)
    env = {**services.env(), "FEATURESTORE_PROJECT": settings.project, "FEATURESTORE_CONSUMER_GROUP": settings.consumer_group,
           "FEATURESTORE_REGISTRY_PATH": str(settings.registry_root), "FEATURESTORE_OFFLINE_PATH": str(settings.offline_root),
           "FEATURESTORE_KAFKA_OPTIONS": json.dumps(overrides["kafka_options"])}

    # the SDK, configured to log the keys of pii views (user_payments is tagged pii): two reads at fixed instants
    store = FeatureStore(example_repo, settings=settings.model_copy(update={"served_log_pii_keys": True}))
    rows = [{"user_id": u} for u in range(1, 21)]
    at = [end, end + dt.timedelta(minutes=40)]  # at or after the newest event: what online holds then
    answers = [store.get_online_features(service="fraud_model_v1", entity_rows=rows, at=t) for t in at]
    store.get_online_features(["user_payments:amount_sum_1h"], rows)  # not a service read: not logged
    store.close()  # sends what is queued

    # the server, with the default: no keys of pii views in the log
    token = cli("tokens", "create", "reader", "--grant", "read_online:*", "--repo", str(example_repo), env=env)
    assert token.returncode == 0, token.stderr
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "featurestore", "serve", "--repo", str(example_repo), "--port", str(port)],
                              env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    http = urllib3.PoolManager(retries=False)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: server_answers(server, http, url), 30, "the feature server")
        r = http.request("POST", url + "/v1/features/online", headers={"Authorization": f"Bearer {token.stdout.split()[-1]}",
                                                                       "Content-Type": "application/json"},
                         body=json.dumps({"service": "fraud_model_v1", "entities": {"user_id": [1, 2, 3]}}).encode())
        assert r.status == 200, r.data
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)

    landed = cli("served-log", "land", "--repo", str(example_repo), env=env)
    assert landed.returncode == 0 and "Landed 3 logged requests as 43 rows" in landed.stdout, landed.stdout + landed.stderr
    again = cli("served-log", "land", "--repo", str(example_repo), env=env)
    assert again.returncode == 0 and "Landed 0 logged requests" in again.stdout, "landing twice writes nothing twice"

    log = FeatureStore(example_repo, settings=settings).served_log("fraud_model_v1").to_pandas()
    assert len(log) == 43 and log["request_id"].nunique() == 3
    assert (log["amount_sum_1h__status"].isin(["present", "not_found"])).all()
    by_sdk = log[log["user_id"].notna()].sort_values(["served_at", "row"])
    assert len(by_sdk) == 40 and len(log[log["user_id"].isna()]) == 3  # the server left the pii keys out
    for answer, t in zip(answers, at):
        part = by_sdk[by_sdk["served_at"] == pd.Timestamp(t).floor("ms")]
        assert part["amount_sum_1h"].tolist() == answer.column("amount_sum_1h")
        assert part["amount_count_1d"].tolist() == answer.column("amount_count_1d")

    # joined to a training set built at the same keys and instants: the values the model saw
    entity = by_sdk[["user_id", "served_at"]].rename(columns={"served_at": "event_timestamp"}).astype({"user_id": "int64"})
    training = FeatureStore(example_repo, settings=settings).get_historical_features(
        entity.reset_index(drop=True), ["user_payments:amount_sum_1h", "user_payments:amount_count_1d"]).to_pandas()
    con = duckdb.connect()
    con.register("served", by_sdk)
    con.register("training", training)
    joined = con.sql("SELECT s.amount_sum_1h AS served, t.amount_sum_1h AS trained, s.amount_count_1d AS served_n, "
                     "t.amount_count_1d AS trained_n FROM served s JOIN training t "
                     "ON s.user_id = t.user_id AND s.served_at = t.event_timestamp").df()
    assert len(joined) == 40
    assert (joined["served_n"].fillna(0) == joined["trained_n"].fillna(0)).all()
    assert ((joined["served"].fillna(0) - joined["trained"].fillna(0)).abs() < 1e-6).all()

    # drift of what was served against that training set: none (the same values)
    reference = example_repo.parent / "train.parquet"
    training.to_parquet(reference)
    watched = cli("monitor", "--reference", str(reference), "--service", "fraud_model_v1", "--since", "1d", "--json",
                  "--repo", str(example_repo), env=env)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    report = json.loads(watched.stdout)
    assert {f["feature"] for f in report["features"]} == {"amount_sum_1h", "amount_count_1d"}
    assert all(f["psi"] is None or f["psi"] < 0.05 for f in report["features"]) and report["over_thresholds"] == []
    # and of what is written: the values online now of the view's entities
    written = cli("monitor", "--reference", str(reference), "--online", "user_payments", "--json", "--repo", str(example_repo),
                  env=env)
    assert written.returncode in (0, 1), written.stderr  # 1: drifted past a threshold, said on stderr
    now = {f["feature"]: f for f in json.loads(written.stdout)["features"]}
    assert set(now) == {"amount_sum_1h", "amount_count_1d"} and now["amount_count_1d"]["current_rows"] == 40

"""The online store on a real Redis Cluster: three primaries started from the redis-server
binary on loopback ports, `FEATURESTORE_REDIS_URL` naming one node. Processing, SDK and HTTP
reads, backfill, consistency and rebuild-online give what a single Redis gives."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import urllib3

from featurestore import FeatureStore
from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.demo import payment_events, produce_records
from featurestore.embedded.services import Service, start_redis_cluster
from featurestore.online.connection import OnlineRedis
from featurestore.runtime.kafka import ensure_topics, producer_config
from tests.conftest import FAST_GROUP
from tests.integration.server_harness import free_port, server_answers, wait_for
from tests.unit.test_cli import cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Service]]:
    nodes = start_redis_cluster(3, log_dir=tmp_path_factory.mktemp("cluster"))
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()


def _env(services: Any, redis_url: str, project: str, tmp: Path) -> dict[str, str]:
    return {**os.environ, **services.env(), "FEATURESTORE_REDIS_URL": redis_url, "FEATURESTORE_PROJECT": project,
            "FEATURESTORE_CONSUMER_GROUP": project, "FEATURESTORE_KAFKA_OPTIONS": json.dumps(FAST_GROUP),
            "FEATURESTORE_OFFLINE_PATH": str(tmp / f"offline-{project}"),
            "FEATURESTORE_REGISTRY_PATH": str(tmp / f"registry-{project}")}


def test_the_store_works_on_a_redis_cluster(cluster: list[Service], services: Any, example_repo: Path, tmp_path: Path,
                                            run_id: str) -> None:
    on_cluster = _env(services, f"redis://{cluster[1].address}/0", f"cl-{run_id}", tmp_path)
    single = _env(services, services.redis_url, f"one-{run_id}", tmp_path)
    plan = compile_repo(example_repo)
    topic = plan.source("payments").topic
    ensure_topics(load_settings(example_repo, kafka_bootstrap_servers=services.bootstrap_servers), [topic], partitions=3)
    end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
    records = payment_events(3000, end=end, span=dt.timedelta(hours=2), users=300, merchants=20, seed=21)
    produce_records(producer_config(load_settings(example_repo, kafka_bootstrap_servers=services.bootstrap_servers)),
                    topic, records)
    for env in (on_cluster, single):
        assert cli("apply", "--repo", str(example_repo), env=env).returncode == 0
        res = cli("run", "--until-caught-up", "--repo", str(example_repo), env=env)
        assert res.returncode == 0, res.stderr

    # the entities really are spread over the three primaries
    client = redis.Redis.from_url(on_cluster["FEATURESTORE_REDIS_URL"])
    online = OnlineRedis(client)
    assert online.is_cluster
    per_node = [sum(1 for _ in c.scan_iter(match=f"fs:cl-{run_id}:*")) for c in online.clients()]
    assert len(per_node) == 3 and all(n > 0 for n in per_node), per_node

    users = sorted({r.event["user_id"] for r in records if r.event})
    features = [f"user_payments:{f}" for f in plan.view("user_payments").feature_names]
    rows = [{"user_id": u} for u in users]

    def values(env: dict[str, str]) -> dict[str, list[Any]]:
        store = FeatureStore(example_repo, settings=load_settings(
            example_repo, redis_url=env["FEATURESTORE_REDIS_URL"], project=env["FEATURESTORE_PROJECT"],
            registry_path=env["FEATURESTORE_REGISTRY_PATH"], offline_path=env["FEATURESTORE_OFFLINE_PATH"]))
        try:
            return store.get_online_features(features, rows, at=end).to_dict()
        finally:
            store.close()

    want = values(single)
    assert values(on_cluster) == want and sum(want["amount_count_1d"]) > 0

    # the HTTP server reads the cluster too (asyncio client, routed by slot)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "featurestore", "serve", "--repo", str(example_repo), "--port",
                               str(port), "--no-auth"], env=on_cluster, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        http = urllib3.PoolManager(retries=False)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: server_answers(server, http, url), 30, "the feature server to be ready")
        body = {"features": features, "entities": {"user_id": users[:50]}, "at_ms": int(end.timestamp() * 1000)}
        got = http.request("POST", url + "/v1/features/online", body=json.dumps(body),
                           headers={"Content-Type": "application/json"})
        assert got.status == 200, got.data
        answer = json.loads(got.data)["features"]
        assert answer["amount_count_1d"]["values"] == want["amount_count_1d"][:50]
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)

    res = cli("consistency", "--repo", str(example_repo), env=on_cluster)  # exit 1 on any mismatch
    assert res.returncode == 0, res.stdout + res.stderr

    # rebuild-online: wipes every node, loads every entity back from the history
    res = cli("rebuild-online", "--repo", str(example_repo), env=on_cluster)
    assert res.returncode == 0, res.stderr
    assert values(on_cluster) == want

    # backfill of the same events into another project on the cluster
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(r.value for r in records) + b"\n")
    back = dict(on_cluster, FEATURESTORE_PROJECT=f"bf-{run_id}", FEATURESTORE_CONSUMER_GROUP=f"bf-{run_id}",
                FEATURESTORE_OFFLINE_PATH=str(tmp_path / "offline-bf"), FEATURESTORE_REGISTRY_PATH=str(tmp_path / "reg-bf"))
    assert cli("apply", "--repo", str(example_repo), env=back).returncode == 0
    res = cli("backfill", "--from", str(events), "--materialize", "--repo", str(example_repo), env=back)
    assert res.returncode == 0, res.stderr
    assert values(back)["amount_count_1d"] == want["amount_count_1d"]

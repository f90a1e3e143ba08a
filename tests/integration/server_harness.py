"""A running feature server for integration tests: the example repo applied, 1,200 payments
processed, tokens with narrow grants, and `featurestore serve` as a child process."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import urllib3

from featurestore import FeatureStore
from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.demo import payment_events, produce_records
from featurestore.runtime.kafka import ensure_topics, producer_config
from tests.unit.test_cli import cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_answers(server: subprocess.Popen[str], http: urllib3.PoolManager, url: str, path: str = "/v1/ready") -> bool:
    """The `featurestore serve` child answers 200 on `path` (raises if it exited)."""
    if server.poll() is not None:
        raise AssertionError(f"server exited: {server.stderr.read() if server.stderr else ''}")
    try:
        return http.request("GET", url + path).status == 200
    except urllib3.exceptions.HTTPError:
        return False


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    """Poll `condition` until it returns a truthy value (a condition, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Deployment:
    repo: Path
    env: dict[str, str]
    url: str
    records: list[Any]
    tokens: dict[str, str]
    token_ids: dict[str, str]
    audit: Path
    direct: FeatureStore


def create_token(repo: Path, env: dict[str, str], name: str, *grants: str) -> tuple[str, str]:
    args = ["tokens", "create", name, "--repo", str(repo)]
    for g in grants:
        args += ["--grant", g]
    res = cli(*args, env=env)
    assert res.returncode == 0, res.stderr
    token = res.stdout.strip().splitlines()[-1]
    token_id = res.stdout.split("Created token ")[1].split()[0]
    return token, token_id


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, services: Any) -> Iterator[Deployment]:
    import shutil
    import uuid

    from tests.conftest import EXAMPLE_REPO, FAST_GROUP

    run_id = uuid.uuid4().hex[:10]
    tmp = tmp_path_factory.mktemp("server")
    repo = tmp / "repo"
    shutil.copytree(EXAMPLE_REPO, repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    src = repo / "sources.py"
    src.write_text(src.read_text().replace('topic="payments"', f'topic="payments-{run_id}"'))
    env = {
        **services.env(),
        "FEATURESTORE_PROJECT": f"test-{run_id}",
        "FEATURESTORE_CONSUMER_GROUP": f"test-{run_id}",
        "FEATURESTORE_KAFKA_OPTIONS": json.dumps(FAST_GROUP),
        "FEATURESTORE_CHECKPOINT_INTERVAL_S": "1",
    }
    assert cli("apply", "--repo", str(repo), env=env).returncode == 0
    os.environ.update(env)  # the in-process SDK and settings read the same environment
    try:
        settings = load_settings(repo)
        topic = compile_repo(repo).source("payments").topic
        ensure_topics(settings, [topic], partitions=2)
        end = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=5)
        records = payment_events(1200, end=end, span=dt.timedelta(minutes=30), users=10, merchants=5, seed=11)
        produce_records(producer_config(settings), topic, records)
        res = cli("run", "--until-caught-up", "--repo", str(repo), env=env)
        assert res.returncode == 0, res.stderr

        grants = {
            "admin": ["admin"],
            "user_reader": ["read_online:view=user_payments"],
            "merchant_reader": ["read_online:view=merchant_payments"],
            "tag_reader": ["read_online:tag=domain=payments"],
            "offline_reader": ["read_offline:tag=domain=payments"],
            "applier": ["apply:view=merchant_payments"],
            "revoked": ["admin"],
        }
        tokens, ids = {}, {}
        for name, g in grants.items():
            tokens[name], ids[name] = create_token(repo, env, name, *g)
        assert cli("tokens", "revoke", ids["revoked"], "--repo", str(repo), env=env).returncode == 0

        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "featurestore", "serve", "--repo", str(repo), "--port", str(port)],
            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        url = f"http://127.0.0.1:{port}"
        http = urllib3.PoolManager(retries=False)

        wait_for(lambda: server_answers(server, http, url), 30, "the feature server to be ready")
        direct = FeatureStore(repo)
        try:
            yield Deployment(repo, env, url, records, tokens, ids, settings.audit_log_file, direct)
        finally:
            direct.close()
            server.send_signal(signal.SIGINT)
            server.wait(timeout=20)
    finally:
        for k in env:
            os.environ.pop(k, None)


def post(deployment: Deployment, path: str, body: Any, token: str | None, raw_token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"}
    if token is not None or raw_token is not None:
        headers["Authorization"] = f"Bearer {raw_token if raw_token is not None else deployment.tokens[str(token)]}"
    return urllib3.request("POST", deployment.url + path, body=json.dumps(body).encode(), headers=headers, retries=False)


def get(deployment: Deployment, path: str, token: str | None, raw_token: str | None = None) -> Any:
    headers: dict[str, str] = {}
    if token is not None or raw_token is not None:
        headers["Authorization"] = f"Bearer {raw_token if raw_token is not None else deployment.tokens[str(token)]}"
    return urllib3.request("GET", deployment.url + path, headers=headers, retries=False)


def audit_lines(deployment: Deployment) -> list[dict[str, Any]]:
    """The audit log's entries (JSON lines: split on newlines only; text may hold other line breaks)."""
    return [json.loads(line) for line in deployment.audit.read_bytes().split(b"\n") if line]



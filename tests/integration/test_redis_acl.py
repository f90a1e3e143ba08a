"""Least privilege on a real Redis with ACLs set up by the test: the processor runs as a user
without FLUSHALL/FLUSHDB/KEYS/CONFIG, the feature server as a read-only user; both confined
to the project's keys. Works against any Redis >= 6 the test's connection may administer."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
import redis
import urllib3

from featurestore import FeatureStore
from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.demo import payment_events, produce_records
from featurestore.runtime.kafka import ensure_topics, producer_config
from tests.integration.server_harness import free_port, server_answers, wait_for
from tests.unit.test_cli import cli

pytestmark = pytest.mark.integration

#: What the docs recommend (README "Security"); the project's key pattern is appended.
PROCESSOR_ACL = ["+@all", "-@dangerous", "-@admin", "-flushall", "-flushdb", "-keys", "-config"]
SERVER_ACL = ["+@read", "+@connection", "-@dangerous", "-keys"]


def _url_with(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


def test_processor_and_server_under_least_privilege_users(example_repo: Path, services: Any, overrides: dict,
                                                          tmp_path: Path) -> None:
    admin = redis.Redis.from_url(services.redis_url)
    project = str(overrides["project"])
    suffix = secrets.token_hex(4)
    proc_user, srv_user = f"fs-proc-{suffix}", f"fs-serve-{suffix}"
    proc_pw, srv_pw = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    pattern = f"~fs:{project}:*"
    admin.execute_command("ACL", "SETUSER", proc_user, "reset", "on", f">{proc_pw}", pattern, "resetchannels", *PROCESSOR_ACL)
    admin.execute_command("ACL", "SETUSER", srv_user, "reset", "on", f">{srv_pw}", pattern, "resetchannels", *SERVER_ACL)
    try:
        password_file = tmp_path / "redis-password"
        password_file.write_text(proc_pw + "\n")
        base = {
            **services.env(),
            "FEATURESTORE_PROJECT": project,
            "FEATURESTORE_CONSUMER_GROUP": str(overrides["consumer_group"]),
            "FEATURESTORE_KAFKA_OPTIONS": json.dumps(overrides["kafka_options"]),
        }
        proc_env = {**base, "FEATURESTORE_REDIS_USERNAME": proc_user, "FEATURESTORE_REDIS_PASSWORD_FILE": str(password_file)}
        assert cli("apply", "--repo", str(example_repo), env=base).returncode == 0
        settings = load_settings(example_repo, **overrides)
        topic = compile_repo(example_repo).source("payments").topic
        ensure_topics(settings, [topic], partitions=1)
        records = payment_events(400, end=dt.datetime.now(dt.timezone.utc), span=dt.timedelta(minutes=20), users=5, seed=3)
        produce_records(producer_config(settings), topic, records)

        res = cli("run", "--until-caught-up", "--repo", str(example_repo), env=proc_env)
        assert res.returncode == 0, res.stderr
        assert proc_pw not in res.stdout + res.stderr

        as_proc = redis.Redis.from_url(services.redis_url, username=proc_user, password=proc_pw)
        for command in (("FLUSHALL",), ("FLUSHDB",), ("KEYS", "*"), ("CONFIG", "GET", "maxmemory")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                as_proc.execute_command(*command)
        with pytest.raises(redis.exceptions.NoPermissionError):
            as_proc.set("someone-else:key", "x")  # outside the project's keys

        # the feature server as the read-only user (credentials in the URL: printed redacted)
        port = free_port()
        srv_env = {**os.environ, **base, "FEATURESTORE_REDIS_URL": _url_with(services.redis_url, srv_user, srv_pw)}
        server = subprocess.Popen(
            [sys.executable, "-m", "featurestore", "serve", "--no-auth", "--repo", str(example_repo), "--port", str(port)],
            env=srv_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            probe = urllib3.PoolManager(retries=False)
            wait_for(lambda: server_answers(server, probe, url), 30, "the server to be ready")
            users = sorted({r.event["user_id"] for r in records if r.event})
            body = {"features": ["user_payments:amount_count_1d", "user_payments:amount_sum_1d"], "entities": {"user_id": users}}
            resp = urllib3.request("POST", url + "/v1/features/online", body=orjson.dumps(body),
                                   headers={"Content-Type": "application/json"})
            assert resp.status == 200, resp.data
            got = orjson.loads(resp.data)["features"]["amount_count_1d"]["values"]
        finally:
            server.send_signal(signal.SIGINT)
            out, err = server.communicate(timeout=20)
        assert srv_pw not in out + err and "***" in out
        expected = [sum(1 for r in records if r.event and r.event["user_id"] == u) for u in users]
        assert got == expected
        direct = FeatureStore(example_repo, project=project, redis_url=services.redis_url).get_online_features(
            ["user_payments:amount_count_1d"], [{"user_id": u} for u in users]
        )
        assert direct.to_dict()["amount_count_1d"] == got

        as_server = redis.Redis.from_url(services.redis_url, username=srv_user, password=srv_pw)
        key = f"fs:{project}:user_payments:{users[0]}"
        assert as_server.exists(key)
        forbidden: list[tuple[str, ...]] = [("SET", key, "x"), ("HSET", key, "x", "1"), ("DEL", key), ("FLUSHALL",),
                                            ("EVAL", "return 1", "0")]
        for refused in forbidden:
            with pytest.raises(redis.exceptions.NoPermissionError):
                as_server.execute_command(*refused)
    finally:
        admin.execute_command("ACL", "DELUSER", proc_user, srv_user)
        admin.close()

"""The feature server on a real Redis, fed by the real processor from a real broker: the SDK over
HTTP equals a direct read, freshness per value, the authorization matrix, the audit log,
and the processor's metrics read by `featurestore status`."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import urllib3

from featurestore import FeatureStore
from featurestore.compile import compile_repo
from featurestore.config import load_settings
from featurestore.demo import payment_events, produce_records
from featurestore.errors import AuthError, StoreUnavailable
from featurestore.runtime.kafka import producer_config
from tests.integration.server_harness import Deployment, audit_lines, free_port, get, post, server_answers, wait_for
from tests.unit.test_cli import cli

pytestmark = pytest.mark.integration

FEATURES = ["user_payments:amount_count_1d", "user_payments:amount_sum_1d", "user_payments:last_country"]


def _newest_event_ms(records: list[Any], user: int) -> int:
    times = [r.event["ts"] for r in records if r.event and r.event["user_id"] == user]
    return max(int(dt.datetime.fromisoformat(t).timestamp() * 1000) for t in times)


def test_sdk_over_http_equals_a_direct_read_with_freshness(deployment: Deployment) -> None:
    users = sorted({r.event["user_id"] for r in deployment.records if r.event})
    rows = [{"user_id": u} for u in users] + [{"user_id": 10**9}]
    at = dt.datetime.now(dt.timezone.utc)
    remote = FeatureStore(deployment.repo, server_url=deployment.url, token=deployment.tokens["user_reader"])
    try:
        via_http = remote.get_online_features(service="fraud_model_v1", entity_rows=rows, at=at)
    finally:
        remote.close()
    direct = deployment.direct.get_online_features(service="fraud_model_v1", entity_rows=rows, at=at)
    assert via_http.to_dict() == direct.to_dict()
    assert via_http.feature_names == direct.feature_names and len(via_http.feature_names) == 10
    assert via_http.status("amount_count_1d") == ["present"] * len(users) + ["not_found"]
    newest = [_newest_event_ms(deployment.records, u) for u in users]
    assert via_http.event_time_ms("amount_count_1d") == newest + [None]
    at_ms = int(at.timestamp() * 1000)
    assert via_http.staleness("amount_sum_1d")[:-1] == [dt.timedelta(milliseconds=at_ms - t) for t in newest]


def test_max_staleness_turns_old_values_into_stale_not_silent(deployment: Deployment) -> None:
    users = sorted({r.event["user_id"] for r in deployment.records if r.event})[:4]
    rows = [{"user_id": u} for u in users]
    newest = [_newest_event_ms(deployment.records, u) for u in users]
    at_ms = max(newest) + 60_000
    at = dt.datetime.fromtimestamp(at_ms / 1000, dt.timezone.utc)
    cutoff = sorted(at_ms - t for t in newest)[1]  # at least one fresher and one staler than this
    body = {"features": FEATURES, "entities": {"user_id": users}, "at_ms": at_ms, "max_staleness_ms": cutoff}
    answer = post(deployment, "/v1/features/online", body, "user_reader")
    assert answer.status == 200
    got = orjson.loads(answer.data)["features"]["amount_count_1d"]
    for i, t in enumerate(newest):
        if at_ms - t > cutoff:
            assert got["statuses"][i] == "stale" and got["values"][i] is None
        else:
            assert got["statuses"][i] == "present" and got["values"][i] > 0
        assert got["event_time_ms"][i] == t and got["staleness_ms"][i] == at_ms - t
    assert "stale" in got["statuses"] and "present" in got["statuses"]
    sdk = deployment.direct.get_online_features(FEATURES, rows, at=at, max_staleness=dt.timedelta(milliseconds=cutoff))
    assert sdk.status("amount_count_1d") == got["statuses"]


def test_authorization_matrix_and_audit(deployment: Deployment) -> None:
    plan = compile_repo(deployment.repo)
    user = next(r.event["user_id"] for r in deployment.records if r.event)
    merchant = next(r.event["merchant_id"] for r in deployment.records if r.event)
    now_iso = dt.datetime.now(dt.timezone.utc).isoformat()
    online = {"features": FEATURES, "entities": {"user_id": [user]}}
    # endpoint -> (method, path, body, token without permission, token with permission)
    endpoints: dict[str, tuple[str, str, Any, str, str]] = {
        "online": ("POST", "/v1/features/online", online, "merchant_reader", "user_reader"),
        "online by tag": ("POST", "/v1/features/online", online, "offline_reader", "tag_reader"),
        "online by service": ("POST", "/v1/features/online", {"service": "merchant_monitoring",
                              "entities": {"merchant_id": [merchant]}}, "user_reader", "merchant_reader"),
        "historical": ("POST", "/v1/features/historical", {"features": FEATURES, "entities": {
            "user_id": [user], "event_timestamp": [now_iso]}}, "user_reader", "offline_reader"),
        "registry": ("GET", "/v1/registry", None, "applier", "user_reader"),
        "apply": ("POST", "/v1/apply", {"plan": plan.model_dump(mode="json")}, "user_reader", "admin"),
        "metrics": ("GET", "/metrics", None, "user_reader", "admin"),
    }
    valid = deployment.tokens["user_reader"]
    wrong = valid[:-4] + ("AAAA" if not valid.endswith("AAAA") else "BBBB")
    before = len(audit_lines(deployment))
    sent = 0
    for name, (method, path, body, without, with_) in endpoints.items():
        cases = [(None, None, 401), ("revoked", None, 401), (None, wrong, 401), (without, None, 403), (with_, None, 200)]
        for token, raw, expected in cases:
            resp = get(deployment, path, token, raw) if method == "GET" else post(deployment, path, body, token, raw)
            sent += 1
            who = token or ("a wrong token" if raw else "no token")
            assert resp.status == expected, f"{name} with {who}: {resp.status} {resp.data[:300]!r}"
            if expected != 200:
                assert orjson.loads(resp.data)["error"]["message"]
    # views nobody declared: denied to a reader, a plain 400 for an admin
    ghost = {"features": ["ghost_view:x"], "entities": {"user_id": [1]}}
    assert post(deployment, "/v1/features/online", ghost, "user_reader").status == 403
    assert post(deployment, "/v1/features/online", ghost, "admin").status == 400
    assert post(deployment, "/v1/features/online", {"service": "nope", "entities": {"user_id": [1]}}, "user_reader").status == 403
    sent += 3

    lines = audit_lines(deployment)[before:]
    assert len(lines) == sent, "one audit line per request, allowed or denied"
    assert sorted({line["status"] for line in lines}) == [200, 400, 401, 403]
    assert all({"token_id", "views", "entities", "status", "latency_ms", "path"} <= set(line) for line in lines)
    assert {line["token_id"] for line in lines if line["status"] == 401} == {None}
    granted = [line for line in lines if line["status"] == 200 and line["path"] == "/v1/features/online"]
    assert {line["token_id"] for line in granted} == {deployment.token_ids[t] for t in ("user_reader", "tag_reader", "merchant_reader")}
    text = deployment.audit.read_text()
    for token in deployment.tokens.values():
        assert token not in text, "tokens never reach the audit log"
    for line in lines:
        assert "user_payments" not in line.get("keys", {}), "user_payments is tagged pii: its keys are never logged"
    assert any(line.get("keys", {}).get("merchant_payments") == [merchant] for line in lines)


def test_tokens_file_holds_hashes_only(deployment: Deployment) -> None:
    stored = (deployment.repo / ".featurestore" / "tokens.json").read_text()
    assert all(token not in stored for token in deployment.tokens.values())
    assert oct((deployment.repo / ".featurestore" / "tokens.json").stat().st_mode & 0o777) == "0o600"
    listing = cli("tokens", "list", "--repo", str(deployment.repo), env=deployment.env)
    assert listing.returncode == 0 and "revoked" in listing.stdout and deployment.token_ids["admin"] in listing.stdout
    with pytest.raises(AuthError) as err:
        FeatureStore(deployment.repo, server_url=deployment.url, token="fst_nope_nope").get_online_features(
            FEATURES, [{"user_id": 1}]
        )
    assert err.value.status == 401


def test_serve_refuses_to_run_without_auth_on_a_public_address(deployment: Deployment) -> None:
    res = cli("serve", "--no-auth", "--host", "0.0.0.0", "--repo", str(deployment.repo), env=deployment.env)
    assert res.returncode == 1
    assert "refusing to serve without authentication on 0.0.0.0" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_processor_metrics_and_status(deployment: Deployment) -> None:
    settings = load_settings(deployment.repo)
    topic = compile_repo(deployment.repo).source("payments").topic
    more = payment_events(300, end=dt.datetime.now(dt.timezone.utc), span=dt.timedelta(minutes=5), users=10, seed=12)
    produce_records(producer_config(settings), topic, more)
    port = free_port()
    env = {**os.environ, **deployment.env, "FEATURESTORE_METRICS_ADDRESS": f"127.0.0.1:{port}", "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "featurestore", "run", "--repo", str(deployment.repo)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    valid = sum(1 for r in more if r.event)  # 5 minutes of events: none later than the 1 h allowed lateness

    last: list[str] = []

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("│┃").split("│")]

    def caught_up() -> str | None:
        res = cli("status", "--repo", str(deployment.repo), env=env)
        last[:] = [res.stdout + res.stderr]
        table = [cells(line) for line in res.stdout.splitlines() if "│" in line]
        rows = {row[0]: row for row in table}
        lags = [row[-1] for row in table if row[0] == topic]
        return res.stdout if rows.get("user_payments", [""] * 3)[2] == f"{valid:,}" and lags == ["0", "0"] else None

    try:
        try:
            out = wait_for(caught_up, 60, f"status to show {valid} events and no lag")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last status: {last}") from None
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    row = next(cells(line) for line in out.splitlines() if "user_payments" in line)
    assert row[1].endswith("ago") and row[3].startswith("≤") and row[4].startswith("≤"), out
    malformed = sum(1 for r in more if r.event is None)
    assert ("malformed_json" in out or "schema_violation" in out) == bool(malformed), out


def test_openapi_document_and_bad_bodies(deployment: Deployment) -> None:
    doc = orjson.loads(urllib3.request("GET", deployment.url + "/openapi.json").data)
    assert {"/v1/features/online", "/v1/features/historical", "/v1/registry", "/v1/apply", "/metrics"} <= set(doc["paths"])
    online = doc["paths"]["/v1/features/online"]["post"]
    assert {"200", "401", "403"} <= set(online["responses"])
    bad = {"features": FEATURES}  # no entities
    assert post(deployment, "/v1/features/online", bad, None).status == 401, "authentication comes before validation"
    resp = post(deployment, "/v1/features/online", bad, "user_reader")
    assert resp.status == 422 and "entities" in orjson.loads(resp.data)["error"]["message"]
    resp = post(deployment, "/v1/features/online", {"features": FEATURES, "entities": {"user_id": ["x"]}}, "user_reader")
    assert resp.status == 400 and "must be int" in orjson.loads(resp.data)["error"]["message"]
    last = audit_lines(deployment)[-1]
    assert last["status"] == 400 and last["path"] == "/v1/features/online" and last["token_id"] == deployment.token_ids["user_reader"]


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    import ipaddress

    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = tmp / "cert.pem", tmp / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_https(deployment: Deployment, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "featurestore", "serve", "--repo", str(deployment.repo), "--port", str(port),
         "--tls-cert", str(cert), "--tls-key", str(key)],
        env={**os.environ, **deployment.env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    https = urllib3.PoolManager(ca_certs=str(cert), retries=False)
    url = f"https://127.0.0.1:{port}"

    try:
        wait_for(lambda: server_answers(server, https, url, "/v1/health"), 30, "the HTTPS server")
        token = deployment.tokens["user_reader"]
        resp = https.request("GET", url + "/v1/registry", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200 and [v["name"] for v in orjson.loads(resp.data)["views"]] == ["user_payments"]
        remote = FeatureStore(deployment.repo, server_url=url, token=token)
        with pytest.raises(StoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):  # an unknown CA is refused
            remote.get_online_features(FEATURES, [{"user_id": 1}])
        remote.close()
        trusted = FeatureStore(deployment.repo, server_url=url, token=token, server_ca_certs=str(cert))
        assert trusted.get_online_features(FEATURES, [{"user_id": 1}]).status("amount_count_1d") in (["present"], ["not_found"])
        trusted.close()
        with pytest.raises(urllib3.exceptions.HTTPError):
            urllib3.request("GET", f"http://127.0.0.1:{port}/v1/health", retries=False)
    finally:
        https.clear()
        stopping = time.monotonic()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert time.monotonic() - stopping < 15, "the server stops within its graceful-shutdown timeout"

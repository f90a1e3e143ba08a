"""Tokens, permissions and transport-security settings: pure logic, no services."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurestore.config import load_settings, redact_url
from featurestore.errors import ConfigError
from featurestore.plan import KeySpec, ViewPlan
from featurestore.server.audit import is_pii, logged_keys
from featurestore.server.auth import Permission, TokenStore, allowed


def _view(name: str, tags: dict[str, str]) -> ViewPlan:
    return ViewPlan(name=name, entities=["user"], join_keys=[KeySpec(name="user_id", dtype="int")], source="s",
                    ttl_ms=None, allowed_lateness_ms=None, freshness_slo_ms=None, row_features=[],
                    aggregations=[], tags=tags)


def test_permissions_cover_by_name_tag_or_star_and_nothing_else() -> None:
    users = _view("users", {"domain": "payments"})
    by_name = Permission.parse("read_online:view=users")
    by_tag = Permission.parse("read_online:tag=domain=payments")
    star = Permission.parse("read_offline:*")
    admin = Permission.parse("admin")
    assert by_name.covers("read_online", "users", users.tags) and not by_name.covers("read_online", "merchants", {})
    assert not by_name.covers("read_offline", "users", users.tags)
    assert by_tag.covers("read_online", "users", users.tags) and not by_tag.covers("read_online", "merchants", {})
    assert star.covers("read_offline", "merchants", {}) and not star.covers("read_online", "merchants", {})
    assert admin.covers("apply", "anything", None)
    assert str(by_tag) == "read_online:tag=domain=payments" and str(Permission.parse(str(by_name))) == str(by_name)
    for bad in ("write:*", "read_online:users", "admin:*", "read_online:tag=domain"):
        with pytest.raises(ConfigError, match="grant"):
            Permission.parse(bad)


def test_tokens_are_stored_hashed_and_checked_exactly(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    token, record = store.create("svc", [Permission.parse("read_online:view=users")])
    assert token not in (tmp_path / "tokens.json").read_text()
    assert store.authenticate(token) == record
    assert store.authenticate(token[:-1] + ("x" if token[-1] != "x" else "y")) is None
    assert store.authenticate(None) is None and store.authenticate("garbage") is None
    other = TokenStore(tmp_path / "tokens.json")  # e.g. the CLI, while a server holds `store`
    other.revoke(record.id)
    assert store.authenticate(token) is None, "a revocation reaches a running store"
    assert not allowed(record, "read_online", None, "ghost"), "undeclared views are denied"


def test_audit_never_logs_keys_of_pii_views() -> None:
    pii, plain = _view("users", {"pii": "true"}), _view("merchants", {"pii": "false"})
    assert is_pii(pii) and not is_pii(plain) and not is_pii(_view("x", {}))
    assert logged_keys(pii, [(1,), (2,)]) is None
    assert logged_keys(plain, [(1,), (2,)]) == [1, 2]


def test_secrets_come_from_the_environment_or_files_never_the_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "featurestore.yaml").write_text("redis_password: hunter2\n")
    with pytest.raises(ConfigError, match="'redis_password' is a secret"):
        load_settings(tmp_path)
    (tmp_path / "featurestore.yaml").write_text("redis_url: redis://u:hunter2@host:6379/0\n")
    with pytest.raises(ConfigError, match="redis_url carries a password"):
        load_settings(tmp_path)
    (tmp_path / "featurestore.yaml").write_text("kafka_options:\n  sasl.password: hunter2\n")
    with pytest.raises(ConfigError, match="sasl.password"):
        load_settings(tmp_path)
    (tmp_path / "featurestore.yaml").write_text("kafka_security_protocol: SASL_SSL\nkafka_sasl_mechanism: SCRAM-SHA-512\n"
                                                 "kafka_sasl_username: proc\n")
    (tmp_path / "pw").write_text("s3cret\n")
    monkeypatch.setenv("FEATURESTORE_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "pw"))
    settings = load_settings(tmp_path)
    opts = settings.kafka_security_options()
    assert opts == {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "proc",
                    "sasl.password": "s3cret"}
    assert "s3cret" not in repr(settings)
    monkeypatch.setenv("FEATURESTORE_REDIS_PASSWORD", "hunter2")
    assert "hunter2" not in repr(load_settings(tmp_path))


def test_oauthbearer_and_mechanism_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURESTORE_KAFKA_OAUTH_CLIENT_SECRET", "abc")
    s = load_settings(tmp_path, kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="OAUTHBEARER",
                      kafka_oauth_token_endpoint_url="https://idp/token", kafka_oauth_client_id="fs")
    opts = s.kafka_security_options()
    assert opts["sasl.oauthbearer.method"] == "oidc" and opts["sasl.oauthbearer.client.secret"] == "abc"
    with pytest.raises(ConfigError, match="needs kafka_sasl_mechanism"):
        load_settings(tmp_path, kafka_security_protocol="SASL_SSL").kafka_security_options()
    with pytest.raises(ConfigError, match="kafka_sasl_password is required"):
        load_settings(tmp_path, kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN").kafka_security_options()
    assert redact_url("rediss://proc:pw@redis:6380/0") == "rediss://proc:***@redis:6380/0"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"

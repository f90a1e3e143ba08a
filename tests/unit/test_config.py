"""Settings precedence: arguments > environment > featurestore.yaml > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurestore.config import load_settings
from featurestore.errors import ConfigError


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS", "FEATURESTORE_REDIS_URL", "FEATURESTORE_OFFLINE_PATH",
                "FEATURESTORE_PROJECT", "FEATURESTORE_KAFKA_OPTIONS"):
        monkeypatch.delenv(var, raising=False)
    repo = tmp_path / "my repo"
    repo.mkdir()
    defaults = load_settings(repo)
    assert defaults.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert defaults.project == "my_repo"
    assert defaults.offline_root == repo / ".featurestore" / "offline"
    assert defaults.consumer_group == "featurestore-my_repo"

    (repo / "featurestore.yaml").write_text(
        "kafka_bootstrap_servers: file:9092\nredis_url: redis://file:6379/0\noffline_path: history\n"
        "kafka_options:\n  fetch.wait.max.ms: 20\n"
    )
    from_file = load_settings(repo)
    assert from_file.kafka_bootstrap_servers == "file:9092"
    assert from_file.offline_root == repo / "history", "relative paths are relative to the repo"
    assert from_file.kafka_options == {"fetch.wait.max.ms": 20}

    monkeypatch.setenv("FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS", "env:9092")
    monkeypatch.setenv("FEATURESTORE_KAFKA_OPTIONS", '{"linger.ms": 7}')
    from_env = load_settings(repo)
    assert from_env.kafka_bootstrap_servers == "env:9092"
    assert from_env.redis_url == "redis://file:6379/0"
    # dict settings merge key by key across sources
    assert from_env.kafka_options == {"fetch.wait.max.ms": 20, "linger.ms": 7}

    from_args = load_settings(repo, kafka_bootstrap_servers="arg:9092")
    assert from_args.kafka_bootstrap_servers == "arg:9092"


def test_default_paths_are_inside_a_relative_repo_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for var in ("FEATURESTORE_OFFLINE_PATH", "FEATURESTORE_REGISTRY_PATH"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "repo").mkdir()
    s = load_settings("repo")
    assert s.offline_root == Path("repo/.featurestore/offline")
    assert s.registry_root == Path("repo/.featurestore/registry")


def test_invalid_settings_name_the_setting(tmp_path: Path) -> None:
    (tmp_path / "featurestore.yaml").write_text("batch_size: -3\n")
    with pytest.raises(ConfigError, match="batch_size"):
        load_settings(tmp_path)
    (tmp_path / "featurestore.yaml").write_text("no_such_setting: 1\n")
    with pytest.raises(ConfigError, match="no_such_setting"):
        load_settings(tmp_path)

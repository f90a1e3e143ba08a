"""Settings: frozen, documented, with precedence arguments > environment > featurestore.yaml > defaults.

Environment variables are the setting names in upper case prefixed with `FEATURESTORE_`
(`FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS`, `FEATURESTORE_REDIS_URL`, `FEATURESTORE_OFFLINE_PATH`, ...);
dict-valued settings take JSON (`FEATURESTORE_KAFKA_OPTIONS='{"security.protocol": "SSL"}'`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from featurestore.errors import ConfigError

CONFIG_FILE = "featurestore.yaml"
STATE_DIR = ".featurestore"


class Settings(BaseSettings):
    """Where the feature store's components are and how the processor batches."""

    model_config = SettingsConfigDict(env_prefix="FEATURESTORE_", frozen=True, extra="forbid")

    project: str = Field("", description="Namespace of Redis keys and the consumer group; default: repo folder name.")
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers.")
    kafka_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="Extra librdkafka options for every client (TLS, SASL, tuning)."
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Online store (redis:// or rediss://).")
    offline_path: Path | None = Field(
        None, description="Parquet history root; default <repo>/.featurestore/offline (relative: to the repo)."
    )
    registry_path: Path | None = Field(None, description="Registry folder; default <repo>/.featurestore/registry.")
    consumer_group: str = Field("", description="Kafka consumer group; default featurestore-<project>.")
    batch_size: int = Field(20_000, gt=0, description="Maximum records the processor takes per batch.")
    batch_timeout_s: float = Field(0.2, gt=0, description="Longest wait for a batch to fill.")
    checkpoint_interval_s: float = Field(5.0, gt=0, description="Parquet flush + offset commit interval.")
    max_record_bytes: int = Field(1024 * 1024, gt=0, description="Larger records are dead-lettered as oversized.")
    max_retry_backoff_s: float = Field(5.0, gt=0, description="Longest wait between retries of a failed write.")
    max_future_skew_s: float = Field(
        300.0, ge=0, description="Events stamped further than this in the future are dead-lettered."
    )

    def resolved(self, repo: Path) -> Settings:
        """Fill the defaults that depend on the repository path."""
        project = self.project or re.sub(r"[^A-Za-z0-9_.-]", "_", repo.resolve().name)
        state = Path(STATE_DIR)
        return self.model_copy(
            update={
                "project": project,
                "offline_path": repo / (self.offline_path or state / "offline"),
                "registry_path": repo / (self.registry_path or state / "registry"),
                "consumer_group": self.consumer_group or f"featurestore-{project}",
            }
        )

    @property
    def offline_root(self) -> Path:
        assert self.offline_path is not None, "call resolved() first"
        return self.offline_path

    @property
    def registry_root(self) -> Path:
        assert self.registry_path is not None, "call resolved() first"
        return self.registry_path


def load_settings(repo: Path | str, **overrides: Any) -> Settings:
    """Settings for a repository: `overrides` > environment > <repo>/featurestore.yaml > defaults."""
    repo = Path(repo)
    config_file = repo / CONFIG_FILE

    class _RepoSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=config_file))

    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        raw = _RepoSettings(**clean)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(
            f"invalid setting '{where}': {err['msg']} (from arguments, FEATURESTORE_{where.upper()} or {config_file})"
        ) from None
    except Exception as exc:  # yaml syntax errors and the like
        raise ConfigError(f"cannot read {config_file}: {exc}") from None
    return Settings.model_validate(raw.model_dump()).resolved(repo)

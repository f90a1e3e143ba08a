"""Settings: frozen, documented, with precedence arguments > environment > featurestore.yaml > defaults.

Environment variables are the setting names in upper case prefixed with `FEATURESTORE_`
(`FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS`, `FEATURESTORE_REDIS_URL`, `FEATURESTORE_OFFLINE_PATH`, ...);
dict-valued settings take JSON (`FEATURESTORE_KAFKA_OPTIONS='{"fetch.wait.max.ms": 20}'`).
Transport security has its own settings (`kafka_security_protocol`, `kafka_ssl_*`,
`kafka_sasl_*`): `kafka_options` may not name `security.protocol`, `ssl.*` or `sasl.*`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator
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
        default_factory=dict, description="Extra librdkafka options for every client (tuning; not security.protocol, ssl.*, sasl.*)."
    )

    @field_validator("kafka_options")
    @classmethod
    def _no_security_in_kafka_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key == "security.protocol" or key.startswith(("ssl.", "sasl.", "enable.ssl")):
                raise ValueError(f"'{key}' is transport security: use the kafka_security_protocol, kafka_ssl_* and "
                                 "kafka_sasl_* settings, which kafka_options cannot override")
        return value
    redis_url: str = Field("redis://127.0.0.1:6379/0", description=(
        "Online store: redis:// or rediss://, or redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB] for a primary "
        "found (and followed through failovers) by Redis Sentinel."))
    offline_path: Path | None = Field(
        None, description="Parquet history root; default <repo>/.featurestore/offline (relative: to the repo)."
    )
    registry_path: Path | None = Field(None, description="Registry folder; default <repo>/.featurestore/registry.")
    consumer_group: str = Field("", description="Kafka consumer group; default featurestore-<project>.")
    batch_size: int = Field(200_000, gt=0, description=(
        "Maximum records the processor takes per batch (under a backlog: larger batches fold more events into "
        "each entity's state at once; when idle a batch is what has arrived). ~1.7 KB of memory per record."))
    batch_timeout_s: float = Field(0.2, gt=0, description=(
        "Default engine: longest wait for a first record when none is queued (a batch is what is "
        "queued, up to batch_size); Faust engine: longest wait for a batch to fill."))
    checkpoint_interval_s: float = Field(5.0, gt=0, description="Parquet flush + offset commit interval.")
    max_record_bytes: int = Field(1024 * 1024, gt=0, description="Larger records are dead-lettered as oversized.")
    max_dead_letter_bytes: int = Field(256 * 1024, gt=0, description=(
        "Larger dead letters go to the dead-letter topic truncated (headers error.truncated, error.original_size, "
        "error.payload_path), their full bytes to <offline_path>/_dead_letters."))
    max_retry_backoff_s: float = Field(5.0, gt=0, description="Longest wait between retries of a failed write.")
    online_cache_mb: int = Field(512, ge=0, description=(
        "Memory (MiB) a processor keeps of its entities' online states; beyond it, the least recently written "
        "are read back from Redis when their entity comes again (0: read every state back)."))
    request_feature_budget_ms: float = Field(50.0, gt=0, description=(
        "Longest a request-time feature's function may run for one row of an online read; a longer call gives that "
        "value the status `error`."))
    allow_empty_online_store: bool = Field(False, description=(
        "Let the SDK read a Redis that holds no data of the project yet (every entity not_found); by default "
        "such a read is refused, as the URL is most likely the wrong one."))
    max_future_skew_s: float = Field(
        300.0, ge=0, description="Events stamped further than this in the future are dead-lettered."
    )
    metrics_address: str = Field(
        "", description="host:port where `featurestore run` serves Prometheus metrics (and `status` reads them); empty: off."
    )
    # -- transport security: secrets only from the environment or files -------------------
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="librdkafka security.protocol."
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = Field(
        None, description="SASL mechanism (with SASL_PLAINTEXT or SASL_SSL)."
    )
    kafka_sasl_username: str = Field("", description="SASL user (PLAIN, SCRAM).")
    kafka_sasl_password: SecretStr | None = Field(None, description="SASL password: environment only.")
    kafka_sasl_password_file: Path | None = Field(None, description="File holding the SASL password.")
    kafka_ssl_ca_location: Path | None = Field(None, description="CA bundle that signed the brokers' certificates.")
    kafka_ssl_certificate_location: Path | None = Field(None, description="Client certificate (mutual TLS).")
    kafka_ssl_key_location: Path | None = Field(None, description="Client private key (mutual TLS).")
    kafka_oauth_token_endpoint_url: str = Field("", description="OAUTHBEARER: OIDC token endpoint (client credentials).")
    kafka_oauth_client_id: str = Field("", description="OAUTHBEARER: OIDC client id.")
    kafka_oauth_client_secret: SecretStr | None = Field(None, description="OAUTHBEARER: client secret: environment only.")
    kafka_oauth_client_secret_file: Path | None = Field(None, description="File holding the OIDC client secret.")
    kafka_oauth_scope: str = Field("", description="OAUTHBEARER: scope requested.")
    redis_username: str = Field("", description="Redis ACL user (overrides the URL's).")
    redis_password: SecretStr | None = Field(None, description="Redis password: environment only.")
    redis_password_file: Path | None = Field(None, description="File holding the Redis password.")
    redis_ssl_ca_certs: Path | None = Field(None, description="CA bundle for rediss:// servers.")
    tokens_path: Path | None = Field(None, description="Feature server API token hashes; default .featurestore/tokens.json.")
    audit_log_path: Path | None = Field(None, description="Feature server audit log (JSON lines); default .featurestore/audit.jsonl.")
    # -- feature server limits: checked before any work is done -----------------------------
    max_request_bytes: int = Field(4 * 1024 * 1024, gt=0, description="Feature server: largest request body (413 beyond).")
    max_online_entities: int = Field(10_000, gt=0, description="Feature server: most entities in one online request (413 beyond).")
    max_historical_rows: int = Field(100_000, gt=0, description="Feature server: most entity rows in one historical request (413 beyond).")
    serve_limit_concurrency: int = Field(
        256, gt=0, description="Feature server: connections and tasks served at once per worker (503 beyond)."
    )
    serve_backlog: int = Field(1024, gt=0, description="Feature server: pending TCP connections the socket queues.")
    served_log_topic: str = Field("", description=(
        "Kafka topic of the served-value log (services with a log_sample_rate); default <project>.served."))
    served_log_pii_keys: bool = Field(False, description=(
        "Log the entity keys of views tagged pii in the served-value log too (default: left out)."))
    console_reference: Path | None = Field(None, description=(
        "A training set (Parquet) the web console plots feature distributions against (relative: to the repo)."))
    repo_path: Path | None = Field(None, description="The feature repository (--repo); the only code a plan may run.")

    _groups: _Groups = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        """The groups are built once, when the settings are made (a model never changes)."""
        self._groups = _Groups.of(self)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Settings:
        """A copy with some settings changed (validated again, its groups rebuilt from them)."""
        return Settings.model_validate({**dict(super().model_copy(deep=deep)), **(update or {})})

    # -- the settings by concern: what a component that needs one concern takes ------------
    @property
    def kafka(self) -> KafkaSettings:
        """Brokers, client options, consumer group and transport security."""
        return self._groups.kafka

    @property
    def redis(self) -> RedisSettings:
        """The online store: URL, credentials, TLS, and its clients."""
        return self._groups.redis

    @property
    def processor(self) -> ProcessorSettings:
        """How a stream processor batches, checkpoints, bounds its input and memory."""
        return self._groups.processor

    @property
    def server(self) -> ServerSettings:
        """The feature server's limits and the online read's."""
        return self._groups.server

    @property
    def paths(self) -> PathSettings:
        """Where the repository's state lives; only settings loaded for a repository have them."""
        if self._groups.paths is None:
            raise ConfigError("these settings were not loaded for a feature repository: use load_settings(repo)")
        return self._groups.paths

    # -- shorthands of the groups' most used parts ------------------------------------------
    def kafka_security_options(self) -> dict[str, Any]:
        """`self.kafka.security_options()`."""
        return self.kafka.security_options()

    def redis_client(self, **kwargs: Any) -> Any:
        """`self.redis.client(**kwargs)`."""
        return self.redis.client(**kwargs)

    @property
    def redis_display(self) -> str:
        """The Redis URL without its password, for messages and logs."""
        return self.redis.display

    def resolved(self, repo: Path) -> Settings:
        """The settings with the defaults that depend on the repository path filled in."""
        project = self.project or re.sub(r"[^A-Za-z0-9_.-]", "_", repo.resolve().name)
        state = Path(STATE_DIR)
        update = {
            "project": project,
            "offline_path": repo / (self.offline_path or state / "offline"),
            "registry_path": repo / (self.registry_path or state / "registry"),
            "consumer_group": self.consumer_group or f"featurestore-{project}",
            "served_log_topic": self.served_log_topic or f"{project}.served",
            "console_reference": repo / self.console_reference if self.console_reference is not None else None,
            "tokens_path": repo / (self.tokens_path or state / "tokens.json"),
            "audit_log_path": repo / (self.audit_log_path or state / "audit.jsonl"),
            "repo_path": repo.resolve(),
        }
        return Settings.model_validate({**dict(self), **update})  # validated again: the groups are rebuilt

    @property
    def offline_root(self) -> Path:
        """`self.paths.offline`."""
        return self.paths.offline

    @property
    def registry_root(self) -> Path:
        """`self.paths.registry`."""
        return self.paths.registry

    @property
    def repo_root(self) -> Path:
        """`self.paths.repo`."""
        return self.paths.repo

    @property
    def tokens_file(self) -> Path:
        """`self.paths.tokens`."""
        return self.paths.tokens

    @property
    def audit_log_file(self) -> Path:
        """`self.paths.audit_log`."""
        return self.paths.audit_log


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True)


class KafkaSettings(_Group):
    """Brokers, client options, consumer group and transport security (the `kafka_*` settings)."""

    bootstrap_servers: str
    options: dict[str, str | int | float | bool]
    consumer_group: str
    security_protocol: str
    sasl_mechanism: str | None
    sasl_username: str
    sasl_password: SecretStr | None
    sasl_password_file: Path | None
    ssl_ca_location: Path | None
    ssl_certificate_location: Path | None
    ssl_key_location: Path | None
    oauth_token_endpoint_url: str
    oauth_client_id: str
    oauth_client_secret: SecretStr | None
    oauth_client_secret_file: Path | None
    oauth_scope: str

    def security_options(self) -> dict[str, Any]:
        """librdkafka options for TLS and SASL (secrets read from the environment or files here)."""
        opts: dict[str, Any] = {"security.protocol": self.security_protocol}
        if self.ssl_ca_location:
            opts["ssl.ca.location"] = str(self.ssl_ca_location)
        if self.ssl_certificate_location:
            opts["ssl.certificate.location"] = str(self.ssl_certificate_location)
        if self.ssl_key_location:
            opts["ssl.key.location"] = str(self.ssl_key_location)
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise ConfigError(f"kafka_security_protocol {self.security_protocol} needs kafka_sasl_mechanism")
            opts["sasl.mechanism"] = self.sasl_mechanism
            if self.sasl_mechanism == "OAUTHBEARER":
                if self.oauth_token_endpoint_url:
                    opts.update({
                        "sasl.oauthbearer.method": "oidc",
                        "sasl.oauthbearer.token.endpoint.url": self.oauth_token_endpoint_url,
                        "sasl.oauthbearer.client.id": self.oauth_client_id,
                        "sasl.oauthbearer.client.secret": _secret(
                            self.oauth_client_secret, self.oauth_client_secret_file, "kafka_oauth_client_secret"
                        ),
                    })
                    if self.oauth_scope:
                        opts["sasl.oauthbearer.scope"] = self.oauth_scope
            else:
                opts["sasl.username"] = self.sasl_username
                opts["sasl.password"] = _secret(self.sasl_password, self.sasl_password_file, "kafka_sasl_password")
        elif self.sasl_mechanism is not None:
            raise ConfigError(f"kafka_sasl_mechanism {self.sasl_mechanism} needs kafka_security_protocol SASL_SSL or SASL_PLAINTEXT")
        return opts


class RedisSettings(_Group):
    """The online store (the `redis_*` settings) and its clients."""

    url: str
    username: str
    password: SecretStr | None
    password_file: Path | None
    ssl_ca_certs: Path | None

    @property
    def display(self) -> str:
        """The URL without its password, for messages and logs."""
        return redact_url(self.url)

    def client(self, **kwargs: Any) -> Any:
        """A redis-py client for the online store, with the ACL user, password and TLS settings
        applied; with a redis+sentinel:// URL, a client of the current primary that finds the
        new one after a failover (on its next connection)."""
        import redis

        sentinel = parse_sentinel_url(self.url)
        if sentinel is None:
            return redis.Redis.from_url(self.url, **self.options(), **kwargs)
        from redis.sentinel import Sentinel

        return Sentinel(sentinel.hosts, socket_timeout=5).master_for(
            sentinel.service, db=sentinel.db, **self._sentinel_auth(sentinel), **self.options(), **kwargs)

    def async_client(self) -> Any:
        """The asyncio counterpart of `client` (the feature server's)."""
        import redis.asyncio as aioredis

        sentinel = parse_sentinel_url(self.url)
        if sentinel is None:
            return aioredis.Redis.from_url(self.url, **self.options())
        from redis.asyncio.sentinel import Sentinel

        return Sentinel(sentinel.hosts, socket_timeout=5).master_for(
            sentinel.service, db=sentinel.db, **self._sentinel_auth(sentinel), **self.options())

    def _sentinel_auth(self, sentinel: SentinelUrl) -> dict[str, Any]:
        """The user and password of a sentinel URL, unless the redis_username/redis_password settings give them."""
        opts: dict[str, Any] = {}
        if sentinel.username and not self.username:
            opts["username"] = sentinel.username
        if sentinel.password and self.password is None and self.password_file is None:
            opts["password"] = sentinel.password
        return opts

    def options(self) -> dict[str, Any]:
        """ACL user, password and CA as keyword arguments of redis-py's from_url (sync or asyncio)."""
        opts: dict[str, Any] = {}
        if self.username:
            opts["username"] = self.username
        if self.password is not None or self.password_file is not None:
            opts["password"] = _secret(self.password, self.password_file, "redis_password")
        if self.ssl_ca_certs is not None:
            opts["ssl_ca_certs"] = str(self.ssl_ca_certs)
        return opts


class ProcessorSettings(_Group):
    """How a stream processor batches, checkpoints and bounds its input and memory."""

    batch_size: int
    batch_timeout_s: float
    checkpoint_interval_s: float
    max_record_bytes: int
    max_dead_letter_bytes: int
    max_retry_backoff_s: float
    online_cache_mb: int
    max_future_skew_s: float
    metrics_address: str

    @property
    def max_future_skew_ms(self) -> int:
        return int(self.max_future_skew_s * 1000)


class ServerSettings(_Group):
    """The feature server's limits, and what online reads allow."""

    max_request_bytes: int
    max_online_entities: int
    max_historical_rows: int
    limit_concurrency: int
    backlog: int
    request_feature_budget_ms: float
    allow_empty_online_store: bool
    served_log_topic: str
    served_log_pii_keys: bool


class PathSettings(_Group):
    """Where a repository's state lives, every path absolute or relative to the working folder."""

    repo: Path
    offline: Path
    registry: Path
    tokens: Path
    audit_log: Path
    console_reference: Path | None


@dataclass(frozen=True)
class _Groups:
    kafka: KafkaSettings
    redis: RedisSettings
    processor: ProcessorSettings
    server: ServerSettings
    paths: PathSettings | None

    @classmethod
    def of(cls, s: Settings) -> _Groups:
        def prefixed(group: type[_Group], prefix: str, renames: dict[str, str] | None = None) -> dict[str, Any]:
            renames = renames or {}
            return {name: getattr(s, renames.get(name, prefix + name)) for name in group.model_fields}

        paths = None
        if s.repo_path is not None and s.offline_path is not None and s.registry_path is not None \
                and s.tokens_path is not None and s.audit_log_path is not None:
            paths = PathSettings(repo=s.repo_path, offline=s.offline_path, registry=s.registry_path, tokens=s.tokens_path,
                                 audit_log=s.audit_log_path, console_reference=s.console_reference)
        return cls(
            kafka=KafkaSettings(**prefixed(KafkaSettings, "kafka_", {"consumer_group": "consumer_group"})),
            redis=RedisSettings(**prefixed(RedisSettings, "redis_")),
            processor=ProcessorSettings(**prefixed(ProcessorSettings, "")),
            server=ServerSettings(**prefixed(ServerSettings, "", {"limit_concurrency": "serve_limit_concurrency",
                                                                   "backlog": "serve_backlog"})),
            paths=paths,
        )


def redact_url(url: str) -> str:
    """`scheme://user:***@host/...`: a URL safe to print."""
    if url.startswith("redis+sentinel://"):  # (not parsed: a malformed one is still redacted)
        return re.sub(r"^(redis\+sentinel://[^:@/]*):[^@/]*@", r"\1:***@", url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass(frozen=True)
class SentinelUrl:
    """A redis+sentinel:// URL: the sentinels, the monitored primary's name, the database."""

    hosts: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_sentinel_url(url: str) -> SentinelUrl | None:
    """The parts of `redis+sentinel://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]`;
    None for another scheme. Raises ConfigError for a malformed one."""
    prefix = "redis+sentinel://"
    if not url.startswith(prefix):
        return None
    rest = url[len(prefix):]
    auth, at, rest = rest.rpartition("@") if "@" in rest.split("/", 1)[0] else ("", "", rest)
    netloc, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    hosts: list[tuple[str, int]] = []
    for item in netloc.split(","):
        host, colon, port = item.rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ConfigError(f"redis_url: sentinel '{item}' is not HOST:PORT "
                              "(expected redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB])")
        hosts.append((host, int(port)))
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ConfigError("redis_url: a sentinel URL names the monitored primary and optionally a database: "
                          "redis+sentinel://HOST:PORT[,HOST:PORT...]/SERVICE[/DB]")
    user, _, password = auth.partition(":") if at else ("", "", "")
    return SentinelUrl(hosts, parts[0], int(parts[1]) if len(parts) == 2 else 0, user or None, password or None)


def _secret(value: SecretStr | None, path: Path | None, name: str) -> str:
    if value is not None:
        return value.get_secret_value()
    if path is None:
        raise ConfigError(f"{name} is required: set FEATURESTORE_{name.upper()} or FEATURESTORE_{name.upper()}_FILE")
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {name}_file {path}: {exc.strerror}") from None


#: Settings that hold secrets: never accepted from featurestore.yaml (it is committed with the repo).
SECRET_SETTINGS = ("kafka_sasl_password", "kafka_oauth_client_secret", "redis_password")
_SECRET_OPTION_WORDS = ("password", "secret", "sasl.jaas", "ssl.key.pem")


def _check_no_secrets(config_file: Path) -> None:
    if not config_file.exists():
        return
    try:
        data = yaml.safe_load(config_file.read_text()) or {}
    except (yaml.YAMLError, OSError) as exc:
        raise ConfigError(f"cannot read {config_file}: {exc}") from None
    if not isinstance(data, dict):
        return
    for key in SECRET_SETTINGS:
        if key in data:
            raise ConfigError(f"{config_file}: '{key}' is a secret; set FEATURESTORE_{key.upper()} or {key}_file instead")
    for key in data.get("kafka_options") or {}:
        if any(w in str(key) for w in _SECRET_OPTION_WORDS):
            raise ConfigError(f"{config_file}: kafka_options '{key}' is a secret; use the kafka_* security settings from the environment")
    url = data.get("redis_url")
    if isinstance(url, str) and urlsplit(url).password:
        raise ConfigError(f"{config_file}: redis_url carries a password; set FEATURESTORE_REDIS_PASSWORD or redis_password_file instead")


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
    _check_no_secrets(config_file)
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

"""`featurestore serve`, `tokens` and `status`: the feature server, its tokens, and the processor's health."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from featurestore.cli.common import JsonOpt, RepoOpt, _settings, cli_table, console, friendly_errors, print_json, warning_line
from featurestore.errors import ConfigError, StoreUnavailable

tokens_app = typer.Typer(no_args_is_help=True, help="API tokens of the feature server (only their hashes are stored).")


def _split_address(address: str, what: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{what} {address!r}: expected host:port")
    return host or "127.0.0.1", int(port)


def serve_metrics(address: str) -> None:
    """Serve this process's Prometheus metrics at http://address/metrics (a daemon thread)."""
    from prometheus_client import start_http_server

    host, port = _split_address(address, "metrics_address")
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        raise StoreUnavailable(f"cannot serve metrics on {address}: {exc.strerror}") from None
    console.print(f"Metrics on http://{host}:{port}/metrics")


@friendly_errors
def serve(
    repo: RepoOpt = Path("."),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 6566,
    workers: Annotated[int, typer.Option(min=1, help="Server processes (each with its own Redis connections).")] = 1,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Serve without tokens (loopback only, unless --insecure).",
                                          metavar="")] = False,
    insecure: Annotated[
        bool, typer.Option("--insecure", metavar="",
                           help="Allow --no-auth on a non-loopback address. Anyone who can connect reads everything.")
    ] = False,
    trusted_host: Annotated[
        list[str] | None,
        typer.Option("--trusted-host", help="Host names clients may use in the Host header (repeatable; '*': any). "
                                            "Default: the bound host and localhost (any host when bound to 0.0.0.0)."),
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate: serve HTTPS.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
) -> None:
    """Serve online features over HTTP (OpenAPI at /openapi.json): bearer tokens, limits, audit log, /metrics."""
    import uvicorn

    from featurestore.registry import FileRegistry
    from featurestore.server.app import SERVE_OPTIONS_ENV, ServeOptions, build_app
    from featurestore.server.auth import TokenStore
    from featurestore.server.edge import default_trusted_hosts

    settings = _settings(repo)
    options = ServeOptions(repo=repo.resolve(), host=host, auth=not no_auth, insecure=insecure,
                           trusted_hosts=list(trusted_host or default_trusted_hosts(host)))
    options.check()
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    plan_ = FileRegistry(settings.paths.registry).current_plan()
    if not no_auth and not any(t.active for t in TokenStore(settings.paths.tokens).records()):
        warning_line(f"no active token in {settings.paths.tokens}: every request will get 401 "
                     "(create one with `featurestore tokens create`)", to=console)
    scheme = "https" if tls_cert else "http"
    console.print(f"Serving {len(plan_.views)} views of project {settings.project} on {scheme}://{host}:{port} "
                  f"({'NO AUTH' if no_auth else 'tokens: ' + str(settings.paths.tokens)}; audit: {settings.paths.audit_log}; "
                  f"Redis {settings.redis.display}; trusted hosts: {', '.join(options.trusted_hosts)})")
    if workers > 1:  # uvicorn's workers import the app by name: the options go through their environment
        os.environ[SERVE_OPTIONS_ENV] = options.model_dump_json()
    app: Any = build_app(options) if workers == 1 else "featurestore.server.app:app_from_environment"
    uvicorn.run(
        app, factory=workers > 1, host=host, port=port, workers=workers,
        log_level="warning", access_log=False, ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None, timeout_keep_alive=30, timeout_graceful_shutdown=10,
        limit_concurrency=settings.server.limit_concurrency, backlog=settings.server.backlog,
        h11_max_incomplete_event_size=64 * 1024,
    )


@tokens_app.command("create")
@friendly_errors
def tokens_create(
    name: Annotated[str, typer.Argument(help="Who or what uses the token, e.g. fraud-service.")],
    grant: Annotated[
        list[str],
        typer.Option("--grant", "-g", help="ACTION[:SCOPE]: read_online|read_offline|apply with :*, :view=NAME or "
                                             ":tag=KEY=VALUE; or admin. Repeatable."),
    ],
    repo: RepoOpt = Path("."),
) -> None:
    """Create a token; it is printed once and only its SHA-256 is stored."""
    from featurestore.server.auth import Permission, TokenStore

    permissions = [Permission.parse(g) for g in grant]
    token, record = TokenStore(_settings(repo).paths.tokens).create(name, permissions)
    console.print(f"Created token {record.id} ({name}): {', '.join(str(p) for p in permissions)}")
    console.print("Store it now; it cannot be shown again:", highlight=False)
    typer.echo(token)


@tokens_app.command("list")
@friendly_errors
def tokens_list(repo: RepoOpt = Path(".")) -> None:
    """List tokens: id, name, permissions, state (never the token)."""
    from featurestore.server.auth import TokenStore

    store = TokenStore(_settings(repo).paths.tokens)
    records = store.records()
    if not records:
        console.print(f"No tokens in {store.path}.")
        return
    table = cli_table("id", "name", "permissions", "created (UTC)", "state")
    for r in records:
        state = "active" if r.active else f"revoked {r.revoked_at:%Y-%m-%d %H:%M}"
        table.add_row(r.id, r.name, ", ".join(str(p) for p in r.permissions), f"{r.created_at:%Y-%m-%d %H:%M}", state)
    console.print(table)


@tokens_app.command("revoke")
@friendly_errors
def tokens_revoke(token_id: Annotated[str, typer.Argument(help="The token's id (see `tokens list`).")], repo: RepoOpt = Path(".")) -> None:
    """Revoke a token; running servers refuse it from their next request."""
    from featurestore.server.auth import TokenStore

    record = TokenStore(_settings(repo).paths.tokens).revoke(token_id)
    console.print(f"Revoked token {record.id} ({record.name}).")


@friendly_errors
def status(
    repo: RepoOpt = Path("."),
    metrics_url: Annotated[
        list[str] | None, typer.Option("--metrics-url", help="Processor metrics URL(s); default http://<metrics_address>/metrics "
                                       "when metrics_address is set.", show_default=False)
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per view the newest event online; lag per partition; with processor metrics, freshness and dead letters."""
    import time

    import redis

    from featurestore.cli.status import Overview, fetch_status
    from featurestore.errors import unreachable
    from featurestore.online.reader import OnlineReader
    from featurestore.registry import FileRegistry
    from featurestore.runtime.kafka import group_lag

    settings = _settings(repo)
    plan = FileRegistry(settings.paths.registry).current_plan()
    topics = [s.topic for s in plan.sources if any(v.source == s.name for v in plan.views)]
    client = settings.redis.client()
    try:
        reader = OnlineReader(client, settings.project, plan)
        newest, repairs = reader.newest_events(), reader.repair_counts()
    except redis.RedisError as exc:
        raise unreachable("Redis", settings.redis.display, exc) from None
    finally:
        client.close()
    lag = group_lag(settings, topics)
    urls = list(metrics_url or [])
    if not urls and settings.processor.metrics_address:
        host, port = _split_address(settings.processor.metrics_address, "metrics_address")
        urls = [f"http://{host}:{port}/metrics"]
    metrics, note = None, ""
    if urls:
        try:
            metrics = fetch_status(urls)
        except StoreUnavailable as exc:
            if metrics_url:  # asked for by name: its failure is the answer
                raise
            note = f"no processor metrics ({exc})"
    else:
        note = "no processor metrics: run processors with metrics_address (FEATURESTORE_METRICS_ADDRESS) for freshness and dead letters"
    overview = Overview(newest, lag, metrics, note, repairs,
                        {v.name: v.freshness_slo_ms / 1000 for v in plan.views if v.freshness_slo_ms})
    now = time.time()
    views = [v.name for v in plan.views]
    if as_json:
        print_json(overview.to_json(views, now))
        return
    table = cli_table("view", "newest event online", "events", "freshness p50", "freshness p99", "objective", "repairs",
                      title="Views")
    for row in overview.rows(views, now):
        events = row["events"]
        table.add_row(str(row["view"]), str(row["newest_event"]), "-" if events is None else f"{events:,.0f}",
                      str(row["freshness_p50"]), str(row["freshness_p99"]), str(row["freshness_objective"]),
                      str(row["repairs"]))
    console.print(table)
    lag_table = cli_table("topic", "partition", "committed", "end", "lag (records)",
                          title=f"Consumer group {settings.kafka.consumer_group}")
    for p in lag:
        lag_table.add_row(p.topic, str(p.partition), "none" if p.committed is None else f"{p.committed:,}", f"{p.high:,}",
                          f"{p.lag:,}")
    console.print(lag_table)
    if metrics is not None:
        dead = ", ".join(f"{reason}={n:,.0f}" for reason, n in sorted(metrics.dead_letters.items())) or "none"
        console.print(f"Dead letters: {dead}")
    else:
        console.print(note, highlight=False)

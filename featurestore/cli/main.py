"""`featurestore` commands. Expected failures print one line (or the list of problems) and exit 1."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from featurestore.cli.common import (
    JsonOpt,
    RepoOpt,
    _settings,
    cli_table,
    console,
    err_console,
    error_line,
    friendly_errors,
    print_json,
    warning_line,
)
from featurestore.cli.monitoring import alerts, monitor, served_log_app
from featurestore.cli.producing import produce
from featurestore.cli.serving import serve, status, tokens_app
from featurestore.cli.starter import init
from featurestore.cli.versions import compare, retire
from featurestore.errors import ConfigError, unreachable

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Streaming feature store: definitions -> Kafka -> Redis + Parquet.")
registry_app = typer.Typer(no_args_is_help=True, help="Inspect and restore applied registry versions.")
dev_app = typer.Typer(help="Embedded broker + Redis for development (foreground; Ctrl-C stops).")
# commands in the order of a first hour: start services, define, process, read, check
_START, _DEFINE, _PROCESS, _READ, _CHECK = ("1. Start", "2. Define features", "3. Process events",
                                            "4. Read and serve", "5. Check")
app.add_typer(dev_app, name="dev", rich_help_panel=_START,
              epilog='Example: eval "$(featurestore dev --detach)"; later: featurestore dev stop')
app.add_typer(registry_app, name="registry", rich_help_panel=_DEFINE, epilog="Example: featurestore registry list")
app.add_typer(tokens_app, name="tokens", rich_help_panel=_READ,
              epilog="Example: featurestore tokens create fraud-service --grant read_online:view=user_payments")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        console.print(f"featurestore {version('featurestore')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="Print the version and exit.", metavar="")] = False,
) -> None:
    """Streaming feature store: definitions -> Kafka -> Redis + Parquet."""


# -- demo -------------------------------------------------------------------------------------------
@app.command(rich_help_panel=_START, epilog="Example: featurestore demo")
@friendly_errors
def demo(
    repo: RepoOpt = Path("feature_defs"),
    events: Annotated[int, typer.Option(help="Payment events to produce.")] = 20_000,
) -> None:
    """End to end: start services, apply, produce payments, process, read online, build a training set."""
    from featurestore.demo.walkthrough import run_demo

    run_demo(repo, events, console)


app.command(rich_help_panel=_START, epilog="Example: featurestore init rides --template rides")(init)


# -- plan / apply -----------------------------------------------------------------------
@app.command(rich_help_panel=_DEFINE, epilog="Example: featurestore plan --repo feature_defs")
@friendly_errors
def plan(
    repo: RepoOpt = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print the compiled plan as JSON instead of the diff.", metavar="")] = False,
) -> None:
    """Validate the repository and show what `apply` would change."""
    from featurestore.compile import compile_repo, diff_plans, unversioned_changes
    from featurestore.registry import FileRegistry

    new = compile_repo(repo)
    if as_json:
        sys.stdout.write(new.to_json().decode() + "\n")
        return
    settings = _settings(repo)
    registry = FileRegistry(settings.paths.registry)
    latest = registry.latest()
    diff = diff_plans(latest.plan if latest else None, new)
    base = f"version {latest.version}" if latest else "an empty registry"
    if latest is not None:
        _print_live_versions(latest.plan, settings.paths.offline)
    if diff.empty:
        console.print(f"No changes against {base}.")
        return
    console.print(f"Changes against {base}:")
    for line in diff.lines():
        console.print(f"  {line}", highlight=False, markup=False)
    refused = unversioned_changes(latest.plan if latest else None, new)
    if refused:
        error_line(f"apply will refuse {len(refused)} change(s) that need a new view version:")
        for p in refused:
            console.print(f"  - {p.obj}: {p.message}. Fix: {p.fix}", highlight=False, markup=False)
        raise typer.Exit(1)


def _print_live_versions(applied: Any, offline_root: Path) -> None:
    """The applied views' versions and their windows, when there is something to say: several
    versions of a view, or windows still filling."""
    from featurestore.offline.warming import live_versions

    lines = live_versions(applied, offline_root, int(time.time() * 1000))
    if any("@1" not in line.split(":")[0] for line in lines) or any("warming" in line for line in lines) \
            or len({v.base_name for v in applied.views}) < len(applied.views):
        console.print("Live view versions:")
        for line in lines:
            console.print(f"  {line}", highlight=False, markup=False)


@app.command(rich_help_panel=_DEFINE, epilog="Example: featurestore apply --repo feature_defs")
@friendly_errors
def apply(
    repo: RepoOpt = Path("."),
    in_place: Annotated[bool, typer.Option("--in-place", help="Accept views that compute their values differently "
                                           "without a new version (their stored state is not rebuilt).", metavar="")] = False,
) -> None:
    """Validate the repository and record it as a new registry version (safe to re-run)."""
    from featurestore.compile import compile_repo
    from featurestore.registry import FileRegistry

    new = compile_repo(repo)
    registry = FileRegistry(_settings(repo).paths.registry)
    version = registry.apply(new, in_place=in_place)
    if version is None:
        latest = registry.latest()
        console.print(f"No changes: version {latest.version if latest else '?'} is current.")
        return
    console.print(f"Applied version {version.version} ({version.content_hash[:12]}) to {registry.path}")
    for line in version.diff:
        console.print(f"  {line}", highlight=False, markup=False)


# -- registry -----------------------------------------------------------------------------
@registry_app.command("list")
@friendly_errors
def registry_list(repo: RepoOpt = Path("."), as_json: JsonOpt = False) -> None:
    """List applied versions."""
    from featurestore.registry import FileRegistry

    versions = FileRegistry(_settings(repo).paths.registry).versions()
    if as_json:
        print_json([{"version": v.version, "applied_at": v.applied_at, "hash": v.content_hash,
                     "views": [view.name for view in v.plan.views], "changes": list(v.diff), "note": v.note}
                    for v in versions])
        return
    if not versions:
        console.print("Nothing applied yet.")
        return
    table = cli_table("version", "applied at (UTC)", "hash", "views", "changes", "note")
    for v in versions:
        table.add_row(str(v.version), f"{v.applied_at:%Y-%m-%d %H:%M:%S}", v.content_hash[:12],
                      str(len(v.plan.views)), str(len(v.diff)), v.note)
    console.print(table)


@registry_app.command("show")
@friendly_errors
def registry_show(version: int, repo: RepoOpt = Path(".")) -> None:
    """Print the plan recorded as VERSION (JSON)."""
    from featurestore.registry import FileRegistry

    v = FileRegistry(_settings(repo).paths.registry).get(version)
    sys.stdout.write(v.plan.to_json().decode() + "\n")


@registry_app.command("restore")
@friendly_errors
def registry_restore(version: int, repo: RepoOpt = Path(".")) -> None:
    """Make VERSION's plan current again (recorded as a new version)."""
    from featurestore.registry import FileRegistry

    v = FileRegistry(_settings(repo).paths.registry).restore(version)
    console.print(f"Version {version} is already current." if v is None else f"Restored version {version} as version {v.version}.")


# -- run ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def _live(renderable: Any) -> Iterator[Live]:
    """A live status display; when stdout is not a terminal it is printed once at the end,
    on lines of its own."""
    try:
        with Live(renderable, console=console, refresh_per_second=4, transient=False) as live:
            yield live
    finally:
        if not console.is_terminal:
            sys.stdout.write("\n")
            sys.stdout.flush()


def _progress_table(records: int, started: float, dead_letters: dict[str, int], label: str, value: int) -> Table:
    """Live status of a long run: records and their rate, dead letters by reason, one more counter."""
    secs = max(time.monotonic() - started, 1e-9)
    t = Table.grid(padding=(0, 2))
    t.add_row("records", f"{records:,}", "records/s", f"{records / secs:,.0f}")
    dl = ", ".join(f"{k}={v}" for k, v in sorted(dead_letters.items())) or "0"
    t.add_row("dead letters", dl, label, f"{value:,}")
    return t


app.command(rich_help_panel=_PROCESS, epilog="Example: featurestore produce --fake 10000 --over 3h; "
            "featurestore produce events.jsonl")(produce)


@app.command(rich_help_panel=_PROCESS, epilog="Example: featurestore run --until-caught-up")
@friendly_errors
def run(
    repo: RepoOpt = Path("."),
    until_caught_up: Annotated[
        bool, typer.Option("--until-caught-up", help="Exit once every record present at start is processed.", metavar="")
    ] = False,
    engine: Annotated[
        str, typer.Option(help="confluent (default: confluent-kafka, fastest) or faust (Faust agents; pip install 'featurestore[faust]').")
    ] = "confluent",
) -> None:
    """Run the stream processors of the applied plan (Ctrl-C stops cleanly)."""
    from featurestore.cli.serving import serve_metrics
    from featurestore.plan import Plan
    from featurestore.registry import FileRegistry
    from featurestore.runtime import ProcessorStats, run_following

    if engine not in ("confluent", "faust"):
        raise ConfigError(f"--engine must be confluent or faust, got {engine!r}")
    settings = _settings(repo)
    plan_ = FileRegistry(settings.paths.registry).current_plan()
    if settings.processor.metrics_address:
        serve_metrics(settings.processor.metrics_address)
    started = time.monotonic()

    def status(stats: ProcessorStats) -> Table:
        t = _progress_table(stats.records, started, stats.dead_letters, "entity writes", stats.entity_writes)
        if stats.retries:
            t.add_row("retries", f"{stats.retries:,}", "last error", stats.last_error[:80])
        return t

    console.print(f"Processing {', '.join(s.topic for s in plan_.sources)} as group {settings.kafka.consumer_group} "
                  f"with the {engine} engine -> {settings.redis.display} + {settings.paths.offline}"
                  + (" (until caught up)" if until_caught_up else " (Ctrl-C to stop)"))
    if engine == "faust":
        from featurestore.runtime.faust_engine import run_faust

        with _live(status(ProcessorStats())) as live:
            stats = run_faust(plan_, settings, until_caught_up, on_batch=lambda s: live.update(status(s)))
            live.update(status(stats))
    else:
        stop = threading.Event()
        previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())

        def switched(new: Plan, error: str | None) -> None:
            if error:
                error_line(f"A newly applied plan was not taken up (the previous one runs on): {error}")
            else:
                console.print(f"Registry changed: now processing views {', '.join(v.name for v in new.views)}",
                              highlight=False, markup=False)

        try:
            with _live(status(ProcessorStats())) as live:
                stats = run_following(plan_, settings, stop, until_caught_up, on_batch=lambda s: live.update(status(s)),
                                      on_switch=switched)
                live.update(status(stats))
        finally:
            signal.signal(signal.SIGINT, previous)
    console.print(f"Done: {stats.events:,} events applied, {stats.dead_lettered:,} dead-lettered, "
                  f"{stats.history_rows:,} history rows written.")


def _parse_instant(value: str | None, option: str) -> int | None:
    """An ISO 8601 date or datetime (UTC if no offset) as epoch ms."""
    import datetime as dt

    from featurestore.errors import FeatureRequestError
    from featurestore.plan.windows import to_epoch_ms

    if value is None:
        return None
    try:
        return to_epoch_ms(dt.datetime.fromisoformat(value))
    except ValueError:
        raise FeatureRequestError(f"{option} {value!r} is not an ISO date/time (e.g. 2026-11-01 or 2026-11-01T12:00:00Z)") from None


@app.command(rich_help_panel=_PROCESS, epilog="Example: featurestore backfill --from archive/ --start 2026-10-01 --end 2026-11-01 "
              "--materialize")
@friendly_errors
def backfill(
    from_path: Annotated[Path, typer.Option("--from", help="A .parquet / .csv / JSON lines file, or a folder of them.")],
    start: Annotated[str | None, typer.Option(help="Only events at or after this time (ISO, UTC by default).")] = None,
    end: Annotated[str | None, typer.Option(help="Only events before this time (ISO, UTC by default).")] = None,
    materialize: Annotated[bool, typer.Option("--materialize", help="Also write the online store (state as of --end).",
                                              metavar="")] = False,
    source: Annotated[str | None, typer.Option(help="Source the events belong to (needed if the repo has several).")] = None,
    view: Annotated[str | None, typer.Option(help="Only this view version, e.g. user_payments@2 (others untouched).")] = None,
    repo: RepoOpt = Path("."),
) -> None:
    """Run the applied plan over historical events in files: same decoding, lateness, tiles and history as streaming."""
    from featurestore.registry import FileRegistry
    from featurestore.runtime.backfill import Backfill, BackfillStats, only_view

    start_ms, end_ms = _parse_instant(start, "--start"), _parse_instant(end, "--end")
    settings = _settings(repo)
    plan_ = FileRegistry(settings.paths.registry).current_plan()
    if view is not None:
        plan_ = only_view(plan_, view)
        source = source or plan_.views[0].source
    job = Backfill(plan_, settings, source)
    if materialize:
        from featurestore.runtime.processor import StreamProcessor

        StreamProcessor.check_redis(settings)
    started = time.monotonic()

    def status(stats: BackfillStats) -> Table:
        return _progress_table(stats.records, started, stats.dead_letters, "outside range", stats.outside_range)

    only = f" into {plan_.views[0].name} only" if view else ""
    console.print(f"Backfilling {job.source.name}{only} from {from_path} -> {settings.paths.offline}"
                  + (f" + {settings.redis.display}" if materialize else ""))
    with _live(status(BackfillStats())) as live:
        stats = job.run(from_path, start_ms, end_ms, materialize, on_progress=lambda s: live.update(status(s)))
    console.print(f"Done in {stats.seconds:.1f} s: {stats.events:,} events from {stats.files} file(s), "
                  f"{stats.history_rows:,} history rows written"
                  + (f", {stats.entity_writes:,} entity writes" if materialize else "")
                  + f"; backfill partition {stats.partition}.")
    if stats.dead_letter_file is not None:
        console.print(f"Dead letters ({sum(stats.dead_letters.values()):,}) in {stats.dead_letter_file}")


@app.command("rebuild-online", rich_help_panel=_PROCESS, epilog="Example: featurestore rebuild-online")
@friendly_errors
def rebuild_online(
    repo: RepoOpt = Path("."),
    catch_up: Annotated[bool, typer.Option(help="Then apply the Kafka tail after the history (run --until-caught-up).", metavar="")] = True,
    check_sample: Annotated[int, typer.Option(help="Entities per view compared online vs offline afterwards (0: skip).")] = 200,
    force: Annotated[bool, typer.Option(help="Rebuild even if the consumer group looks active.", metavar="")] = False,
) -> None:
    """Restore the online store from the offline history after Redis lost data.

    Wipes the project's online keys, loads each entity's state computed from its whole
    history (windows, tiles, applied offsets: as streaming left them), applies the Kafka
    tail, then compares a sample online vs offline. Stop the processors first.
    """
    import redis as redis_lib

    from featurestore.errors import StoreUnavailable
    from featurestore.online import OnlineReader
    from featurestore.registry import FileRegistry
    from featurestore.runtime import StreamProcessor
    from featurestore.runtime.kafka import admin_config
    from featurestore.runtime.rebuild import count_history, group_is_active, rebuild_view, wipe_online

    settings = _settings(repo)
    plan_ = FileRegistry(settings.paths.registry).current_plan()
    client = settings.redis.client()
    try:
        client.ping()
    except redis_lib.RedisError as exc:
        raise unreachable("Redis", settings.redis.display, exc) from None
    active = None if force else group_is_active(admin_config(settings), settings.kafka.consumer_group)
    if active == "unknown":
        warning_line(f"the broker did not say whether group {settings.kafka.consumer_group} is active; make sure its "
                     "processors are stopped")
    elif active:
        raise StoreUnavailable(
            f"consumer group {settings.kafka.consumer_group} is {active}: stop the processors before rebuilding (or pass --force)"
        )
    wiped = wipe_online(client, settings.project)
    console.print(f"Removed {wiped:,} online keys of project {settings.project}.")
    skew_ms = settings.processor.max_future_skew_ms
    totals = {v.name: count_history(settings.paths.offline, v) for v in plan_.views}
    from rich.progress import Progress

    from featurestore.runtime.repair import mark_history

    started = time.monotonic()
    with Progress(console=console) as progress:
        for view in plan_.views:
            task = progress.add_task(f"Loading {view.name} history", total=totals[view.name] or 1)
            rebuild_view(client, settings.project, settings.paths.offline, view, skew_ms,
                         functools.partial(progress.advance, task))
            progress.update(task, completed=totals[view.name] or 1)
    mark_history(client, settings.project, settings.paths.offline, plan_.views)
    console.print(f"Loaded {sum(totals.values()):,} history rows into {settings.redis.display} "
                  f"in {time.monotonic() - started:.1f} s.")
    if catch_up:
        with console.status("Applying the Kafka tail after the history..."):
            stats = StreamProcessor(plan_, settings).run(until_caught_up=True)
        console.print(f"Kafka tail: {stats.records:,} records read since the last commit, {stats.events:,} applied "
                      "(those already in the history change nothing).")
    if check_sample:
        from featurestore.client.consistency import check_consistency

        report = check_consistency(OnlineReader(client, settings.project, plan_), settings.paths.offline, plan_,
                                   int(time.time() * 1000), check_sample)
        checked = max((f.checked for f in report.features), default=0)
        if report.mismatches:
            _print_consistency(report)
            error_line(f"{report.mismatches} value(s) differ online vs offline")
            raise typer.Exit(1)
        console.print(f"Check: online equals offline for all {checked} sampled entities per view.")


# -- reads ----------------------------------------------------------------------------------------
def _parse_entity(spec: str) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected key=value, got {part!r}")
        row[key.strip()] = int(value) if value.strip().lstrip("-").isdigit() else value.strip()
    return row


@app.command(rich_help_panel=_READ, epilog="Example: featurestore online -f user_payments:amount_sum_1h -e user_id=1")
@friendly_errors
def online(
    feature: Annotated[list[str], typer.Option("--feature", "-f", help="view:feature (repeatable).")],
    entity: Annotated[list[str], typer.Option("--entity", "-e", help="Join keys, e.g. user_id=1 (repeatable).")],
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Print online feature values for some entities."""
    from featurestore.client import FeatureStore

    store = FeatureStore(repo)
    resp = store.get_online_features(feature, [_parse_entity(e) for e in entity]).to_dict()
    if as_json:
        print_json(resp)
    else:
        _print_columns(resp)


def _print_columns(cols: dict[str, list[Any]], title: str | None = None) -> None:
    table = cli_table(*cols.keys(), title=title)
    for row in zip(*cols.values()):
        table.add_row(*("—" if v is None else f"{v:,.2f}" if isinstance(v, float) else str(v) for v in row))
    console.print(table)


@app.command("training-set", rich_help_panel=_READ, epilog="Example: featurestore training-set --entities rows.parquet "
              "-f user_payments:amount_sum_1h -o train.parquet")
@friendly_errors
def training_set(
    entities: Annotated[Path, typer.Option("--entities", help="Parquet or CSV file of entity rows.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write.")],
    feature: Annotated[list[str] | None, typer.Option("--feature", "-f", help="view:feature (repeatable).",
                                                      show_default=False)] = None,
    service: Annotated[str | None, typer.Option(help="A feature service instead of --feature.", show_default=False)] = None,
    timestamp_column: Annotated[str, typer.Option(help="Timestamp column of the entity rows.")] = "event_timestamp",
    mode: Annotated[str, typer.Option(help="corrected (every event by event time) or as_served (what the online store held).")]
    = "corrected",
    manifest: Annotated[Path | None, typer.Option("--manifest", "--reproduce",
                                                  help="Build again the training set this manifest describes (the "
                                                       "same --entities file).", show_default=False)] = None,
    engine: Annotated[str, typer.Option(help="duckdb (this machine) or spark (pip install 'featurestore[spark]', Java 17+).")]
    = "duckdb",
    spark_master: Annotated[str | None, typer.Option(help="Spark master URL for --engine spark (default local[*]).",
                                                     show_default=False)] = None,
    repo: RepoOpt = Path("."),
) -> None:
    """Build a point-in-time correct training set from an entity file and write it as Parquet, with a manifest
    (OUTPUT.manifest.json) to build the same set again later."""
    import json

    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from featurestore.client import FeatureStore
    from featurestore.errors import FeatureRequestError, one_of

    described = None
    if manifest is not None:
        if feature or service:
            raise FeatureRequestError("--manifest says which features; leave out --feature and --service")
        try:
            described = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            raise FeatureRequestError(f"cannot read manifest {manifest}: {exc}") from None
        timestamp_column = described.get("timestamp_column", timestamp_column)
    elif (not feature) == (service is None):
        raise FeatureRequestError("name the features with --feature VIEW:FEATURE (repeatable) or --service NAME")
    if not entities.exists():
        raise FeatureRequestError(f"entity file {entities} not found")
    try:
        table = pacsv.read_csv(entities) if entities.suffix.lower() == ".csv" else pq.read_table(entities)
    except Exception as exc:
        raise FeatureRequestError(f"cannot read entity file {entities}: {exc}") from None
    if timestamp_column not in table.column_names:
        raise FeatureRequestError(f"{entities} has no column '{timestamp_column}': name the entity rows' time column "
                                  f"with --timestamp-column ({one_of(timestamp_column, table.column_names)})")
    what = f"service {service}" if service else f"{len(feature or (described or {}).get('features', []))} features"
    if engine not in ("duckdb", "spark"):
        raise FeatureRequestError(f"--engine must be duckdb or spark, got {engine!r}")
    if described is not None:
        engine = described.get("engine", "duckdb")
    if engine == "spark":
        from featurestore.offline.spark_engine import spark_session

        with console.status(f"Starting Spark on {spark_master or 'local[*]'}..."):
            spark_session(spark_master)
    with console.status(f"Joining {table.num_rows:,} entity rows with {what} in {'Spark' if engine == 'spark' else 'DuckDB'}..."):
        started = time.monotonic()
        store = FeatureStore(repo)
        if described is not None:
            result = store.rebuild_training_set(described, table)
        else:
            result = store.get_historical_features(table, feature, timestamp_column=timestamp_column, mode=mode,
                                                   service=service, engine=engine, spark_master=spark_master)
        result.to_parquet(output)
        manifest_out = output.with_suffix(".manifest.json")
        result.write_manifest(manifest_out)
    same = ""
    if described is not None:
        same = (" — identical to the original" if result.manifest["output_sha256"] == described.get("output_sha256")
                else " — differs from the original (the repository's code changed?)")
    console.print(f"Wrote {len(result):,} rows x {result.to_arrow().num_columns} columns to {output} "
                  f"in {time.monotonic() - started:.2f} s (manifest: {manifest_out}){same}")


@app.command(rich_help_panel=_CHECK, epilog="Example: featurestore consistency --sample 200")
@friendly_errors
def consistency(
    repo: RepoOpt = Path("."),
    sample: Annotated[int, typer.Option(help="Entities per view to compare.")] = 200,
    max_mismatch_rate: Annotated[float, typer.Option(help="Exit 1 if any feature's mismatch rate is above this.")] = 0.0,
    as_json: JsonOpt = False,
) -> None:
    """Compare online values with an offline recomputation of the same features, now."""
    from featurestore.client import FeatureStore

    with err_console.status("Reading online values and recomputing them offline..."):
        report = FeatureStore(repo).check_consistency(sample=sample)
    if as_json:
        print_json({"at": report.at, "features": report.rows(),
                    "examples": {f.feature: [str(e) for e in f.examples] for f in report.features if f.examples}})
    else:
        _print_consistency(report)
    worst = max((f.mismatch_rate for f in report.features), default=0.0)
    if worst > max_mismatch_rate:
        error_line(f"mismatch rate {worst:.2%} is above {max_mismatch_rate:.2%}")
        raise typer.Exit(1)


def _print_consistency(report: Any) -> None:
    table = cli_table("feature", "checked", "mismatches", "rate", "max abs diff", "online staleness",
                  title=f"Online vs offline at {report.at:%Y-%m-%d %H:%M:%S} UTC")
    for row in report.rows():
        table.add_row(row["feature"], str(row["checked"]), str(row["mismatches"]), f"{row['mismatch_rate']:.2%}",
                      f"{row['max_abs_diff']:.3g}", f"{row['online_staleness_ms'] / 1000:.1f} s")
    console.print(table)
    for feat in report.features:
        for example in feat.examples:
            console.print(f"  {feat.feature}: {example}", highlight=False, markup=False)


# -- dev services -------------------------------------------------------------------------------------
def _dev_state(repo: Path) -> Path:
    from featurestore.config import STATE_DIR

    return repo / STATE_DIR / "dev.json"


@dev_app.callback(invoke_without_command=True)
@friendly_errors
def dev(
    ctx: typer.Context,
    repo: RepoOpt = Path("."),
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Leave the services running in the background.", metavar="")] = False,
    broker_port: Annotated[int, typer.Option(help="Broker port (0: a free one).")] = 0,
    redis_port: Annotated[int, typer.Option(help="Redis port (0: a free one).")] = 0,
) -> None:
    """Start the embedded broker (Tansu) and Redis and print the settings to export.

    Only the `export` lines go to stdout: `eval "$(featurestore dev --detach)"` sets them in
    the shell; `featurestore dev env` prints them again later.
    """
    if ctx.invoked_subcommand is not None:
        return
    from featurestore.embedded import DevEnvironment

    state = _dev_state(repo)
    running = DevEnvironment.load(state)
    if running and running.broker.alive() and running.redis.alive():
        err_console.print("Already running (featurestore dev stop to stop):")
        _print_exports(running.env())
        return
    with err_console.status("Starting the embedded broker and Redis..."):
        env = DevEnvironment.start(broker_port or None, redis_port or None, log_dir=repo / ".featurestore" / "logs")
    env.save(state)
    _set_aside_previous_history(repo)
    err_console.print(f"Broker (Tansu) pid {env.broker.pid} on {env.broker.address}; "
                      f"Redis pid {env.redis.pid} on {env.redis.address}")
    _print_exports(env.env())
    if detach:
        err_console.print("Running in the background; stop with: featurestore dev stop")
        return
    err_console.print("Press Ctrl-C to stop.")
    try:
        while env.broker.alive() and env.redis.alive():
            time.sleep(0.5)
        error_line("a service exited; see the logs in .featurestore/logs")
    except KeyboardInterrupt:
        pass
    finally:
        env.stop()
        state.unlink(missing_ok=True)
        err_console.print("Stopped.")


def _set_aside_previous_history(repo: Path) -> None:
    """New dev services start with empty topics whose offsets count from 0 again: a history
    written from the previous ones (under the repo's .featurestore) would make the processor
    take new events for ones it already wrote. It is moved aside, not deleted."""
    from featurestore.config import STATE_DIR

    root = _settings(repo).paths.offline.resolve()
    if not root.is_relative_to((repo / STATE_DIR).resolve()) or not any(root.glob("*/_commits")):
        return
    kept = root.with_name(f"{root.name}.before-{time.strftime('%Y%m%d-%H%M%S')}")
    root.rename(kept)
    err_console.print(f"Moved the history of the previous dev services to {kept}: the new broker numbers offsets "
                      "from 0 again, so the processor would have taken new events for ones already in it.",
                      highlight=False)


def _print_exports(env: dict[str, str]) -> None:
    for k, v in env.items():
        sys.stdout.write(f"export {k}={v}\n")
    sys.stdout.flush()


def _not_running(repo: Path) -> str:
    return (f"no dev services started from {repo.resolve()} are running (`featurestore dev` keeps them per "
            "repository folder: pass --repo, or start them with `featurestore dev --detach`)")


@dev_app.command("env")
@friendly_errors
def dev_env(repo: RepoOpt = Path(".")) -> None:
    """Print the settings of the running dev services as `export` lines only:
    `eval "$(featurestore dev env)"` in a new shell."""
    from featurestore.embedded import DevEnvironment

    env = DevEnvironment.load(_dev_state(repo))
    if env is None or not (env.broker.alive() and env.redis.alive()):
        raise ConfigError(_not_running(repo))
    _print_exports(env.env())


@dev_app.command("stop")
@friendly_errors
def dev_stop(repo: RepoOpt = Path(".")) -> None:
    """Stop the services a detached `featurestore dev` started (and nothing else)."""
    from featurestore.embedded import DevEnvironment

    state = _dev_state(repo)
    env = DevEnvironment.load(state)
    if env is None:
        console.print(f"Nothing to stop: {_not_running(repo)}.", highlight=False, soft_wrap=True)
        return
    env.stop()
    state.unlink(missing_ok=True)
    console.print(f"Stopped broker pid {env.broker.pid} and Redis pid {env.redis.pid}.")


app.command(rich_help_panel=_READ, epilog="Example: featurestore serve --port 6566")(serve)
app.command(rich_help_panel=_CHECK, epilog="Example: featurestore status --metrics-url http://127.0.0.1:9464/metrics")(status)
app.command(rich_help_panel=_CHECK, epilog="Example: featurestore compare user_payments@1 user_payments@2")(compare)
app.command(rich_help_panel=_DEFINE, epilog="Example: featurestore retire user_payments@1")(retire)
app.command(rich_help_panel=_CHECK, epilog="Example: featurestore alerts -o featurestore.rules.yml")(alerts)
app.command(rich_help_panel=_CHECK, epilog="Example: featurestore monitor --reference train.parquet --service fraud_model_v1")(
    monitor)
app.add_typer(served_log_app, name="served-log", rich_help_panel=_CHECK, epilog="Example: featurestore served-log land")


def main() -> None:
    """Entry point of the `featurestore` script."""
    import logging

    from rich.logging import RichHandler

    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    logging.basicConfig(level=logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)])
    app()


if __name__ == "__main__":
    main()

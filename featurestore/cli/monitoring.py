"""Watching features in production: `featurestore alerts` and `featurestore served-log`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from featurestore.cli.common import JsonOpt, RepoOpt, _settings, cli_table, error_line, friendly_errors, print_json, short_number
from featurestore.errors import FeatureRequestError, FeatureStoreError

console = Console(highlight=False)
served_log_app = typer.Typer(no_args_is_help=True, help="The served-value log: what services answered, landed as Parquet.")


@friendly_errors
def alerts(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the rules here (default: print them).",
                                                show_default=False)] = None,
    max_lag: Annotated[int, typer.Option(help="Records behind per topic before FeatureProcessorLagging.", min=1)] = 100_000,
    max_dead_letter_rate: Annotated[float, typer.Option(help="Share of records dead-lettered before an alert.", min=0)] = 0.01,
    max_missing_rate: Annotated[float, typer.Option(help="Share of served values not present before an alert.", min=0)] = 0.2,
    max_psi: Annotated[float, typer.Option(help="PSI of a feature against its reference (featurestore monitor) before an alert.",
                                           min=0)] = 0.25,
    hold: Annotated[str, typer.Option("--for", help="How long a condition lasts before its alert fires (Prometheus duration).")]
    = "5m",
    repo: RepoOpt = Path("."),
) -> None:
    """Prometheus alerting rules for the applied plan: freshness objectives, lag, dead letters, missing values, repairs."""
    import re

    from featurestore.alerts import Thresholds, alert_rules_yaml
    from featurestore.registry import FileRegistry

    if not re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", hold):
        raise FeatureRequestError(f"--for takes a Prometheus duration such as 30s, 5m or 1h, got {hold!r}")
    settings = _settings(repo)
    plan = FileRegistry(settings.paths.registry).current_plan()
    text = alert_rules_yaml(plan, settings.project, Thresholds(max_lag, max_dead_letter_rate, max_missing_rate, max_psi, hold=hold))
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text)
    objectives = sum(1 for v in plan.views if v.freshness_slo_ms)
    console.print(f"Wrote {text.count('- alert:')} alerting rules ({objectives} freshness objective(s)) to {output}; "
                  f"check them with `promtool check rules {output}`.")


@served_log_app.command("land", epilog="Example: featurestore served-log land")
@friendly_errors
def served_log_land(
    follow: Annotated[bool, typer.Option("--follow", help="Keep landing new records until Ctrl-C (default: until caught up).",
                                         metavar="")] = False,
    repo: RepoOpt = Path("."),
) -> None:
    """Write the served-value topic as Parquet beside the history (offline/_served/service=NAME/...), exactly once."""
    import signal
    import threading

    from featurestore.runtime.served_landing import land_served

    settings = _settings(repo)
    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        with console.status(f"Landing {settings.server.served_log_topic} into {settings.paths.offline}/_served ..."):
            stats = land_served(settings, until_caught_up=not follow, stop=stop.is_set)
    finally:
        signal.signal(signal.SIGINT, previous)
    console.print(f"Landed {stats.records:,} logged requests as {stats.rows:,} rows in {len(stats.files)} file(s)"
                  + (f"; {stats.skipped:,} already landed" if stats.skipped else "")
                  + (f"; {stats.malformed:,} unreadable records skipped" if stats.malformed else "") + ".")


def _since(text: str) -> float:
    """Seconds of a span like 30m, 6h, 2d."""
    import re

    m = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not m:
        raise FeatureRequestError(f"--since takes a span such as 30m, 6h or 2d, got {text!r}")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


@friendly_errors
def monitor(
    reference: Annotated[Path, typer.Option(help="A training set (Parquet) the current values are compared with; its "
                                                 "manifest beside it names the views.")],
    service: Annotated[str | None, typer.Option(help="Compare what this service served (its landed served-value log).",
                                                show_default=False)] = None,
    since: Annotated[str, typer.Option(help="With --service: the served values of this last span (30m, 6h, 2d).")] = "1d",
    current: Annotated[Path | None, typer.Option(help="Or compare this Parquet file's columns.", show_default=False)] = None,
    online: Annotated[str | None, typer.Option(help="Or compare the values online now of a sample of this view's entities "
                                                    "(what is written).", show_default=False)] = None,
    sample: Annotated[int, typer.Option(help="With --online: entities sampled.", min=1)] = 1000,
    feature: Annotated[list[str] | None, typer.Option("--feature", "-f", help="Only these features (default: every shared column).",
                                                      show_default=False)] = None,
    max_psi: Annotated[float, typer.Option(help="Exit 1 when a feature's PSI is above this.", min=0)] = 0.25,
    max_null_delta: Annotated[float, typer.Option(help="Exit 1 when a null rate moved more than this.", min=0)] = 0.1,
    prometheus_file: Annotated[Path | None, typer.Option(help="Also write the figures as Prometheus metrics (the "
                                                               "node exporter's textfile format).", show_default=False)] = None,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Drift of feature values against a training set: PSI, KS, null rates and means per feature; exit 1 over thresholds."""
    import datetime as dt
    import json

    import pyarrow.parquet as pq

    from featurestore.client import FeatureStore
    from featurestore.offline.drift import feature_drift

    if sum(x is not None for x in (service, current, online)) != 1:
        raise FeatureRequestError("compare with one of --service NAME (its served values), --online VIEW (its values "
                                  "online now) or --current FILE")
    try:
        ref = pq.read_table(reference)
    except Exception as exc:
        raise FeatureRequestError(f"cannot read the reference training set {reference}: {exc}") from None
    manifest_path = reference.with_suffix(".manifest.json")
    views: dict[str, str] = {}
    if manifest_path.exists():
        for ref_name in json.loads(manifest_path.read_text()).get("features", []):
            view, _, name = ref_name.partition(":")
            views[name] = view
    if service is not None:
        store = FeatureStore(repo)
        cur = store.served_log(service)
        edge = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=_since(since))
        import pyarrow.compute as pc

        cur = cur.filter(pc.greater_equal(cur["served_at"], edge))
        label = f"service {service}, last {since}"
    elif online is not None:
        store = FeatureStore(repo)
        try:
            cur = store.sample_online(online, sample=sample)
        finally:
            store.close()
        label = f"{online} online now ({cur.num_rows:,} entities)"
    else:
        assert current is not None
        try:
            cur = pq.read_table(current)
        except Exception as exc:
            raise FeatureRequestError(f"cannot read {current}: {exc}") from None
        label = str(current)
    skip = {"event_timestamp", "served_at", "request_id", "row", "variant", "_partition", "_offset"}
    try:  # join keys are not features
        from featurestore.registry import FileRegistry

        latest = FileRegistry(_settings(repo).paths.registry).latest()
        skip |= {k.name for v in (latest.plan.views if latest else []) for k in v.join_keys}
    except FeatureStoreError:
        pass
    shared = [c for c in ref.column_names if c in cur.column_names and c not in skip and not c.endswith("__status")]
    names = list(feature) if feature else [c for c in shared if c in views or not views]
    missing = [n for n in names if n not in shared]
    if missing:
        raise FeatureRequestError(f"feature(s) {', '.join(missing)} are not columns of both tables (shared: {', '.join(shared)})")
    if not names:
        raise FeatureRequestError(f"{reference} and {label} share no feature column")
    if cur.num_rows == 0:
        raise FeatureRequestError(f"no current values in {label}")
    results = [feature_drift(n, ref[n].to_pylist(), cur[n].to_pylist()) for n in names]
    over = [r for r in results if (r.psi is not None and r.psi > max_psi)
            or abs(r.null_rate_current - r.null_rate_reference) > max_null_delta]
    if prometheus_file is not None:
        lines = ["# HELP featurestore_feature_drift Drift of a feature against a reference training set (psi, ks, "
                 "null_rate_delta).", "# TYPE featurestore_feature_drift gauge"]
        for r in results:
            for measure, value in (("psi", r.psi), ("ks", r.ks), ("null_rate_delta", r.null_rate_current - r.null_rate_reference)):
                if value is not None:
                    lines.append(f'featurestore_feature_drift{{view="{views.get(r.feature, "")}",feature="{r.feature}",'
                                 f'reference="{reference.name}",measure="{measure}"}} {value:.6g}')
        prometheus_file.write_text("\n".join(lines) + "\n")
    if as_json:
        print_json({"reference": str(reference), "current": label, "features": [r.row() for r in results],
                    "over_thresholds": [r.feature for r in over]})
    else:
        table = cli_table("feature", "kind", "rows ref / now", "null ref / now", "mean ref / now", "PSI", "KS / TV",
                          title=f"{label} vs {reference.name}")
        for r in results:
            table.add_row(r.feature + (" !" if r in over else ""), r.kind, f"{r.reference_rows:,} / {r.current_rows:,}",
                          f"{r.null_rate_reference:.1%} / {r.null_rate_current:.1%}",
                          f"{short_number(r.mean_reference)} / {short_number(r.mean_current)}",
                          short_number(r.psi), short_number(r.ks))
        console.print(table)
    if over:
        error_line(f"{len(over)} feature(s) drifted past the thresholds (PSI > {max_psi:g} or null rate moved by more than "
                   f"{max_null_delta:g}): {', '.join(r.feature for r in over)}")
        raise typer.Exit(1)

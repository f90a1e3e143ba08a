"""Watching features in production: `featurestore alerts` and `featurestore served-log`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from featurestore.cli.common import RepoOpt, _settings, friendly_errors
from featurestore.errors import FeatureRequestError

console = Console(highlight=False)
served_log_app = typer.Typer(no_args_is_help=True, help="The served-value log: what services answered, landed as Parquet.")


@friendly_errors
def alerts(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the rules here (default: print them).",
                                                show_default=False)] = None,
    max_lag: Annotated[int, typer.Option(help="Records behind per topic before FeatureProcessorLagging.", min=1)] = 100_000,
    max_dead_letter_rate: Annotated[float, typer.Option(help="Share of records dead-lettered before an alert.", min=0)] = 0.01,
    max_missing_rate: Annotated[float, typer.Option(help="Share of served values not present before an alert.", min=0)] = 0.2,
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
    plan = FileRegistry(settings.registry_root).current_plan()
    text = alert_rules_yaml(plan, settings.project, Thresholds(max_lag, max_dead_letter_rate, max_missing_rate, hold=hold))
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
        with console.status(f"Landing {settings.served_log_topic} into {settings.offline_root}/_served ..."):
            stats = land_served(settings, until_caught_up=not follow, stop=stop.is_set)
    finally:
        signal.signal(signal.SIGINT, previous)
    console.print(f"Landed {stats.records:,} logged requests as {stats.rows:,} rows in {len(stats.files)} file(s)"
                  + (f"; {stats.skipped:,} already landed" if stats.skipped else "")
                  + (f"; {stats.malformed:,} unreadable records skipped" if stats.malformed else "") + ".")

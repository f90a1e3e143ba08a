"""`featurestore compare` and `featurestore retire`: the end of a view version's life."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from featurestore.cli.common import JsonOpt, RepoOpt, _settings, cli_table, friendly_errors, print_json, short_number, warning_line
from featurestore.errors import FeatureRequestError

console = Console(highlight=False)


@friendly_errors
def compare(
    a: Annotated[str, typer.Argument(help="A live view version, e.g. user_payments@1.")],
    b: Annotated[str, typer.Argument(help="Another version of the same view, e.g. user_payments@2.")],
    sample: Annotated[int, typer.Option(help="Entities (online) and history rows (offline) to compare.", min=1)] = 1000,
    online: Annotated[bool, typer.Option(help="Also compare the online values (needs Redis).", metavar="")] = True,
    repo: RepoOpt = Path("."),
    as_json: JsonOpt = False,
) -> None:
    """Shadow-compare two live versions of a view: mismatch rate, null rates, mean and quantile shifts per feature."""
    from featurestore.client import FeatureStore

    store = FeatureStore(repo)
    try:
        results = store.compare_versions(a, b, sample=sample, online=online)
    finally:
        store.close()
    if as_json:
        print_json([r.row() for r in results])
        return
    table = cli_table("feature", "where", "rows", "differ", "null a", "null b", "mean a", "mean b", "p50 a", "p50 b",
                      "p90 a", "p90 b", title=f"{a} vs {b}")
    for r in results:
        table.add_row(r.feature, r.where, f"{r.rows:,}", f"{r.mismatch_rate:.1%}", f"{r.null_rate_a:.1%}",
                      f"{r.null_rate_b:.1%}", short_number(r.mean_a), short_number(r.mean_b), short_number(r.p50_a),
                      short_number(r.p50_b), short_number(r.p90_a),
                      short_number(r.p90_b))
    console.print(table)


@friendly_errors
def retire(
    version: Annotated[str, typer.Argument(help="The view version to retire, e.g. user_payments@1.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.", metavar="")] = False,
    grace: Annotated[float, typer.Option(help="Seconds processors get to stop writing it before its keys go.",
                                         min=0)] = 5.0,
    repo: RepoOpt = Path("."),
) -> None:
    """Stop writing a view version and delete its online keys (its history stays).

    Delete the version's definition from the repository first: retire applies the repository
    (processors following the registry stop writing the version within seconds), then
    deletes the version's keys."""
    from rich.progress import Progress

    from featurestore.compile import compile_repo
    from featurestore.plan.names import parse_view_ref, view_id
    from featurestore.registry import FileRegistry
    from featurestore.runtime.rebuild import wipe_online

    parsed = parse_view_ref(version)
    if parsed is None or parsed[1] is None:
        raise FeatureRequestError(f"name the version to retire as view@N (e.g. user_payments@1), got {version!r}")
    ident = view_id(parsed[0], parsed[1])
    settings = _settings(repo)
    registry = FileRegistry(settings.paths.registry)
    latest = registry.latest()
    applied = latest.plan if latest else None
    repo_plan = compile_repo(repo)
    if any(v.name == ident for v in repo_plan.views):
        raise FeatureRequestError(f"the repository still defines {version}: delete that FeatureView(..., version="
                                  f"{parsed[1]}) from it (mark another version serving=True if this one serves), then retire")
    if not yes and not typer.confirm(f"Stop writing {version} and delete its online keys in {settings.redis.display}?"):
        raise typer.Exit(1)
    if applied is not None and any(v.name == ident for v in applied.views):
        applied_version = registry.apply(repo_plan, note=f"retired {version}")
        if applied_version is not None:
            console.print(f"Applied version {applied_version.version}: {version} is no longer written.")
            for line in applied_version.diff:
                console.print(f"  {line}", highlight=False, markup=False)
        if grace:
            with console.status(f"Giving processors {grace:g} s to take up the new version..."):
                time.sleep(grace)  # processors check the registry every 2 s and switch at their next batch
    else:
        warning_line(f"{version} is not in the applied plan: only its online keys are deleted")
    client = settings.redis.client()
    try:
        with Progress(console=console) as progress:
            task = progress.add_task(f"Deleting the online keys of {version}", total=None)
            deleted = wipe_online(client, settings.project, ident, lambda n: progress.advance(task, n))
            progress.update(task, total=deleted, completed=deleted)
    finally:
        client.close()
    console.print(f"Retired {version}: {deleted:,} online keys deleted; its history stays in {settings.paths.offline}.")

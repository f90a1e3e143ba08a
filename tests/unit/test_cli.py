"""The command line as a user runs it: exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "featurestore", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, env=full_env, timeout=120)


def test_apply_on_a_broken_repo_lists_all_problems_without_traceback() -> None:
    res = cli("apply", "--repo", str(ROOT / "tests" / "fixtures" / "broken_repo"))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr + res.stdout
    assert "problem(s) in the feature repository" in res.stderr
    problems = [line for line in res.stderr.splitlines() if line.strip().startswith("- ")]
    assert len(problems) >= 11
    assert any("defs.py" in p and "FeatureView 'user_clicks'" in p for p in problems)
    assert any("syntax_error.py" in p for p in problems)


def test_plan_apply_and_registry(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "feature_defs", repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    res = cli("plan", "--repo", str(repo))
    assert res.returncode == 0, res.stderr
    assert "+ FeatureView user_payments" in res.stdout
    # a new view lists the features it generates, with their types
    assert any(line.split()[:3] == ["amount_sum_1h", "float", "sum"] for line in res.stdout.splitlines())
    assert any(line.split()[:2] == ["recent_merchants_1h", "list[str]"] for line in res.stdout.splitlines())
    res = cli("apply", "--repo", str(repo))
    assert res.returncode == 0 and "Applied version 1" in res.stdout
    res = cli("apply", "--repo", str(repo))
    assert res.returncode == 0 and "No changes" in res.stdout
    views = repo / "views.py"
    views.write_text(views.read_text().replace("ttl=timedelta(days=1)", "ttl=timedelta(days=2)"))
    res = cli("plan", "--repo", str(repo))
    assert "~ FeatureView merchant_payments" in res.stdout and "ttl_ms: 86400000 -> 172800000" in res.stdout
    # a change of values at the same version is refused by plan and apply, saying what to do
    assert res.returncode == 1 and "FeatureView 'merchant_payments' version 1" in res.stdout
    assert "version=2" in res.stdout and "--in-place" in res.stdout
    refused = cli("apply", "--repo", str(repo))
    assert refused.returncode == 1 and "version=2" in refused.stderr and "Traceback" not in refused.stderr
    assert cli("apply", "--in-place", "--repo", str(repo)).returncode == 0
    listing = cli("registry", "list", "--repo", str(repo))
    assert listing.returncode == 0 and "2" in listing.stdout
    shown = cli("registry", "show", "1", "--repo", str(repo))
    assert '"ttl_ms": 86400000' in shown.stdout
    missing = cli("registry", "show", "7", "--repo", str(repo))
    assert missing.returncode == 1 and "no version 7" in missing.stderr and "Traceback" not in missing.stderr
    restored = cli("registry", "restore", "1", "--repo", str(repo))
    assert restored.returncode == 0 and "as version 3" in restored.stdout


def test_run_without_apply_says_what_to_do(tmp_path: Path) -> None:
    res = cli("run", "--repo", str(tmp_path))
    assert res.returncode == 1
    assert "featurestore apply" in res.stderr and "Traceback" not in res.stderr


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "featurestore.yaml").write_text("batch_size: nope\n")
    res = cli("run", "--repo", str(tmp_path))
    assert res.returncode == 1
    assert "batch_size" in res.stderr and "Traceback" not in res.stderr


def test_version_and_dev_env_without_services(tmp_path: Path) -> None:
    res = cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("featurestore ")
    res = cli("dev", "env", "--repo", str(tmp_path))
    assert res.returncode == 1 and res.stdout == ""
    assert "no dev services started from" in res.stderr and "featurestore dev --detach" in res.stderr


def test_an_unreachable_redis_is_named_with_the_setting_that_changes_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "feature_defs", repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    assert cli("apply", "--repo", str(repo)).returncode == 0
    res = cli("online", "--repo", str(repo), "-f", "user_payments:amount_sum_1h", "-e", "user_id=1",
              env={"FEATURESTORE_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "127.0.0.1:1" in res.stderr and "FEATURESTORE_REDIS_URL" in res.stderr and "featurestore dev" in res.stderr


def test_typos_get_a_did_you_mean(tmp_path: Path) -> None:
    """A misspelt feature, view or column is answered with the closest name, in the SDK's
    words and in the CLI's (the option that names the column)."""
    import pandas as pd
    import pytest

    from featurestore.client.online_query import resolve_features
    from featurestore.compile import compile_repo
    from featurestore.errors import FeatureRequestError

    plan = compile_repo(ROOT / "feature_defs")
    with pytest.raises(FeatureRequestError, match="did you mean 'amount_sum_1h'"):
        resolve_features(plan, ["user_payments:amount_sum_1hr"])
    with pytest.raises(FeatureRequestError, match="did you mean 'user_payments'"):
        resolve_features(plan, ["user_payment:amount_sum_1h"])
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "feature_defs", repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    assert cli("apply", "--repo", str(repo)).returncode == 0
    rows = tmp_path / "rows.parquet"
    pd.DataFrame({"user_id": [1], "ts": pd.to_datetime(["2026-01-01T00:00:00Z"])}).to_parquet(rows)
    res = cli("training-set", "--repo", str(repo), "--entities", str(rows), "-f", "user_payments:amount_sum_1h",
              "-o", str(tmp_path / "out.parquet"))
    assert res.returncode == 1 and "--timestamp-column" in res.stderr and "Traceback" not in res.stderr
    views = repo / "views.py"
    views.write_text(views.read_text().replace('Aggregation("amount", "sum"', 'Aggregation("amout", "sum"'))
    res = cli("plan", "--repo", str(repo))
    assert res.returncode == 1 and "did you mean 'amount'?" in res.stderr


def test_help_follows_the_workflow_with_an_example_per_command() -> None:
    top = cli("--help").stdout
    panels = [line.split("─ ")[1].split(" ─")[0] for line in top.splitlines() if "╭─ " in line and ". " in line]
    assert panels == ["1. Start", "2. Define features", "3. Process events", "4. Read and serve", "5. Check"]
    for command in ("plan", "apply", "run", "backfill", "rebuild-online", "online", "training-set", "consistency",
                    "serve", "status", "demo", "dev", "registry", "tokens"):
        assert "Example: " in cli(command, "--help").stdout, command
    detach = next(line for line in cli("dev", "--help").stdout.splitlines() if "--detach" in line)
    assert "<bool>" not in detach, "flags take no value"


def test_messages_are_printed_as_given_not_as_markup(tmp_path: Path) -> None:
    res = cli("init", str(tmp_path / "x"), "--template", "[bold]rides[/bold]")
    assert res.returncode == 1 and "no template '[bold]rides[/bold]'" in res.stderr

"""`featurestore alerts`: Prometheus rules for a plan, accepted by promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from featurestore.alerts import Thresholds, alert_rules_yaml
from featurestore.compile import compile_repo
from featurestore.registry import FileRegistry
from tests.unit.test_cli import ROOT, cli


def _repo_with_objective(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "feature_defs", repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    views = repo / "views.py"
    views.write_text(views.read_text().replace('    owner="risk-team@example.com",\n    description="Spending',
                                               '    freshness_slo=timedelta(seconds=5),\n    owner="risk-team@example.com",\n'
                                               '    description="Spending', 1))
    return repo


def test_rules_cover_objectives_and_operations(tmp_path: Path) -> None:
    plan = compile_repo(_repo_with_objective(tmp_path))
    assert plan.view("user_payments").freshness_slo_ms == 5000 and plan.view("merchant_payments").freshness_slo_ms is None
    rules = yaml.safe_load(alert_rules_yaml(plan, "shop", Thresholds(max_lag=500, hold="2m")))["groups"][0]["rules"]
    by_name = {r["alert"]: r for r in rules}
    fresh = by_name["FeatureFreshnessObjectiveMissed"]
    assert fresh["labels"]["view"] == "user_payments" and fresh["for"] == "2m"
    assert 'featurestore_freshness_seconds_bucket{view="user_payments"}' in fresh["expr"] and fresh["expr"].endswith("> 5")
    assert by_name["FeatureProcessorLagging"]["expr"].endswith("> 500")
    assert {"FeatureDeadLetterRateHigh", "FeatureValuesMissing", "FeatureDrifted", "FeatureOnlineStoreRepaired",
            "FeatureRolloutRolledBack"} <= set(by_name)
    # an objective is not a value: changing it needs no new version
    assert compile_repo(ROOT / "feature_defs").view("user_payments").values_fingerprint() == plan.view("user_payments").values_fingerprint()


def test_promtool_accepts_the_rules_written_by_the_cli(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian: prometheus; .ci/run installs it)")
    repo = _repo_with_objective(tmp_path)
    FileRegistry(repo / ".featurestore" / "registry").apply(compile_repo(repo))
    out = tmp_path / "rules.yml"
    res = cli("alerts", "-o", str(out), "--for", "1m", "--repo", str(repo))
    assert res.returncode == 0 and "alerting rules (1 freshness objective(s))" in res.stdout, res.stdout + res.stderr
    checked = subprocess.run([promtool, "check", "rules", str(out)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout
    bad = cli("alerts", "--for", "five minutes", "--repo", str(repo))
    assert bad.returncode == 1 and "Prometheus duration" in bad.stderr and "Traceback" not in bad.stderr

"""Compiling repositories: the example's plan is pinned; broken repos report every problem."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from featurestore.compile import compile_repo, diff_plans
from featurestore.errors import ValidationFailed
from featurestore.plan import Plan

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "feature_defs_plan.json"
BROKEN = ROOT / "tests" / "fixtures" / "broken_repo"


def test_example_repo_compiles_to_the_golden_plan() -> None:
    plan = compile_repo(ROOT / "feature_defs")
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_bytes(plan.to_json())
    assert json.loads(plan.to_json()) == json.loads(GOLDEN.read_bytes()), (
        "compiled plan changed; if intended, rerun with UPDATE_GOLDEN=1 and review the diff"
    )


def test_plan_round_trips_through_json_with_a_stable_hash() -> None:
    plan = compile_repo(ROOT / "feature_defs")
    again = Plan.model_validate_json(plan.to_json())
    assert again == plan
    assert again.content_hash == plan.content_hash
    assert diff_plans(plan, again).empty


def test_feature_names_and_tiles_follow_the_documented_rules() -> None:
    plan = compile_repo(ROOT / "feature_defs")
    view = plan.view("user_payments")
    aggs = {a.name: (a.window_ms, a.tile_ms) for a in view.aggregations}
    assert aggs["amount_sum_1h"] == (3_600_000, 60_000)
    assert aggs["amount_sum_1d"] == (86_400_000, 1_800_000)
    assert {"last_merchant", "amount_eur", "is_large"} <= set(view.feature_names)
    transform = next(f for f in view.row_features if f.name == "amount_eur")
    assert transform.udf_ref == "transforms:amount_eur" and transform.dtype == "float"
    assert [k.model_dump() for k in view.join_keys] == [{"name": "user_id", "dtype": "int"}]


def test_broken_repo_lists_every_problem_with_file_and_object() -> None:
    with pytest.raises(ValidationFailed) as info:
        compile_repo(BROKEN)
    text = [str(p) for p in info.value.problems]
    expectations = [
        ("syntax_error.py", "import failed"),
        ("defs.py", "unknown field 'referrer'"),
        ("defs.py", "'sum' needs a numeric field but 'page' is str"),
        ("defs.py", "window 0:00:00 is not positive"),
        ("defs.py", "unknown aggregation function 'median'"),
        ("defs.py", "udf must be a function defined at module level"),
        ("defs.py", "join key 'account_id' of entity 'account' is not a field"),
        ("defs.py", "ttl must be a positive timedelta"),
        ("defs.py", "duplicate feature name"),
        ("more.py", "duplicate FeatureView name"),
        ("defs.py", "timestamp_field 'when' must be a datetime"),
    ]
    for file, fragment in expectations:
        assert any(file in t and fragment in t for t in text), f"missing problem {fragment!r} in {file}:\n" + "\n".join(text)
    assert all(p.fix for p in info.value.problems), "every problem carries a fix-it hint"
    assert any("FeatureView 'user_clicks'" in t for t in text)
    assert any("FeatureView 'account_clicks'" in t for t in text)


def test_empty_folder_is_a_problem_not_an_empty_plan(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match="no feature views found"):
        compile_repo(tmp_path)


def test_plan_diff_names_changed_attributes(tmp_path: Path) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "feature_defs", repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    before = compile_repo(repo)
    views = repo / "views.py"
    views.write_text(views.read_text().replace("ttl=timedelta(days=7)", "ttl=timedelta(days=3)"))
    after = compile_repo(repo)
    diff = diff_plans(before, after)
    assert [c.name for c in diff.changes] == ["user_payments"]
    assert any("ttl_ms: 604800000 -> 259200000" in d for d in diff.changes[0].details)
    added = [str(c).split()[0] for c in diff_plans(None, after).changes]
    assert added == ["+"] * 9, "two entities, a source, a request source, 2 + 1 views, 2 services"


def test_feature_services_are_checked_against_the_views(tmp_path: Path) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "feature_defs", repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    plan = compile_repo(repo)
    assert plan.service("merchant_monitoring").features == [f"merchant_payments:{f}" for f in plan.view("merchant_payments").feature_names]
    assert plan.service("fraud_model_v1").view_names == ["user_payments"]
    services = repo / "services.py"
    services.write_text(services.read_text().replace('"user_payments:last_country",', '"user_payments:nope", "ghost:x", "bad",'))
    with pytest.raises(ValidationFailed) as err:
        compile_repo(repo)
    text = [str(p) for p in err.value.problems]
    assert any("view 'user_payments' has no feature 'nope'" in t for t in text)
    assert any("unknown view 'ghost'" in t for t in text)
    assert any("'bad' is not 'view:feature'" in t for t in text)


def test_a_timestamp_without_utc_offset_is_refused_with_the_fix(tmp_path: Path) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "feature_defs", repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    sources = repo / "sources.py"
    sources.write_text("from datetime import datetime\n" + sources.read_text().replace("    ts: AwareDatetime", "    ts: datetime"))
    with pytest.raises(ValidationFailed) as err:
        compile_repo(repo)
    text = [str(p) for p in err.value.problems]
    assert any("timestamp_field 'ts' accepts times without a UTC offset" in t and "AwareDatetime" in t for t in text), text


def test_definitions_are_immutable_and_hash_by_every_field() -> None:
    import dataclasses
    from datetime import timedelta

    from featurestore import Entity, FeatureView, Field, KafkaSource

    src = KafkaSource("s", topic="t", schema=object, timestamp_field="ts")
    make = lambda **kw: FeatureView("v", entities=[Entity("e", ["k"])], source=src, features=[Field("x")],  # noqa: E731
                                    ttl=timedelta(days=1), tags={"pii": "true"}, **kw)
    view = make()
    with pytest.raises(TypeError):
        view.tags["pii"] = "false"  # type: ignore[index]  # what the test checks: refused
    with pytest.raises(dataclasses.FrozenInstanceError):
        view.name = "w"  # type: ignore[misc]  # what the test checks: refused
    assert make() == view and hash(make()) == hash(view)
    other = make(description="changed")
    assert other != view and {view, other} == {view, other} and len({view, other}) == 2
    assert hash(dataclasses.replace(view, tags={"pii": "false"})) != hash(view)
    for changed in (dict(version=2), dict(freshness_slo=timedelta(seconds=5))):
        assert hash(make(**changed)) != hash(view), changed
    assert dataclasses.replace(view, version=2) == make(version=2), "a copy normalises like the original"
    assert Entity("e", "k").join_keys == ("k",) and KafkaSource("s", "t", object, "ts").dead_letter_topic == "t.dlq"
    assert Field("x").name == "x" and Field("x", "y").name == "y"


def test_a_change_to_a_transforms_code_is_a_plan_change(tmp_path: Path) -> None:
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "feature_defs", repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    before = compile_repo(repo)
    assert before.code["transforms:amount_eur"] != before.code["sources:Payment"], "transforms.py imports sources.py too"
    transforms = repo / "transforms.py"
    transforms.write_text(transforms.read_text().replace('"USD": 0.92', '"USD": 0.93'))  # a constant the udf reads
    after = compile_repo(repo)
    assert after.content_hash != before.content_hash
    lines = diff_plans(before, after).lines()
    assert any(line.startswith("~ Code transforms:amount_eur\n    source changed (") for line in lines), lines
    assert not any("sources:Payment" in line for line in lines), "an unchanged module keeps its hash"
    (repo / "sources.py").write_text((repo / "sources.py").read_text() + "\n# a comment\n")
    assert compile_repo(repo).code == after.code, "comments and layout are not code"
    (repo / "sources.py").write_text((repo / "sources.py").read_text() + "\nLIMIT = 3\n")
    assert compile_repo(repo).code["transforms:amount_eur"] != after.code["transforms:amount_eur"], "an imported module counts"
    before_edit = compile_repo(repo).code
    views = repo / "views.py"
    views.write_text(views.read_text().replace('description="Spending of each card holder."', 'description="Card holders."'))
    assert compile_repo(repo).code == before_edit, "definitions are data in the plan, not code"

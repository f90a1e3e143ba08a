"""Registry: every apply is a kept version; re-applying is a no-op; restore makes a new version."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from featurestore.compile import compile_repo
from featurestore.errors import RegistryError
from featurestore.registry import FileRegistry

ROOT = Path(__file__).resolve().parents[2]


def test_versions_are_kept_and_restorable(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "feature_defs", repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    reg = FileRegistry(tmp_path / "registry")
    with pytest.raises(RegistryError, match="nothing applied yet"):
        reg.current_plan()
    first = compile_repo(repo)
    v1 = reg.apply(first)
    assert v1 is not None and v1.version == 1 and v1.content_hash == first.content_hash
    assert reg.apply(first) is None, "re-applying the same plan adds no version"
    views = repo / "views.py"
    text = views.read_text()
    views.write_text(text.replace('owner="risk-team@example.com"', 'owner="fraud@example.com"', 1))
    second = compile_repo(repo)
    v2 = reg.apply(second)
    assert v2 is not None and v2.version == 2
    assert any("owner" in line for line in v2.diff)
    assert reg.get(1).plan == first and reg.current_plan() == second
    v3 = reg.restore(1)
    assert v3 is not None and v3.version == 3 and v3.note == "restored from version 1"
    assert reg.current_plan() == first
    assert [v.version for v in reg.versions()] == [1, 2, 3]
    with pytest.raises(RegistryError, match="no version 9"):
        reg.get(9)


def test_a_plan_of_another_format_is_refused_with_what_to_do(tmp_path: Path) -> None:
    import orjson

    registry = FileRegistry(tmp_path / "registry")
    registry.apply(compile_repo(Path(__file__).resolve().parents[2] / "feature_defs"))
    path = next((tmp_path / "registry").glob("v*.json"))
    data = orjson.loads(path.read_bytes())
    data["plan"]["format_version"] = 99
    path.write_bytes(orjson.dumps(data))
    with pytest.raises(RegistryError, match="plan of format 99; this featurestore reads format 1: upgrade featurestore"):
        registry.current_plan()

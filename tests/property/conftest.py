"""The property tests' feature repository (every aggregation over a random stream), shared by their modules."""

from __future__ import annotations

from pathlib import Path

import pytest

from featurestore.compile import compile_repo
from featurestore.compile.loader import ensure_importable
from featurestore.plan import Plan


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.property.test_windows_equivalence import DEFS

    root = tmp_path_factory.mktemp("prop_repo")
    (root / "prop_window_defs.py").write_text(DEFS)
    ensure_importable(root)
    return root


@pytest.fixture(scope="module")
def plan(repo: Path) -> Plan:
    return compile_repo(repo)

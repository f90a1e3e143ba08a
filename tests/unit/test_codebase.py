"""Rules of the codebase that no linter checks for us."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)$")


def test_every_type_ignore_names_its_error_and_says_why() -> None:
    bad = []
    for folder in ("featurestore", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "fixtures" in path.parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                found = _IGNORE.search(line)
                if found and (not found["codes"] or not found["rest"].strip().startswith("#")):
                    bad.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bad, "a type: ignore needs [code] and '# why':\n" + "\n".join(bad)


def test_the_runtime_does_not_import_the_cli_client_or_server() -> None:
    """Imports run one way: definitions → compile → plan ← runtime/online/offline ← client ← server ← cli."""
    below = {"runtime", "online", "offline", "plan", "compile", "definitions"}
    above = ("featurestore.client", "featurestore.server", "featurestore.cli")
    bad = []
    for part in below:
        for path in sorted((ROOT / "featurestore" / part).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if re.match(r"\s*(from|import)\s+(featurestore\.(client|server|cli))\b", line):
                    bad.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bad, f"{', '.join(above)} are above these layers:\n" + "\n".join(bad)

"""Load a feature repository: import its modules and collect the definitions in them.

Objects are named `module.variable` after the first module-level variable that holds
them (modules in sorted order), so names never depend on import order.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featurestore.definitions import Entity, FeatureService, FeatureView, KafkaSource, RequestFeatureView, RequestSource
from featurestore.errors import Problem
from featurestore.files import put_first_on_sys_path

DEFINITION_TYPES = (Entity, KafkaSource, FeatureView, FeatureService, RequestSource, RequestFeatureView)
_SKIP_DIRS = {"__pycache__", "tests", "node_modules"}


@dataclass(frozen=True)
class Located:
    """A definition and where it was declared."""

    obj: Any
    file: str
    variable: str


@dataclass
class LoadedRepo:
    """The definitions found in a repository and the problems met while importing it."""

    root: Path
    objects: list[Located] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def where(self, obj: Any) -> Located | None:
        for loc in self.objects:
            if loc.obj is obj:
                return loc
        return None


def repo_modules(root: Path) -> list[tuple[str, Path]]:
    """(dotted module name, file) of every Python module in the repo, sorted by name."""
    found: list[tuple[str, Path]] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part.startswith(".") or part in _SKIP_DIRS for part in rel.parts[:-1]):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
            if not parts:
                continue
        if not all(p.isidentifier() for p in parts):
            continue
        found.append((".".join(parts), path))
    return sorted(found)


def ensure_importable(root: Path) -> None:
    """Put the repo root first on sys.path so its modules (and their imports) resolve."""
    put_first_on_sys_path(root)


def _forget_repo_modules(root: Path) -> None:
    """Drop cached modules from this repo (or of the same names) so edits are seen."""
    resolved = root.resolve()
    names = {name for name, _ in repo_modules(root)}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if name in names or (file and Path(file).resolve().is_relative_to(resolved)):
            del sys.modules[name]


def load_repo(root: Path | str) -> LoadedRepo:
    """Import every module of the repository and collect its definitions."""
    root = Path(root)
    loaded = LoadedRepo(root=root)
    if not root.is_dir():
        loaded.problems.append(
            Problem(str(root), "repository", "folder not found", "pass the path of a feature repository")
        )
        return loaded
    ensure_importable(root)
    _forget_repo_modules(root)
    seen: set[int] = set()
    for name, path in repo_modules(root):
        rel = _display_path(path)
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # user code: report, keep going
            loaded.problems.append(
                Problem(
                    rel,
                    f"module {name}",
                    f"import failed: {type(exc).__name__}: {exc}",
                    f"fix the error (run `python {rel}` to see the traceback)",
                )
            )
            continue
        for variable, value in sorted(vars(module).items()):
            if isinstance(value, DEFINITION_TYPES) and id(value) not in seen:
                seen.add(id(value))
                loaded.objects.append(Located(value, rel, f"{name}.{variable}"))
    return loaded


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)

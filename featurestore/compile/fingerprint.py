"""What the code a plan names looks like: a content hash per import path, covering its
module and every module of the repository that module imports (directly or not).

A change to a transform's body, to a constant it reads or to a helper module it imports
changes its hash, so the plan changes and `apply` records a new registry version. Whole
modules are hashed as code (their syntax tree: comments and layout do not count), less the
module-level definitions (`x = FeatureView(...)`, `FeatureService`, `Entity`, ...), which
the plan records as data: so a change elsewhere in the same module counts (the safe side),
and editing a view's description beside its event model does not.

Hashes start with `HASH_FORMAT`; plans applied before it hashed whole files.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from featurestore.compile.loader import repo_modules

HASH_FORMAT = "ast1:"
"""Prefix of this module's hashes."""
DEFINITIONS = frozenset({"Entity", "KafkaSource", "FeatureView", "FeatureService", "RequestSource", "RequestFeatureView"})
"""Calls whose module-level results are definitions (data in the plan), not code."""


def code_fingerprints(root: Path, refs: set[str]) -> dict[str, str]:
    """`module:QualName` -> sha256 of the repository modules behind it."""
    files = dict(repo_modules(root))
    graph: dict[str, set[str]] = {}
    return {ref: _hash(ref.partition(":")[0], files, graph, root) for ref in sorted(refs)}


def _hash(module: str, files: dict[str, Path], graph: dict[str, set[str]], root: Path) -> str:
    seen: set[str] = set()
    stack = [module]
    while stack:
        name = stack.pop()
        if name in seen or name not in files:
            continue
        seen.add(name)
        stack.extend(_imports(name, files, graph))
    digest = hashlib.sha256()
    for name in sorted(seen):
        digest.update(f"{files[name].relative_to(root).as_posix()}\0".encode())
        digest.update(_code_of(files[name]))
        digest.update(b"\0")
    return HASH_FORMAT + digest.hexdigest()


def _code_of(path: Path) -> bytes:
    """A module's code as its syntax tree without the module-level definitions (the file's
    bytes when it does not parse)."""
    data = path.read_bytes()
    try:
        tree = ast.parse(data)
    except (SyntaxError, ValueError):
        return data
    tree.body = [node for node in tree.body if not _is_definition(node)]
    return ast.dump(tree, annotate_fields=False, include_attributes=False).encode()


def _is_definition(node: ast.stmt) -> bool:
    value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
    if not isinstance(value, ast.Call):
        return False
    callee = value.func
    name = callee.id if isinstance(callee, ast.Name) else callee.attr if isinstance(callee, ast.Attribute) else ""
    return name in DEFINITIONS


def _imports(module: str, files: dict[str, Path], graph: dict[str, set[str]]) -> set[str]:
    """The repository modules `module` imports (absolute and relative imports)."""
    hit = graph.get(module)
    if hit is not None:
        return hit
    found: set[str] = set()
    try:
        tree = ast.parse(files[module].read_bytes())
    except (SyntaxError, ValueError):
        tree = ast.Module(body=[], type_ignores=[])
    package = module if files[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, base] if base else parts)
            names = [base] + [f"{base}.{a.name}" if base else a.name for a in node.names]
        for name in names:
            while name:  # a.b.c imports a and a.b too
                if name in files:
                    found.add(name)
                name = name.rpartition(".")[0]
    graph[module] = found
    return found

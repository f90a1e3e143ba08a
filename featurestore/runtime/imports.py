"""Resolve `module:qualname` import paths recorded in the plan (event models, udfs).

A plan names code only by import path, and only code of the feature repository runs:
the module must be a file under the repository folder, checked before anything is
imported. A path to the standard library, an installed package or another folder is
refused, so a plan can never make the processor call `sys:exit` or `os:system`.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from featurestore.errors import RegistryError
from featurestore.files import put_first_on_sys_path
from featurestore.plan.names import is_code_ref


def repo_module_file(code_root: Path, module_name: str) -> Path | None:
    """The file of a module of the repository at `code_root`, or None if it has none there."""
    base = code_root.joinpath(*module_name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.resolve()
    return None


def import_object(ref: str, code_root: Path) -> Any:
    """Import `module:Qual.Name` from the feature repository at `code_root` (nothing else)."""
    if not is_code_ref(ref):
        raise RegistryError(f"the plan names code as {ref!r}, which is not an import path module.path:QualName")
    module_name, _, qualname = ref.partition(":")
    root = code_root.resolve()
    parts = module_name.split(".")
    for depth in range(1, len(parts) + 1):  # every package on the way must be the repository's own
        name = ".".join(parts[:depth])
        file = repo_module_file(root, name)
        if name in sys.stdlib_module_names or name in sys.builtin_module_names:
            raise RegistryError(f"the plan names code {ref!r} in '{name}', a name of the standard library; "
                                "rename that module of the repository")
        if file is None:
            raise RegistryError(
                f"the plan names code {ref!r} but '{name}' is not a module of the feature repository {root}; "
                "only the repository's own code runs (deploy the repo, then apply from it)"
            )
        loaded = sys.modules.get(name)
        if loaded is not None and _module_file(loaded) != file:
            del sys.modules[name]  # a module of the same name from elsewhere (another repo, or shadowed)
    put_first_on_sys_path(root)
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # the repository's own code failed to import
        raise RegistryError(f"cannot import {ref} recorded in the registry: {type(exc).__name__}: {exc}") from None
    if _module_file(sys.modules[module_name]) != repo_module_file(root, module_name):
        raise RegistryError(f"{ref} did not load from the feature repository {root}")
    return obj


def _module_file(module: Any) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if file else None


def forget_repo_modules(code_root: Path) -> None:
    """Drop the repository's modules from the import cache, so the next import reads their
    current source (a newly applied plan's code)."""
    root = code_root.resolve()
    for name, module in list(sys.modules.items()):
        file = _module_file(module)
        if file is not None and file.is_relative_to(root):
            del sys.modules[name]

"""Resolve `module:qualname` import paths recorded in the plan (event models, udfs)."""

from __future__ import annotations

import importlib
from typing import Any

from featurestore.errors import RegistryError


def import_object(ref: str) -> Any:
    """Import `module:Qual.Name`; the repo root must be on sys.path."""
    module_name, _, qualname = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise RegistryError(f"cannot import {ref} recorded in the registry: {exc} (is the repo path right?)") from None
    return obj

"""What every definition shares: immutable tags, normalised arguments, a hash over every field."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any


def frozen_tags(tags: Mapping[str, str] | None) -> Mapping[str, str]:
    """A read-only copy of `tags` (a definition is immutable, its tags too)."""
    return MappingProxyType(dict(tags or {}))


def normalised(definition: Any, **values: Any) -> None:
    """Store the normalised form of arguments (a tuple for a list, a default name) on a frozen
    definition, from its `__post_init__`: the one place a definition is written to."""
    for name, value in values.items():
        object.__setattr__(definition, name, value)


def hash_of_fields(definition: Any) -> int:
    """A definition's hash over every one of its fields (mappings by their sorted items)."""
    return hash(tuple(_hashable(getattr(definition, f.name)) for f in dataclasses.fields(definition)))


def _hashable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value

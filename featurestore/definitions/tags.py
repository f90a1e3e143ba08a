"""Tags of definitions: free-form strings, immutable once a definition holds them."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType


def frozen_tags(tags: Mapping[str, str] | None) -> Mapping[str, str]:
    """A read-only copy of `tags` (a definition is immutable, its tags too)."""
    return MappingProxyType(dict(tags or {}))


def tag_items(tags: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """Tags as a hashable value (for a definition's hash)."""
    return tuple(sorted(tags.items()))

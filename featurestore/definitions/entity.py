"""Entity: what features describe (a user, a card, a merchant)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from featurestore.definitions.tags import normalised


@dataclass(frozen=True)
class Entity:
    """A thing features describe, identified by one or more join keys.

    The join keys' types come from the event schema of each source that uses the entity.
    """

    name: str
    join_keys: Sequence[str] = ()
    """Stored as a tuple (a single name too)."""
    description: str = ""

    def __post_init__(self) -> None:
        normalised(self, join_keys=(self.join_keys,) if isinstance(self.join_keys, str) else tuple(self.join_keys))

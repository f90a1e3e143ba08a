"""Entity: what features describe (a user, a card, a merchant)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, init=False)
class Entity:
    """A thing features describe, identified by one or more join keys.

    The join keys' types come from the event schema of each source that uses the entity.
    """

    name: str
    join_keys: tuple[str, ...]
    description: str

    def __init__(self, name: str, join_keys: Sequence[str] = (), description: str = "") -> None:
        object.__setattr__(self, "name", name)
        keys = (join_keys,) if isinstance(join_keys, str) else tuple(join_keys)
        object.__setattr__(self, "join_keys", keys)
        object.__setattr__(self, "description", description)

"""The value Redis holds per (view, entity) in storage layout 6: the entity's states, one per
source partition that fed it, as one string (pure layout).

`"FSe6"`, the number of states n (u32), then per state its source partition (i32) and its
length in bytes (u32), then the states themselves in partition order
(`featurestore.online.state`; each a multiple of 8 bytes, so they stay aligned). A read of
many entities is one GET per entity, whose replies are split side by side; an entity fed by
one partition (its view is keyed like the topic: the common case) holds exactly one state
after a 16-byte head. `guard.lua` writes this layout: it replaces or inserts one partition's
state, keeping the order, and only when the value holds no newer state of that partition.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from operator import itemgetter

import numpy as np

from featurestore.errors import OnlineLayoutError

MAGIC = b"FSe6"
_HEAD = struct.Struct("<4sI")
_PART = struct.Struct("<iI")
_SINGLE = _HEAD.size + _PART.size
_ONE = MAGIC + (1).to_bytes(4, "little")
_HEAD_BYTES, _FIRST_PARTITION, _FIRST_STATE = itemgetter(slice(0, 8)), itemgetter(slice(8, 12)), itemgetter(slice(_SINGLE, None))


def value_alone(partition: int, state: bytes) -> bytes:
    """The value of an entity holding one state (what `guard.lua` stores as sent)."""
    return b"".join((_ONE, _PART.pack(partition, len(state)), state))


def unpack_value(value: bytes, key: bytes | str) -> list[tuple[int, bytes]]:
    """(partition, state) of each state in an entity's value (`key`: its Redis key, for the error)."""
    if len(value) < _HEAD.size or value[:4] != MAGIC:
        raise not_a_value(key)
    (n,) = struct.unpack_from("<I", value, 4)
    at = _HEAD.size + n * _PART.size
    out = []
    for i in range(n):
        p, size = _PART.unpack_from(value, _HEAD.size + i * _PART.size)
        out.append((p, value[at : at + size]))
        at += size
    if at != len(value):
        raise not_a_value(key)
    return out


def split_values(values: Sequence[bytes | None], keys: Sequence[bytes]) -> tuple[list[bytes], list[int], list[int]]:
    """The states in many entities' values (None: no value): the states, the position of the
    entity each belongs to (in order) and its source partition."""
    present = [i for i, v in enumerate(values) if v is not None]
    found: list[bytes] = [values[i] for i in present]  # type: ignore[misc]  # the Nones were left out
    if set(map(_HEAD_BYTES, found)) <= {_ONE}:  # one state each: no loop in Python
        partitions = np.frombuffer(b"".join(map(_FIRST_PARTITION, found)), "<i4").tolist()
        return list(map(_FIRST_STATE, found)), present, partitions
    states: list[bytes] = []
    owner: list[int] = []
    partition: list[int] = []
    for i, value in zip(present, found):
        for p, state in unpack_value(value, keys[i]):
            states.append(state)
            owner.append(i)
            partition.append(p)
    return states, owner, partition


def not_a_value(key: bytes | str) -> OnlineLayoutError:
    """The error for a key that holds something else than an entity's states."""
    key = key.decode() if isinstance(key, bytes) else key
    return OnlineLayoutError(
        f"{key} holds a value that is not an online state of storage layout 6 (damaged, or written by something "
        "else): rewrite the online store from the history with `featurestore rebuild-online`"
    )

"""Redis key layout of the online store (storage layout 6).

One string per (project, view, entity): `fs:{project}:{view}:{key}`, where `key` is the join
key value (several keys joined with `|`), holding the entity's states, one per source
partition whose events reached it (`featurestore.online.entity_value`; a state:
`featurestore.online.state`, the newest event and its row features, the tiles a read can
still reach, the offset applied). Every read and write touches one key, so a Redis Cluster
needs no hash tags. A backfill run is a partition of its own (a negative id). Layouts up to
5 kept an entity in a hash (its layout in field `_v`): they are refused with the fix.

One more hash per project, `fs:{project}:_project`, says the store holds the project's data
(the SDK refuses to read a Redis without it: most likely the wrong URL) and what it holds:
`layout` (the storage layout version) and, per view and source partition, `newest|<view>|<p>`:
the event time (ms) of the newest event its writer stored (`featurestore status`).
Every writer sets it with each batch it stores. At each checkpoint a processor also sets, per
view and Kafka partition it owns, `applied|<view>|<topic>|<p>`: the offset below which Redis
holds every event it applied (the offset it commits), and `marks` = 1. A mark lower than
the committed offset, or missing, means Redis lost data: the processor re-applies the
history in between (`featurestore.runtime.repair`), counted in `repairs|<view>`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from featurestore.errors import OnlineLayoutError
from featurestore.online.entity_value import not_a_value

#: Version of this layout (in the project's hash; entity values carry it in their head).
LAYOUT_VERSION = "6"
LAYOUT_FIELD = "_v"
"""The field of an entity hash (layouts up to 5) holding its layout."""


PROJECT_LAYOUT_FIELD = "layout"


def project_key(project: str) -> str:
    """The hash that marks and describes a project's online data."""
    return f"fs:{project}:_project"


def newest_field(view: str, partition: int) -> str:
    """Field of `project_key` with the newest event time stored for a view from a partition."""
    return f"newest|{view}|{partition}"


MARKS_FIELD = "marks"


def applied_field(view: str, topic: str, partition: int) -> str:
    """Field of `project_key`: the offset of a Kafka partition below which Redis holds every
    event of it applied to a view."""
    return f"applied|{view}|{topic}|{partition}"


def repairs_field(view: str) -> str:
    """Field of `project_key`: how many times a view's online data was repaired from the history."""
    return f"repairs|{view}"


def parse_newest_field(field: str) -> tuple[str, int] | None:
    """(view, partition) of a `newest_field`, None for another field."""
    kind, _, rest = field.partition("|")
    view, _, partition = rest.rpartition("|")
    if kind != "newest" or not view:
        return None
    try:
        return view, int(partition)
    except ValueError:
        return None


def layout_error(key: str, found: bytes | str | None) -> OnlineLayoutError:
    """The error for an entity hash written in another layout (`found`: its `_v`)."""
    was = found.decode() if isinstance(found, bytes) else found
    return OnlineLayoutError(
        f"online state of {key} is in storage layout {was or '1'}, this version reads and writes layout "
        f"{LAYOUT_VERSION}: stop the processors and run `featurestore rebuild-online`"
    )


def key_string(values: Sequence[Any]) -> str:
    """Join key values as they appear in a Redis key."""
    return "|".join(map(str, values))


def entity_key(project: str, view: str, values: Sequence[Any]) -> str:
    return f"fs:{project}:{view}:{key_string(values)}"


def entity_keys(project: str, view: str, keys: Sequence[Sequence[Any]]) -> list[bytes]:
    """The Redis keys of many entities of one view, encoded."""
    prefix = f"fs:{project}:{view}:"
    try:  # one join key (the common case)
        return [(prefix + str(value)).encode() for (value,) in keys]
    except ValueError:
        return [(prefix + key_string(values)).encode() for values in keys]


def tile_prefix(tiles_key: str, tile_ms: int, lifetime: bool = False) -> str:
    """Prefix of a tile set's fields (`tiles_key`: the column, or `column?where`)."""
    return f"{tiles_key}|{'L' if lifetime else ''}{tile_ms}"


def other_layout_error(key: str, version: Any) -> OnlineLayoutError:
    """The error for an entity key that GET refused (not a string): `version` is the reply to
    `HGET key _v` — a hash of an older layout, or an error (not a hash at all)."""
    if isinstance(version, Exception):
        return not_a_value(key)
    return layout_error(key, version)


def layout_probe(key: bytes) -> tuple[bytes, tuple[bytes, bytes, bytes]]:
    """The command whose reply `other_layout_error` takes."""
    return key, (b"HGET", key, LAYOUT_FIELD.encode())

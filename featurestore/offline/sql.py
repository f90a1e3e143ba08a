"""How names and values reach DuckDB SQL: quoted, never pasted.

Every name in a plan is validated (`featurestore.plan.names`), and still every identifier
goes through `identifier` and every string through `literal`, so no text from a plan or a
request can end a quoted token and add SQL of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from featurestore.offline.history import history_glob


def identifier(name: str) -> str:
    """A double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    """A single-quoted SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def read_history(root: Path, view: str, snapshot: Sequence[dict[str, Any]] | None = None) -> str:
    """The table function reading every history file of a view (hive `date` column, files'
    schemas unioned by column name); with a `snapshot` (`history_snapshot`), only the rows it
    covers: per (topic, partition), offsets up to the one committed then."""
    table = f"read_parquet({literal(history_glob(root, view))}, hive_partitioning = true, union_by_name = true)"
    if snapshot is None:
        return table
    covered = " OR ".join(f"(_topic = {literal(s['topic'])} AND _partition = {int(s['partition'])} "
                          f"AND _offset <= {int(s['last_offset'])})" for s in snapshot) or "FALSE"
    return f"(SELECT * FROM {table} WHERE {covered})"

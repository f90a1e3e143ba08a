"""The feature server's audit log: one JSON line per request, allowed or denied."""

from __future__ import annotations

import datetime as dt
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from featurestore.plan import ViewPlan

#: Entity keys logged per view and request at most (the count is always logged).
MAX_KEYS_LOGGED = 100


@dataclass
class Audit:
    """What the audit line of one request says; filled in as the request is understood."""

    endpoint: str
    started: float
    method: str = ""
    path: str = ""
    client: str | None = None
    token: Any = None
    """The TokenRecord of the request, once authenticated."""
    views: list[str] = field(default_factory=list)
    entities: int = 0
    keys: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def is_pii(view: ViewPlan) -> bool:
    """A view tagged `pii` (any value but false/no/0): its entity key values are never logged."""
    return view.pii


class AuditLog:
    """Appends JSON lines to a file (O_APPEND: whole lines, safe across server workers)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()

    def write(self, entry: dict[str, Any]) -> None:
        line = orjson.dumps({"ts": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"), **entry}) + b"\n"
        with self._lock:
            os.write(self._fd, line)

    def close(self) -> None:
        os.close(self._fd)


def logged_keys(view: ViewPlan, keys: list[tuple[Any, ...]]) -> list[Any] | None:
    """Key values to put in the audit line for one view: None for PII views, else the first MAX_KEYS_LOGGED."""
    if is_pii(view):
        return None
    return [k[0] if len(k) == 1 else list(k) for k in keys[:MAX_KEYS_LOGGED]]

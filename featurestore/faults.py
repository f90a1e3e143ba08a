"""Fault injection for crash tests: kill the process at a named point.

Set `FEATURESTORE_FAULT=<point>:<n>` to SIGKILL the process the n-th time execution
reaches `<point>`. Points: `after_online_write` (Redis updated, offsets not committed),
`after_history_staged` (Parquet files written, not committed), `after_history_commit`
(commit file written, files not yet renamed), `before_offset_commit` (everything durable,
Kafka offsets not committed). Unset (the default), every check is one comparison.
"""

from __future__ import annotations

import os
import signal

from featurestore.errors import ConfigError

POINTS = ("after_online_write", "after_history_staged", "after_history_commit", "before_offset_commit")


def _parse(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    point, _, count = spec.partition(":")
    if point not in POINTS or not count.isdigit():
        raise ConfigError(f"FEATURESTORE_FAULT={spec!r}: expected <point>:<n> with point one of {', '.join(POINTS)}")
    return point, int(count)


_UNREAD = ("", 0)
_target: tuple[str, int] | None = _UNREAD  # read from the environment at the first fault point, not at import
_SEEN: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Die here (SIGKILL, no cleanup) if FEATURESTORE_FAULT names this point and occurrence."""
    global _target
    if _target is _UNREAD:
        _target = _parse(os.environ.get("FEATURESTORE_FAULT", ""))
    if _target is None or _target[0] != name:
        return
    _SEEN[name] = _SEEN.get(name, 0) + 1
    if _SEEN[name] == _target[1]:
        os.kill(os.getpid(), signal.SIGKILL)

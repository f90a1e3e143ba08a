"""Whether a view version's windows are complete: it has seen every event of its longest
window once its history reaches back that far (streamed since it went live, or backfilled)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from featurestore.offline.history import oldest_event_time
from featurestore.plan import Plan, ViewPlan


def _span(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms} ms"


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def readiness(view: ViewPlan, offline_root: Path, now_ms: int) -> tuple[bool, str]:
    """(complete, what to say) for one view version."""
    windows = sorted({a.window_ms for a in view.aggregations if a.window_ms is not None})
    lifetime = any(a.window_ms is None for a in view.aggregations)
    oldest = oldest_event_time(offline_root, view.name)
    if oldest is None:
        return (not windows and not lifetime), "no events yet"
    since = f"history since {_when(oldest)}"
    pending = [w for w in windows if oldest + w > now_ms]
    if pending:
        return False, "warming: " + ", ".join(f"{_span(w)} window complete at {_when(oldest + w)}" for w in pending) + f" ({since})"
    note = "; lifetime values count from then" if lifetime else ""
    return True, f"windows complete ({since}{note})"


def live_versions(plan: Plan, offline_root: Path, now_ms: int) -> list[str]:
    """One line per live view version: serving or not, and whether its windows are complete."""
    lines = []
    for view in sorted(plan.views, key=lambda v: (v.base_name, v.version)):
        serving = plan.serving_version(view.base_name) == view.version
        _, said = readiness(view, offline_root, now_ms)
        lines.append(f"{view.base_name}@{view.version}{' (serving)' if serving else ''}: {said}")
    return lines

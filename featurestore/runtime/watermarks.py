"""Per-partition watermarks for allowed lateness, deterministic across restarts and replays.

An event is late for a view when its event time is more than the view's allowed lateness
behind the newest event time of the events before it in its partition. That newest time
is a function of the partition's record sequence only: when a processor takes over a
partition (start, restart, rebalance) it derives it from the Parquet history, which holds
every decoded event below the offset it resumes from. So a replayed record gets the same
decision as the first time, whoever processes it.
"""

from __future__ import annotations

from pathlib import Path

from featurestore.offline.history import max_event_time_before
from featurestore.plan import Plan, SourcePlan


class Watermarks:
    """Newest event time per partition of one source, recovered lazily from the history."""

    def __init__(self, plan: Plan, source: SourcePlan, offline_root: Path) -> None:
        self.topic = source.topic
        self.views = [v.name for v in plan.views if v.source == source.name]
        self.needed = any(v.allowed_lateness_ms is not None for v in plan.views if v.source == source.name)
        self.offline_root = Path(offline_root)
        self.newest: dict[int, int | None] = {}

    def ensure(self, partition: int, first_offset: int) -> None:
        """Recover a partition's state as of `first_offset`, the first record about to be decoded."""
        if not self.needed or partition in self.newest:
            return
        found = [max_event_time_before(self.offline_root, v, self.topic, partition, first_offset) for v in self.views]
        known = [t for t in found if t is not None]
        self.newest[partition] = max(known) if known else None

    def forget(self, partition: int) -> None:
        """The partition moved away: its next owner (maybe us again) recovers it afresh."""
        self.newest.pop(partition, None)

"""The unit of data passed from the stream runtime to the stores: one view's decoded rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ViewRows:
    """Column-oriented updates of one view from one batch of events.

    `keys[i]` is the entity key tuple (join key values in plan order) of row i, `ts[i]` its
    event time in epoch ms, `partition[i]`/`offset[i]` where the event came from (offset -1
    for events that never went through Kafka), `values[name][i]` the value of history
    column `name`, `late[i]` whether the event came later than the view's allowed lateness
    (kept in the history, flagged, but not applied online; empty: none late).
    """

    view: str
    topic: str
    keys: list[tuple[Any, ...]] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    partition: list[int] = field(default_factory=list)
    offset: list[int] = field(default_factory=list)
    values: dict[str, list[Any]] = field(default_factory=dict)
    late: list[bool] = field(default_factory=list)
    processed_at_ms: int = 0

    def __len__(self) -> int:
        return len(self.ts)

    def select(self, indices: list[int]) -> ViewRows:
        """The rows at `indices`, in that order."""
        return ViewRows(
            view=self.view,
            topic=self.topic,
            keys=[self.keys[i] for i in indices],
            ts=[self.ts[i] for i in indices],
            partition=[self.partition[i] for i in indices],
            offset=[self.offset[i] for i in indices],
            values={c: [v[i] for i in indices] for c, v in self.values.items()},
            late=[self.late[i] for i in indices] if self.late else [],
            processed_at_ms=self.processed_at_ms,
        )

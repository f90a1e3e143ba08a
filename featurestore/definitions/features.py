"""Features of a view: row-level (`Field`, `Transform`) and windowed (`Aggregation`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from featurestore.definitions.tags import normalised

#: Put in `Aggregation(windows=[...])` for an aggregation over all events ever seen.
LIFETIME = "lifetime"


def window_label(window: timedelta | str) -> str:
    """Short suffix for a window: 1h, 30m, 7d, 90s, or `lifetime`."""
    if window == LIFETIME:
        return LIFETIME
    assert isinstance(window, timedelta)
    seconds = int(window.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Field:
    """The latest value (by event time) of an event field, served as feature `name` (default: the column's name)."""

    column: str
    name: str = ""

    def __post_init__(self) -> None:
        normalised(self, name=self.name if self.name else self.column)

    @property
    def output_names(self) -> tuple[str, ...]:
        return (self.name,)


@dataclass(frozen=True)
class Transform:
    """The latest value of `udf(event)`, a pure function referenced by its import path.

    The function must be defined at module level in the feature repository (it is
    imported by the stream processor, never pickled) and annotate its return type.
    """

    name: str
    udf: Callable[[Any], Any]

    @property
    def output_names(self) -> tuple[str, ...]:
        return (self.name,)


@dataclass(frozen=True, init=False)
class Aggregation:
    """`function` of `column` over each event-time window: one feature per window.

    Feature names are `<name>_<window>`, `name` defaulting to `<column>_<function>`:
    `Aggregation("amount", "sum", windows=[timedelta(hours=1)])` gives `amount_sum_1h`;
    `LIFETIME` in `windows` gives `amount_sum_lifetime` (every event ever seen).

    `where` names a bool event field or Transform: only events where it is True count.
    `k` is the number of values `last_n` keeps (newest first).
    """

    column: str
    function: str
    windows: tuple[timedelta | str, ...]
    name: str
    where: str | None
    k: int | None

    # written out (not generated): it accepts one window or several, and stores a tuple
    def __init__(
        self,
        column: str,
        function: str,
        windows: Sequence[timedelta | str] | timedelta | str = (),
        name: str | None = None,
        where: str | None = None,
        k: int | None = None,
    ) -> None:
        wins = (windows,) if isinstance(windows, (timedelta, str)) else tuple(windows)
        normalised(self, column=column, function=function, windows=wins,
                   name=name if name is not None else f"{column}_{function}", where=where, k=k)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(
            f"{self.name}_{window_label(w)}" if isinstance(w, timedelta) or w == LIFETIME else f"{self.name}_?"
            for w in self.windows
        )


Feature = Field | Transform | Aggregation

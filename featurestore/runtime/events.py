"""A batch's valid events, read field by field: validated models, or Arrow columns checked
as the model would check them (with the few records the model validated itself)."""

from __future__ import annotations

import datetime as dt
import functools
import itertools
from abc import ABC, abstractmethod
from operator import attrgetter
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from featurestore.plan.windows import EPOCH, to_epoch_ms
from featurestore.runtime.columnar import ColumnChecked, datetimes
from featurestore.runtime.field_reads import record_type

_MS = dt.timedelta(milliseconds=1)


def epoch_ms(values: list[dt.datetime]) -> np.ndarray:
    """`to_epoch_ms` of each value (one expression per value while all are aware)."""
    try:
        out = [(v - EPOCH) // _MS for v in values]
    except TypeError:  # a naive datetime among them
        out = [to_epoch_ms(v) for v in values]
    return np.asarray(out, dtype=np.int64)


class Events(ABC):
    """Valid events in record order: `taken[i]` is event i's position in the batch."""

    taken: list[int]
    _records: dict[tuple[str, ...], list[Any]]

    def __len__(self) -> int:
        return len(self.taken)

    @abstractmethod
    def column(self, name: str) -> list[Any]:
        """Each event's value of a field, as the event model holds it."""
        raise NotImplementedError

    @abstractmethod
    def times_ms(self, name: str) -> np.ndarray:
        """A datetime field as epoch milliseconds (floor; naive times taken as UTC)."""
        raise NotImplementedError

    def records(self, fields: tuple[str, ...]) -> list[Any]:
        """Each event as a light record of `fields` (attributes holding the model's values;
        made once per batch and fields)."""
        made = self._records.get(fields)
        if made is None:
            make = functools.partial(tuple.__new__, record_type(fields))  # from each zipped tuple, in C
            rows = zip(*(self.column(f) for f in fields)) if fields else itertools.repeat((), len(self))
            made = self._records[fields] = list(map(make, rows))
        return made

    @abstractmethod
    def select(self, keep: list[int]) -> Events:
        """The events at `keep` (ascending)."""
        raise NotImplementedError


class ModelEvents(Events):
    """Events validated one by one by the model."""

    def __init__(self, events: list[BaseModel], taken: list[int]) -> None:
        self.events = events
        self.taken = taken
        self._records = {}

    def column(self, name: str) -> list[Any]:
        return list(map(attrgetter(name), self.events))

    def times_ms(self, name: str) -> np.ndarray:
        return epoch_ms(self.column(name))

    def select(self, keep: list[int]) -> Events:
        return ModelEvents([self.events[i] for i in keep], [self.taken[i] for i in keep])


class ColumnEvents(Events):
    """Events from checked Arrow columns (`rows` of the checked table, at batch positions
    `fast_at`) merged in batch order with events the model validated itself (`slow`)."""

    def __init__(self, checked: ColumnChecked, rows: np.ndarray, fast_at: np.ndarray,
                 slow: list[BaseModel], slow_at: list[int]) -> None:
        self.checked = checked
        self.rows = rows
        self.fast_at = fast_at
        self.slow = slow
        self.slow_at = slow_at
        at = np.concatenate([fast_at, np.asarray(slow_at, np.int64)]) if slow else fast_at
        self.order = np.argsort(at, kind="stable") if slow else None
        self.taken = at[self.order].tolist() if self.order is not None else fast_at.tolist()
        self._columns: dict[str, list[Any]] = {}
        self._records = {}

    def _merged(self, fast: list[Any], slow: list[Any]) -> list[Any]:
        if self.order is None:
            return fast
        both = fast + slow
        return [both[i] for i in self.order.tolist()]

    def _fast(self, name: str) -> list[Any]:
        if name not in self._columns:
            if name in self.checked.micros:
                values: list[Any] = datetimes(self.checked.micros[name][self.rows], self.checked.offsets[name][self.rows])
                column = self.checked.table.column(name)
                if column.null_count:
                    null = column.is_null().to_numpy(zero_copy_only=False)[self.rows]
                    values = [None if gone else v for v, gone in zip(values, null.tolist())]
                self._columns[name] = values
            else:
                self._columns[name] = self.checked.table.column(name).take(pa.array(self.rows)).to_pylist()
        return self._columns[name]

    def column(self, name: str) -> list[Any]:
        return self._merged(self._fast(name), [getattr(e, name) for e in self.slow])

    def times_ms(self, name: str) -> np.ndarray:
        fast: np.ndarray = self.checked.micros[name][self.rows] // 1000
        if self.order is None:
            return fast
        both: np.ndarray = np.concatenate([fast, epoch_ms([getattr(e, name) for e in self.slow])])
        return both[self.order]

    def select(self, keep: list[int]) -> Events:
        n_fast = len(self.rows)
        source = np.asarray(keep, np.int64) if self.order is None else self.order[np.asarray(keep, np.int64)]
        fast = source[source < n_fast]
        slow = (source[source >= n_fast] - n_fast).tolist()
        return ColumnEvents(self.checked, self.rows[fast], self.fast_at[fast],
                            [self.slow[i] for i in slow], [self.slow_at[i] for i in slow])

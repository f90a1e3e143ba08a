"""A transform is called with a light record only when reading fields is all it does with its event."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel

from featurestore.runtime.events import ModelEvents
from featurestore.runtime.field_reads import fields_read, record_type


class Trip(BaseModel):
    fare: float
    city: str
    tip: float | None = None

    @property
    def total(self) -> float:
        return self.fare + (self.tip or 0)

    def doubled(self) -> float:
        return 2 * self.fare


RATES = {"paris": 1.1}


def fare_eur(trip: Trip) -> float:
    return round(trip.fare * RATES.get(trip.city, 1.0), 2)


def tipped(trip: Trip) -> bool:
    if trip.tip is None:
        return False
    return [trip.tip for _ in range(1)][0] > 0


def nested_reads(trip: Trip) -> float:
    def inner() -> float:
        return trip.fare
    return inner() + (lambda: trip.fare)()


def constant(trip: Trip) -> float:
    return 1.0


def passes_it_on(trip: Trip) -> float:
    return fare_eur(trip)


def checks_its_type(trip: Trip) -> bool:
    return isinstance(trip, Trip)


def reads_a_property(trip: Trip) -> float:
    return trip.total


def calls_a_method(trip: Trip) -> float:
    return trip.doubled()


def reads_with_getattr(trip: Trip) -> float:
    return float(getattr(trip, "fare"))


def mutates(trip: Trip) -> float:
    trip.fare = 0
    return 0.0


def rebinds(trip: Trip) -> float:
    trip = Trip(fare=1, city="x")
    return trip.fare


def shadows_in_a_comprehension(trip: Trip) -> list[float]:
    return [trip.fare for trip in [trip]]


def catches_as_it(trip: Trip) -> float:
    try:
        return trip.fare / 0
    except ZeroDivisionError as trip:  # noqa: F841
        return 0.0


def with_default(trip: Trip, factor: float = 2.0) -> float:
    return trip.fare * factor


def _logged(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(fn)
    def wrapper(trip: Any) -> Any:
        print(trip)
        return fn(trip)
    return wrapper


@_logged
def decorated(trip: Trip) -> float:
    return trip.fare


def _make(rate: float) -> Callable[[Trip], float]:
    def scaled(trip: Trip) -> float:
        return trip.fare * rate
    return scaled


class Scaler:
    def __call__(self, trip: Trip) -> float:
        return trip.fare


@pytest.mark.parametrize("fn, fields", [
    (fare_eur, ("fare", "city")),
    (tipped, ("tip",)),
    (nested_reads, ("fare",)),
    (constant, ()),
])
def test_a_transform_that_only_reads_fields_names_them(fn: Callable[[Any], Any], fields: tuple[str, ...]) -> None:
    assert fields_read(fn, Trip) == fields
    for model in (Trip(fare=10.0, city="paris"), Trip(fare=3.5, city="rome", tip=1.0)):
        record = record_type(fields)(*(getattr(model, f) for f in fields))
        assert fn(record) == fn(model)


@pytest.mark.parametrize("fn", [
    passes_it_on, checks_its_type, reads_a_property, calls_a_method, reads_with_getattr, mutates, rebinds,
    shadows_in_a_comprehension, catches_as_it, with_default, decorated, _make(2.0), Scaler(), lambda trip: trip.fare, len,
])
def test_a_transform_that_may_use_its_event_otherwise_gets_the_model(fn: Callable[[Any], Any]) -> None:
    assert fields_read(fn, Trip) is None


@pytest.mark.parametrize("fields", [(), ("city",), ("city", "fare")])
def test_events_as_records_hold_the_fields_of_every_event(fields: tuple[str, ...]) -> None:
    trips: list[BaseModel] = [Trip(fare=float(i), city=f"c{i}") for i in range(3)]
    records = ModelEvents(trips, [0, 1, 2]).records(fields)
    assert len(records) == 3
    assert [[getattr(r, f) for f in fields] for r in records] == [[getattr(t, f) for f in fields] for t in trips]

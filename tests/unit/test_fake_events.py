"""`produce --fake`: events generated from any event model are valid for it, spread over the
period asked for, and draw their join keys from the number of entities asked for."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Literal

import orjson
import pydantic
import pytest
from pydantic import AwareDatetime, BaseModel, PositiveInt

from featurestore.errors import FeatureRequestError
from featurestore.produce import FakeEvents


class Mode(enum.Enum):
    CAR = "car"
    BIKE = "bike"


class Point(BaseModel):
    lat: float = pydantic.Field(ge=-90, le=90)
    lon: float = pydantic.Field(ge=-180, le=180)


class Trip(BaseModel):
    trip_id: str
    driver_id: int
    rider_id: str = pydantic.Field(min_length=4, max_length=12)
    city: str
    currency: str = pydantic.Field(min_length=3, max_length=3)
    mode: Mode
    status: Literal["done", "cancelled"]
    fare: float = pydantic.Field(gt=0, le=500)
    seats: PositiveInt
    tip: float | None = None
    surge: bool
    pickup: Point
    stops: list[str] = []
    at: AwareDatetime


@pytest.mark.parametrize("seed", range(5))
def test_fake_events_are_valid_for_their_model(seed: int) -> None:
    end = dt.datetime(2026, 12, 1, 12, tzinfo=dt.timezone.utc)
    events = FakeEvents(Trip, "at", ["driver_id"], entities=7, seed=seed).events(300, end, dt.timedelta(hours=3))
    assert len(events) == 300
    for e in events:
        Trip.model_validate_json(orjson.dumps(e))
    stamps = [dt.datetime.fromisoformat(e["at"]) for e in events]
    assert stamps == sorted(stamps) and end - dt.timedelta(hours=3) < stamps[0] and stamps[-1] <= end
    assert {e["driver_id"] for e in events} <= set(range(1, 8)) and len({e["driver_id"] for e in events}) > 1


def test_the_same_seed_gives_the_same_events() -> None:
    end = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)

    def make(seed: int) -> list[dict]:
        return FakeEvents(Trip, "at", ["driver_id"], seed=seed).events(20, end, dt.timedelta(minutes=5))

    assert make(3) == make(3) and make(3) != make(4)


def test_a_model_whose_validators_refuse_generated_values_gets_a_clear_error() -> None:
    class Picky(BaseModel):
        code: str
        at: AwareDatetime

        @pydantic.field_validator("code")
        @classmethod
        def _iban(cls, v: str) -> str:
            if not v.startswith("DE"):
                raise ValueError("not a German IBAN")
            return v

    with pytest.raises(FeatureRequestError, match="could not generate a valid Picky event.*featurestore produce FILE"):
        FakeEvents(Picky, "at", []).event(dt.datetime.now(dt.timezone.utc))

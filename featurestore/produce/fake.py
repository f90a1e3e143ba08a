"""Plausible fake events for any source: values drawn from the event model's JSON schema.

Each field is generated from its type and constraints (bounds, lengths, enums, optional,
nested models, lists); join keys come from a pool of `entities` values so features
accumulate per entity; the event-time field spreads over a period (or is "now" for a live
stream). Every event is checked with the model before it is used, exactly as the processor
checks it, so a model with custom validators either gets valid events or a clear error.
"""

from __future__ import annotations

import datetime as dt
import math
import random
import string
from collections.abc import Iterable
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from featurestore.errors import FeatureRequestError

_TRIES = 20
_CATEGORIES = 8  # distinct values of a free string field that is not an id
_NAMED_RANGES = {"lat": (-90.0, 90.0), "latitude": (-90.0, 90.0), "lon": (-180.0, 180.0), "lng": (-180.0, 180.0),
                 "longitude": (-180.0, 180.0)}


class FakeEvents:
    """Generates events of one model: `key_fields` draw from `entities` values each."""

    def __init__(self, model: type[BaseModel], timestamp_field: str, key_fields: Iterable[str],
                 entities: int = 100, seed: int = 1) -> None:
        self.model = model
        self.timestamp_field = timestamp_field
        self.key_fields = set(key_fields)
        self.entities = max(1, entities)
        self.rnd = random.Random(seed)
        schema = model.model_json_schema()
        self._defs: dict[str, Any] = schema.get("$defs", {})
        self._root = schema
        self._pools: dict[str, list[Any]] = {}

    def events(self, n: int, end: dt.datetime, over: dt.timedelta) -> list[dict[str, Any]]:
        """`n` events with event times spread over (end - over, end], oldest first."""
        span_ms = max(1, int(over / dt.timedelta(milliseconds=1)))
        end_ms = int(end.timestamp() * 1000)
        stamps = sorted(end_ms - self.rnd.randrange(span_ms) for _ in range(n))
        return [self.event(dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)) for ms in stamps]

    def event(self, at: dt.datetime) -> dict[str, Any]:
        """One valid event with event time `at` (raises FeatureRequestError if none can be made)."""
        problem = ""
        for _ in range(_TRIES):
            value = self._object(self._root, at, top=True)
            value[self.timestamp_field] = _iso(at)
            try:
                self.model.model_validate_json(orjson.dumps(value))
            except ValidationError as exc:
                problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
                continue
            return value
        raise FeatureRequestError(
            f"could not generate a valid {self.model.__name__} event ({problem}): the model checks more than its "
            "field types say. Fix: write events to a JSON lines or CSV file and run `featurestore produce FILE`")

    # -- one value per JSON schema node ----------------------------------------------------
    def _object(self, node: dict[str, Any], at: dt.datetime, top: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, prop in node.get("properties", {}).items():
            out[name] = self._value(name, prop, at, key=top and name in self.key_fields)
        return out

    def _value(self, name: str, node: dict[str, Any], at: dt.datetime, key: bool = False) -> Any:
        node = self._resolve(node)
        if "const" in node:
            return node["const"]
        if "enum" in node:
            return self.rnd.choice(node["enum"])
        options = node.get("anyOf") or node.get("oneOf")
        if options:
            typed = [self._resolve(o) for o in options if self._resolve(o).get("type") != "null"]
            return self._value(name, self.rnd.choice(typed), at, key) if typed else None
        kind = node.get("type")
        if key:
            return self._pooled(name, node, self.entities)
        if kind == "integer":
            if name.endswith("_id"):
                return self._pooled(name, node, 10 * self.entities)
            low, high = _bounds(node, 0, 100)
            return self.rnd.randint(math.ceil(low), math.floor(high))
        if kind == "number":
            return self._number(name, node)
        if kind == "boolean":
            return self.rnd.random() < 0.3
        if kind == "string":
            return self._string(name, node, at)
        if kind == "array":
            item = node.get("items", {})
            size = max(node.get("minItems", 0), min(node.get("maxItems", 3), self.rnd.randint(0, 3)))
            return [self._value(name, item, at) for _ in range(size)]
        if kind == "object":
            return self._object(node, at)
        return None

    def _resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if ref and ref.startswith("#/$defs/"):
            found: dict[str, Any] = self._defs.get(ref.removeprefix("#/$defs/"), {})
            return found
        return node

    def _number(self, name: str, node: dict[str, Any]) -> float:
        default = _NAMED_RANGES.get(name.lower())
        if default is not None or any(k in node for k in ("maximum", "exclusiveMaximum")):
            low, high = _bounds(node, *(default or (0.0, 100.0)))
            value = self.rnd.uniform(low, high)
        else:  # amounts, durations, distances: positive and skewed
            low = _bounds(node, 0.0, 0.0)[0]
            value = low + self.rnd.lognormvariate(3.0, 1.0)
        step = node.get("multipleOf")
        if step:
            value = math.ceil(value / step) * step
            return value if _inside(node, value) else float(math.ceil(_bounds(node, 0.0, 0.0)[0] / step + 1) * step)
        return round(value, 2) if _inside(node, round(value, 2)) else value

    def _string(self, name: str, node: dict[str, Any], at: dt.datetime) -> str:
        fmt = node.get("format")
        if fmt == "date-time":
            return _iso(at - dt.timedelta(seconds=self.rnd.randrange(3600)))
        if fmt == "date":
            return at.date().isoformat()
        if fmt == "uuid":
            return "%08x-%04x-4%03x-8%03x-%012x" % tuple(self.rnd.getrandbits(b) for b in (32, 16, 12, 12, 48))
        if name.endswith("_id"):
            return str(self._pooled(name, node, 10 * self.entities))
        low, high = node.get("minLength", 0), node.get("maxLength")
        if high is not None and high <= 4:  # a code: currency, country, status letter
            return self.rnd.choice(self._codes(name, max(low, 1), high))
        return _fit(f"{_stem(name)}-{self.rnd.randint(1, _CATEGORIES)}", low, high)

    def _pooled(self, name: str, node: dict[str, Any], size: int) -> Any:
        """A value out of `size` stable values of the field: entities and other ids repeat."""
        k = self.rnd.randint(1, size)
        if node.get("type") == "integer":
            low, high = _bounds(node, 1, 1 + size)
            return min(math.ceil(low) + k - 1, math.floor(high))
        return _fit(f"{_stem(name)}-{k}", node.get("minLength", 0), node.get("maxLength"))

    def _codes(self, name: str, low: int, high: int) -> list[str]:
        pool = self._pools.get(name)
        if pool is None:
            pool = ["".join(self.rnd.choice(string.ascii_uppercase) for _ in range(self.rnd.randint(low, high)))
                    for _ in range(6)]
            self._pools[name] = pool
        return pool


def _stem(name: str) -> str:
    return name.removesuffix("_id") or name


def _fit(text: str, low: int, high: int | None) -> str:
    text = text.ljust(low, "0")
    return text[-high:] if high is not None and len(text) > high else text


def _bounds(node: dict[str, Any], low: float, high: float) -> tuple[float, float]:
    """The inclusive range a value may take (exclusive bounds moved inward)."""
    lo = node.get("minimum", node.get("exclusiveMinimum", low))
    if "exclusiveMinimum" in node and "minimum" not in node:
        lo = lo + (1 if node.get("type") == "integer" else 0.01)
    hi = node.get("maximum", node.get("exclusiveMaximum", max(high, lo + (high - low))))
    if "exclusiveMaximum" in node and "maximum" not in node:
        hi = hi - (1 if node.get("type") == "integer" else 0.01)
    return lo, max(hi, lo)


def _inside(node: dict[str, Any], value: float) -> bool:
    lo, hi = _bounds(node, -math.inf, math.inf)
    return lo <= value <= hi


def _iso(at: dt.datetime) -> str:
    return at.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds")

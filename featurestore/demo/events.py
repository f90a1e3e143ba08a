"""Generate realistic card payment events (with late and malformed ones); `produce_records`
sends them."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any

import orjson

from featurestore.produce.sender import produce_records

COUNTRIES = {"FR": "EUR", "DE": "EUR", "NL": "EUR", "GB": "GBP", "US": "USD", "CH": "CHF"}


@dataclass(frozen=True)
class DemoEvent:
    """One record to produce: key and value bytes, and the parsed event when it is valid."""

    key: bytes
    value: bytes
    event: dict[str, Any] | None


def payment_events(
    n: int,
    end: dt.datetime,
    span: dt.timedelta = dt.timedelta(hours=3),
    users: int = 200,
    merchants: int = 40,
    late_fraction: float = 0.03,
    malformed_fraction: float = 0.01,
    seed: int = 7,
) -> list[DemoEvent]:
    """`n` payments spread over (end - span, end], in production order.

    A `late_fraction` arrive up to 20 minutes after their event time (out of order); a
    `malformed_fraction` are broken (bad JSON, missing or wrong-typed fields, negative amounts).
    """
    rnd = random.Random(seed)
    homes = {u: rnd.choice(list(COUNTRIES)) for u in range(1, users + 1)}
    span_ms = int(span / dt.timedelta(milliseconds=1))
    end_ms = int(end.timestamp() * 1000)
    out: list[tuple[int, DemoEvent]] = []
    for i in range(n):
        user = rnd.randint(1, users)
        country = homes[user] if rnd.random() < 0.9 else rnd.choice(list(COUNTRIES))
        ts_ms = end_ms - span_ms + 1 + (span_ms - 1) * i // max(n - 1, 1)
        arrival = ts_ms
        if rnd.random() < late_fraction:
            arrival = min(end_ms, ts_ms + rnd.randint(1_000, 20 * 60_000))
        event = {
            "payment_id": f"pay-{seed}-{i:07d}",
            "user_id": user,
            "merchant_id": f"m{rnd.randint(1, merchants):03d}",
            "amount": round(min(rnd.lognormvariate(3.5, 1.0), 9_999.0), 2) + 0.01,
            "currency": COUNTRIES[country],
            "country": country,
            "ts": dt.datetime.fromtimestamp(ts_ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds"),
        }
        key = str(user).encode()
        if rnd.random() < malformed_fraction:
            out.append((arrival, DemoEvent(key, _break(event, rnd), None)))
        else:
            out.append((arrival, DemoEvent(key, json_bytes(event), event)))
    out.sort(key=lambda pair: pair[0])
    return [e for _, e in out]


def json_bytes(value: Any) -> bytes:
    """`value` as JSON, in a bytes object of its own size: orjson >= 3.12 returns each
    result in a buffer of at least 4 KiB, so a million small events kept in memory would
    hold 4 GB."""
    return orjson.dumps(value).decode().encode()


def _break(event: dict[str, Any], rnd: random.Random) -> bytes:
    kind = rnd.randrange(4)
    if kind == 0:
        return json_bytes(event)[:-7]  # truncated JSON
    bad = dict(event)
    if kind == 1:
        del bad["user_id"]
    elif kind == 2:
        bad["amount"] = "lots"
    else:
        bad["amount"] = -abs(bad["amount"])
    return json_bytes(bad)


__all__ = ["DemoEvent", "json_bytes", "payment_events", "produce_records"]

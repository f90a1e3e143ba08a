"""Read the processors' Prometheus metrics into what `featurestore status` prints."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import urllib3
from prometheus_client.parser import text_string_to_metric_families

from featurestore.errors import StoreUnavailable


@dataclass(frozen=True)
class ViewStatus:
    view: str
    events: float
    newest_age: str
    p50: str
    p99: str


@dataclass
class Status:
    views: list[ViewStatus] = field(default_factory=list)
    lag: dict[tuple[str, str], float] = field(default_factory=dict)
    dead_letters: dict[str, float] = field(default_factory=dict)


def _age(seconds: float) -> str:
    if math.isinf(seconds):
        return "> 1 h"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _bound(seconds: float | None) -> str:
    """A quantile read from histogram buckets: at most a bucket's bound, or over the last one."""
    if seconds is None:
        return "-"
    return _age(seconds) if math.isinf(seconds) else "≤ " + _age(seconds)


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Upper bound of the histogram bucket holding quantile q (cumulative (le, count) pairs, sorted)."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    for le, count in buckets:
        if count >= q * total:
            return le
    return math.inf


def fetch_status(urls: list[str]) -> Status:
    """Scrape every URL and merge (sum) what they report."""
    http = urllib3.PoolManager(timeout=urllib3.Timeout(total=5), retries=False)
    events: dict[str, float] = {}
    newest: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    out = Status()
    for url in urls:
        try:
            resp = http.request("GET", url)
        except urllib3.exceptions.HTTPError as exc:
            raise StoreUnavailable(f"processor metrics at {url} unreachable: {exc}") from None
        if resp.status != 200:
            raise StoreUnavailable(f"processor metrics at {url}: HTTP {resp.status}")
        for family in text_string_to_metric_families(resp.data.decode()):
            for s in family.samples:
                lab = s.labels
                if s.name == "featurestore_events_total":
                    events[lab["view"]] = events.get(lab["view"], 0.0) + s.value
                elif s.name == "featurestore_newest_event_time_seconds":
                    newest[lab["view"]] = max(newest.get(lab["view"], 0.0), s.value)
                elif s.name == "featurestore_freshness_seconds_bucket":
                    per = buckets.setdefault(lab["view"], {})
                    le = float(lab["le"])
                    per[le] = per.get(le, 0.0) + s.value
                elif s.name == "featurestore_consumer_lag":
                    key = (lab["topic"], lab["partition"])
                    out.lag[key] = out.lag.get(key, 0.0) + s.value
                elif s.name == "featurestore_dead_letters_total":
                    out.dead_letters[lab["reason"]] = out.dead_letters.get(lab["reason"], 0.0) + s.value
    now = time.time()
    for view in sorted(set(events) | set(buckets)):
        pairs = sorted(buckets.get(view, {}).items())
        p50, p99 = quantile(pairs, 0.5), quantile(pairs, 0.99)
        out.views.append(ViewStatus(
            view,
            events.get(view, 0.0),
            _age(now - newest[view]) + " ago" if view in newest else "-",
            _bound(p50),
            _bound(p99),
        ))
    return out

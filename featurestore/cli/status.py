"""What `featurestore status` prints: lag from the broker, the newest event per view from
Redis, and, when the processors serve metrics, events, freshness and dead letters from them."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import urllib3
from prometheus_client.parser import text_string_to_metric_families

from featurestore.errors import StoreUnavailable
from featurestore.runtime.kafka import PartitionLag


@dataclass(frozen=True)
class ViewStatus:
    view: str
    events: float
    newest_age: str
    p50: str
    p99: str
    p99_s: float | None = None
    """The p99 as a number (the upper bound of its histogram bucket), None without events."""


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
            p99,
        ))
    return out


@dataclass(frozen=True)
class Overview:
    """Everything `status` reports, from whichever places answered."""

    newest_ms: dict[str, int]
    """Per view, the newest event time stored online (Redis)."""
    lag: list[PartitionLag]
    metrics: Status | None
    metrics_note: str = ""
    repairs: dict[str, int] = field(default_factory=dict)
    """Per view, times a processor repaired its online data from the history (Redis lost writes)."""
    objectives_s: dict[str, float] = field(default_factory=dict)
    """Per view, its freshness objective (seconds)."""

    def objective(self, view: str, m: ViewStatus | None) -> str:
        """The view's freshness objective and whether the p99 holds it (as far as the metrics tell)."""
        slo = self.objectives_s.get(view)
        if slo is None:
            return "-"
        if m is None or m.p99_s is None:
            return f"{_age(slo)} (no metrics)"
        return f"{_age(slo)}: " + ("holds" if m.p99_s <= slo else "missed")

    def rows(self, views: list[str], now_s: float) -> list[dict[str, Any]]:
        """One row per view: newest event, and the metrics' events and freshness when known."""
        by_view = {v.view: v for v in self.metrics.views} if self.metrics else {}
        out = []
        for view in views:
            newest = self.newest_ms.get(view)
            m = by_view.get(view)
            out.append({
                "view": view,
                "newest_event_ms": newest,
                "newest_event": _age(max(0.0, now_s - newest / 1000)) + " ago" if newest else "none yet",
                "events": m.events if m else None,
                "freshness_p50": m.p50 if m else "-",
                "freshness_p99": m.p99 if m else "-",
                "repairs": self.repairs.get(view, 0),
                "freshness_objective": self.objective(view, m),
            })
        return out

    def to_json(self, views: list[str], now_s: float) -> dict[str, object]:
        return {
            "views": self.rows(views, now_s),
            "lag": [{"topic": p.topic, "partition": p.partition, "committed": p.committed, "end": p.high, "lag": p.lag}
                    for p in self.lag],
            "dead_letters": self.metrics.dead_letters if self.metrics else None,
            "metrics": self.metrics_note or "read",
        }

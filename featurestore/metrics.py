"""Prometheus metrics of the stream processor and the feature server (one definition each)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

#: Event time -> visible online, and request latency: 1 ms .. 1 h.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_LATENCY = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)

# -- processor -------------------------------------------------------------------------
EVENTS = Counter("featurestore_events", "Events applied online and to the history, per view.", ["view"])
RECORDS = Counter("featurestore_records", "Kafka records consumed, per topic.", ["topic"])
DEAD_LETTERS = Counter("featurestore_dead_letters", "Records dead-lettered, per topic and reason.", ["topic", "reason"])
CONSUMER_LAG = Gauge("featurestore_consumer_lag", "Records behind the partition's high watermark.", ["topic", "partition"])
FRESHNESS = Histogram(
    "featurestore_freshness_seconds", "Event time -> value visible in Redis, per view.", ["view"], buckets=_SECONDS
)
NEWEST_EVENT = Gauge("featurestore_newest_event_time_seconds", "Newest event time applied online, per view.", ["view"])
BATCH_SIZE = Histogram(
    "featurestore_batch_records", "Records per processed batch.", buckets=(1, 10, 100, 1000, 5000, 10_000, 20_000, 50_000, 100_000)
)
RETRIES = Counter("featurestore_retries", "Failed writes retried (Redis, history, dead letters, commits).", ["what"])
CHECKPOINTS = Counter("featurestore_checkpoints", "History flushes + offset commits.")

# -- feature server ------------------------------------------------------------------------
REQUESTS = Counter("featurestore_server_requests", "Requests answered, per endpoint and HTTP status.", ["endpoint", "status"])
REQUEST_SECONDS = Histogram(
    "featurestore_server_request_seconds", "Request latency in the server, per endpoint.", ["endpoint"], buckets=_LATENCY
)
VALUES = Counter("featurestore_server_values", "Online values served, per view and status.", ["view", "status"])
STALENESS = Histogram(
    "featurestore_server_staleness_seconds", "Age of the newest event behind each served entity, per view.", ["view"],
    buckets=_SECONDS,
)


@dataclass(frozen=True)
class BatchObservation:
    """What one processed batch tells the metrics."""

    view: str
    event_ts_ms: list[int]
    """Event times of the events applied online (late ones excluded)."""


def observe_online_batch(observations: Iterable[BatchObservation], visible_at_s: float) -> None:
    """Freshness of every event made visible by one online write, and the newest event time per view."""
    for obs in observations:
        hist = FRESHNESS.labels(obs.view)
        newest = 0
        for ts in obs.event_ts_ms:
            hist.observe(max(0.0, visible_at_s - ts / 1000))
            newest = ts if ts > newest else newest
        EVENTS.labels(obs.view).inc(len(obs.event_ts_ms))
        if newest / 1000 > _newest.get(obs.view, 0.0):  # monotone: replays never move it back
            _newest[obs.view] = newest / 1000
            NEWEST_EVENT.labels(obs.view).set(newest / 1000)


_newest: dict[str, float] = {}

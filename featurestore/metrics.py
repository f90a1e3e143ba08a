"""Prometheus metrics of the stream processor and the feature server (one definition each)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString


class BulkHistogram:
    """A labelled Prometheus histogram observed a batch of values at a time: numpy counts
    the buckets, so a batch costs one call instead of one Python call per value (the
    per-event freshness of 50,000 events, the staleness of 100 entities per request).
    Exposed as a custom collector, exactly as a `Histogram` of the same name would be."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float],
                 registry: CollectorRegistry | None = REGISTRY) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self._bounds = np.array(buckets, dtype=np.float64)
        self._les = [floatToGoString(b) for b in buckets] + ["+Inf"]
        self._state: dict[tuple[str, ...], tuple[np.ndarray, list[float]]] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def observe_many(self, labels: Sequence[str], values: Sequence[float] | np.ndarray) -> None:
        """Observe every value (seconds) under these label values."""
        v = np.asarray(values, dtype=np.float64)
        counts = np.bincount(np.searchsorted(self._bounds, v, side="left"), minlength=len(self._bounds) + 1)
        total = float(v.sum())
        with self._lock:  # the series exists (zeros) from its first batch, even an empty one
            state = self._state.get(tuple(labels))
            if state is None:
                state = self._state[tuple(labels)] = (np.zeros(len(self._bounds) + 1, dtype=np.int64), [0.0])
            state[0][:] += counts
            state[1][0] += total

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            snapshot = [(labels, np.cumsum(counts).tolist(), total[0]) for labels, (counts, total) in self._state.items()]
        for labels, cumulative, total in snapshot:
            family.add_metric(list(labels), list(zip(self._les, cumulative)), sum_value=total)
        yield family


#: Event time -> visible online, and request latency: 1 ms .. 1 h.
_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_LATENCY = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)

# -- processor -------------------------------------------------------------------------
EVENTS = Counter("featurestore_events", "Events applied online and to the history, per view.", ["view"])
RECORDS = Counter("featurestore_records", "Kafka records consumed, per topic.", ["topic"])
DEAD_LETTERS = Counter("featurestore_dead_letters", "Records dead-lettered, per topic and reason.", ["topic", "reason"])
DEAD_LETTERS_LOCAL = Counter(
    "featurestore_dead_letters_local",
    "Dead letters the dead-letter topic did not take, kept in the offline store's dead-letter area.", ["topic", "reason"],
)
CONSUMER_LAG = Gauge("featurestore_consumer_lag", "Records behind the partition's high watermark.", ["topic", "partition"])
FRESHNESS = BulkHistogram(
    "featurestore_freshness_seconds", "Event time -> value visible in Redis, per view.", ["view"], buckets=_SECONDS
)
FRESHNESS_SLO = Gauge("featurestore_freshness_slo_seconds", "A view's freshness objective (FeatureView freshness_slo).",
                      ["view"])
FRESHNESS_SLO_MISSED = Counter(
    "featurestore_freshness_slo_missed_events", "Events made visible online later than their view's freshness objective.",
    ["view"])
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
REQUEST_FEATURE_ERRORS = Counter(
    "featurestore_request_feature_errors", "Request-time feature values that failed (raised, wrong type, over the time "
    "budget), per view and feature (SDK and server).", ["view", "feature"])
ONLINE_REPAIRS = Counter(
    "featurestore_online_repairs", "Times a processor found Redis had lost applied events of a view and re-applied "
    "them from the history.", ["view"])
REPAIRED_ENTITIES = Counter(
    "featurestore_online_repaired_entities", "Entity states folded again from the history by repairs, per view.", ["view"])
SERVED_LOGGED = Counter("featurestore_served_log_records", "Requests logged to the served-value topic, per service.",
                        ["service"])
SERVED_LOG_DROPPED = Counter(
    "featurestore_served_log_dropped", "Served-value records dropped (queue full, error), per service; reads go on.",
    ["service", "reason"])
ROLLBACKS = Counter(
    "featurestore_rollout_rollbacks", "Rollouts moved back to their control by a crossed guard, per service and guard "
    "metric (feature server).", ["service", "metric"])
STALENESS = BulkHistogram(
    "featurestore_server_staleness_seconds", "Age of the newest event behind each served entity, per view.", ["view"],
    buckets=_SECONDS,
)


@dataclass(frozen=True)
class BatchObservation:
    """What one processed batch tells the metrics."""

    view: str
    event_ts_ms: list[int]
    """Event times of the events applied online (late ones excluded)."""


def set_freshness_objectives(objectives: dict[str, float]) -> None:
    """Per view, its freshness objective in seconds (events later than it are counted)."""
    _objectives.update(objectives)
    for view, seconds in objectives.items():
        FRESHNESS_SLO.labels(view).set(seconds)
        FRESHNESS_SLO_MISSED.labels(view)


def observe_online_batch(observations: Iterable[BatchObservation], visible_at_s: float) -> None:
    """Freshness of every event made visible by one online write, and the newest event time per view."""
    for obs in observations:
        ts = np.asarray(obs.event_ts_ms, dtype=np.int64)
        ages = np.maximum(0.0, visible_at_s - ts / 1000)
        FRESHNESS.observe_many((obs.view,), ages)
        slo = _objectives.get(obs.view)
        if slo is not None:
            missed = int((ages > slo).sum())
            if missed:
                FRESHNESS_SLO_MISSED.labels(obs.view).inc(missed)
        EVENTS.labels(obs.view).inc(len(ts))
        newest = int(ts.max()) if len(ts) else 0
        if newest / 1000 > _newest.get(obs.view, 0.0):  # monotone: replays never move it back
            _newest[obs.view] = newest / 1000
            NEWEST_EVENT.labels(obs.view).set(newest / 1000)


_newest: dict[str, float] = {}
_objectives: dict[str, float] = {}

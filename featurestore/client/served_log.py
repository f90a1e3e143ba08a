"""The served-value log: what the SDK and the feature server answered for services with a
`log_sample_rate`, sent to a Kafka topic (`served_log_topic`) for `featurestore served-log
land` to write as Parquet beside the history.

One record per logged request (JSON): `request_id`, `service`, `served_at_ms`, the entity
rows' join key values (`keys`, left out for views tagged pii unless `served_log_pii_keys`),
per feature its `values` and `statuses`, and the `variants` of a rollout. Logging never
slows or fails a read: records wait in the producer's bounded queue, and when it is full
(the broker is slow or gone) they are dropped and counted
(`featurestore_served_log_dropped_total{service,reason}`).
"""

from __future__ import annotations

import logging
import random
import threading
import uuid
from typing import Any

import orjson

from featurestore import metrics
from featurestore.client.responses import OnlineResponse
from featurestore.config import Settings
from featurestore.plan import Plan, ServicePlan

log = logging.getLogger(__name__)

QUEUE_RECORDS = 10_000
"""Records the producer holds at most before new ones are dropped."""


class ServedLog:
    """Sends sampled served values of logged services to the served-value topic."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.server.served_log_topic
        self._producer: Any = None
        self._lock = threading.Lock()
        self._random = random.Random()

    def _started(self) -> Any:
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    from confluent_kafka import Producer

                    from featurestore.runtime.kafka import producer_config

                    conf = {**producer_config(self.settings), "acks": 1, "linger.ms": 50,
                            "queue.buffering.max.messages": QUEUE_RECORDS, "queue.buffering.max.kbytes": 16_384,
                            "message.timeout.ms": 60_000, "logger": log}
                    self._producer = Producer(conf)
        return self._producer

    def log(self, plan: Plan, service: ServicePlan, response: OnlineResponse, request_id: str | None = None) -> None:
        """Send one sampled record of `response` (never raises)."""
        if service.log_sample_rate <= 0 or self._random.random() >= service.log_sample_rate:
            return
        try:
            record = served_record(plan, service, response, request_id or uuid.uuid4().hex, self.settings.server.served_log_pii_keys)
            producer = self._started()
            producer.produce(self.topic, value=record)
            producer.poll(0)
            metrics.SERVED_LOGGED.labels(service.name).inc()
        except BufferError:
            metrics.SERVED_LOG_DROPPED.labels(service.name, "queue_full").inc()
        except Exception as exc:  # a read never fails because of its log
            metrics.SERVED_LOG_DROPPED.labels(service.name, "error").inc()
            log.warning("served-value log of %s: %s", service.name, exc)

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (waiting at most `timeout_s`)."""
        if self._producer is not None:
            self._producer.flush(timeout_s)
            self._producer = None


def served_record(plan: Plan, service: ServicePlan, response: OnlineResponse, request_id: str, pii_keys: bool) -> bytes:
    """The log record of one answer (JSON bytes)."""
    hide = not pii_keys and any(v.pii for ref in service.all_refs
                                for v in [plan.view_refs.get(ref.partition(":")[0])] if v is not None)
    features = set(response.feature_names)
    keys = {} if hide else {k: response.column(k) for k in response.column_names if k not in features}
    return orjson.dumps({
        "request_id": request_id,
        "service": service.name,
        "served_at_ms": response.read_at_ms,
        "rows": len(response.column(response.feature_names[0])) if response.feature_names else 0,
        "keys": keys,
        "keys_hidden": hide,
        "features": {name: {"values": response.column(name), "statuses": response.status(name)}
                     for name in response.feature_names},
        "variants": response.variants,
    }, option=orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY)

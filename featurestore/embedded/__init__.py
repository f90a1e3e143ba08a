"""Embedded services for development, demos and tests: a Kafka-protocol broker and a Redis."""

from featurestore.embedded.services import DevEnvironment, Service, start_broker, start_redis

__all__ = ["DevEnvironment", "Service", "start_broker", "start_redis"]

"""librdkafka's mock Kafka cluster (inside the confluent-kafka wheel), reached with ctypes.

It speaks the Kafka protocol over TCP like any broker, and can be told to answer with
errors a dev broker never gives (here: a topic its clients are not authorised to write).
It lives in the process that creates it."""

from __future__ import annotations

import ctypes
from pathlib import Path

import confluent_kafka

UNKNOWN_TOPIC_OR_PART = 3
"""What a broker answers about a topic that was deleted."""
TOPIC_AUTHORIZATION_FAILED = 29


def _library() -> ctypes.CDLL:
    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    candidates = sorted(libs.glob("librdkafka*.so*"))
    if not candidates:
        raise RuntimeError(f"no librdkafka shared library in {libs}")
    lib = ctypes.CDLL(str(candidates[0]))
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_mock_cluster_new.restype = ctypes.c_void_p
    lib.rd_kafka_mock_cluster_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
    lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mock_topic_create.restype = ctypes.c_int
    lib.rd_kafka_mock_topic_create.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
    lib.rd_kafka_mock_topic_set_error.restype = None
    lib.rd_kafka_mock_topic_set_error.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.rd_kafka_mock_cluster_destroy.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]
    return lib


class MockCluster:
    """A one-broker mock Kafka cluster in this process."""

    def __init__(self) -> None:
        self._lib = _library()
        errstr = ctypes.create_string_buffer(512)
        self._rk = self._lib.rd_kafka_new(0, self._lib.rd_kafka_conf_new(), errstr, 512)  # a producer handle owns it
        if not self._rk:
            raise RuntimeError(errstr.value.decode())
        self._cluster = self._lib.rd_kafka_mock_cluster_new(self._rk, 1)
        if not self._cluster:
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        self.bootstrap_servers = self._lib.rd_kafka_mock_cluster_bootstraps(self._cluster).decode()

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        err = self._lib.rd_kafka_mock_topic_create(self._cluster, topic.encode(), partitions, 1)
        if err:
            raise RuntimeError(f"rd_kafka_mock_topic_create({topic}): error {err}")

    def fail_topic(self, topic: str, error: int) -> None:
        """Answer every metadata request about `topic` with `error` (a Kafka error code)."""
        self._lib.rd_kafka_mock_topic_set_error(self._cluster, topic.encode(), error)

    def close(self) -> None:
        self._lib.rd_kafka_mock_cluster_destroy(self._cluster)
        self._lib.rd_kafka_destroy(self._rk)

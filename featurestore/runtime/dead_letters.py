"""Dead letters: the headers that say why a record was rejected, and where a dead letter goes
when the dead-letter topic cannot take it.

A dead letter goes to its source's dead-letter topic: the record's key and value with
headers `error`, `error.detail`, `source.topic`, `source.partition`, `source.offset`. Two
things never block the processor:

- a record larger than `max_dead_letter_bytes` goes to the topic truncated to that size,
  with `error.truncated=true`, `error.original_size` and `error.payload_path`, the path
  (under the offline store) of its full bytes;
- a dead letter the topic refuses for good (topic deleted, not authorised, too large for
  the broker, undeliverable until librdkafka's `message.timeout.ms`) is written to the
  offline store's dead-letter area instead, counted (`featurestore_dead_letters_local_total`)
  and logged, and processing goes on.

The dead-letter area: `<offline_path>/_dead_letters/<topic>/p<partition>.jsonl` holds one
JSON line per dead letter kept there (reason, detail, source offset, key, headers, the
delivery error, and the record as text, or `payload_path` for large ones), and
`<topic>/payloads/p<partition>-o<offset>.bin` the full bytes of truncated records. Both are
made durable at the checkpoint, before the offsets that cover them are committed.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaException

from featurestore import metrics
from featurestore.files import write_private_file
from featurestore.runtime.decode import DeadLetter

log = logging.getLogger(__name__)

ERROR = "error"
DETAIL = "error.detail"
TRUNCATED = "error.truncated"
ORIGINAL_SIZE = "error.original_size"
PAYLOAD_PATH = "error.payload_path"
SOURCE_TOPIC = "source.topic"
SOURCE_PARTITION = "source.partition"
SOURCE_OFFSET = "source.offset"
AREA = "_dead_letters"
#: Record text kept inline in a local dead-letter line (larger ones: a payload file).
_INLINE_BYTES = 64 * 1024


def dead_letter_headers(d: DeadLetter) -> list[tuple[str, str | bytes | None]]:
    """Headers that say why a record was rejected and where it came from."""
    return [
        (ERROR, d.reason.encode()),
        (DETAIL, d.detail.encode()),
        (SOURCE_TOPIC, d.topic.encode()),
        (SOURCE_PARTITION, str(d.partition).encode()),
        (SOURCE_OFFSET, str(d.offset).encode()),
    ]


def read_headers(raw: Any) -> dict[str, str]:
    """A Kafka message's headers (list of pairs or None) as a dict of strings."""
    pairs = raw.items() if isinstance(raw, dict) else (raw or [])
    out: dict[str, str] = {}
    for name, value in pairs:
        out[str(name)] = value.decode(errors="replace") if isinstance(value, bytes) else str(value or "")
    return out


class LocalDeadLetters:
    """The offline store's dead-letter area (see the module docstring); thread-safe."""

    def __init__(self, offline_root: Path) -> None:
        self.root = Path(offline_root) / AREA
        self._lock = threading.Lock()
        self._dirty: dict[Path, int] = {}

    def payload_path(self, d: DeadLetter) -> Path:
        return self.root / d.topic / "payloads" / f"p{d.partition}-o{d.offset}.bin"

    def store_payload(self, d: DeadLetter) -> str:
        """Write a record's full bytes (durably); returns their path relative to the offline store."""
        path = self.payload_path(d)
        write_private_file(path, d.value or b"")
        return str(path.relative_to(self.root.parent))

    def keep(self, d: DeadLetter, headers: list[tuple[str, Any]], why: str) -> None:
        """Keep a dead letter the topic did not take (synced by `sync`)."""
        value = d.value or b""
        line: dict[str, Any] = {
            "reason": d.reason, "detail": d.detail, "topic": d.topic, "partition": d.partition, "offset": d.offset,
            "key": base64.b64encode(d.key).decode() if d.key is not None else None,
            "headers": read_headers(headers), "delivery_error": why, "size": len(value),
        }
        if len(value) > _INLINE_BYTES:
            line["payload_path"] = line["headers"].get(PAYLOAD_PATH) or self.store_payload(d)
        else:
            line["record"] = value.decode("utf-8", "replace")
        path = self.root / d.topic / f"p{d.partition}.jsonl"
        with self._lock:
            fd = self._dirty.get(path)
            if fd is None:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = self._dirty[path] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(fd, orjson.dumps(line) + b"\n")
        metrics.DEAD_LETTERS_LOCAL.labels(d.topic, d.reason).inc()
        log.warning("dead letter %s[%d]@%d (%s) kept in %s: the dead-letter topic did not take it (%s)",
                    d.topic, d.partition, d.offset, d.reason, path, why)

    def sync(self) -> None:
        """Make every line kept so far durable."""
        with self._lock:
            dirty, self._dirty = self._dirty, {}
        for fd in dirty.values():
            os.fsync(fd)
            os.close(fd)


class DeadLetterSink:
    """Produces dead letters to their dead-letter topics; what a topic cannot take goes to the
    local area (see the module docstring). Never raises for a dead letter it cannot deliver."""

    def __init__(self, producer: Any, topics: dict[str, str], local: LocalDeadLetters, max_bytes: int) -> None:
        self.producer = producer
        self.topics = topics
        """Source topic -> its dead-letter topic."""
        self.local = local
        self.max_bytes = max_bytes

    def send(self, d: DeadLetter) -> None:
        headers = dead_letter_headers(d)
        value = d.value
        if value is not None and len(value) > self.max_bytes:
            headers += [(TRUNCATED, b"true"), (ORIGINAL_SIZE, str(len(value)).encode()),
                        (PAYLOAD_PATH, self.local.store_payload(d).encode())]
            value = value[: self.max_bytes]

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:  # final: librdkafka retried what could be retried
                self.local.keep(d, headers, f"{err.name()}: {err.str()}")

        while True:
            try:
                self.producer.produce(self.topics[d.topic], value=value, key=d.key, headers=headers, on_delivery=delivered)
                break
            except BufferError:  # the producer's queue is full: let it drain
                self.producer.poll(0.1)
            except KafkaException as exc:  # refused before sending (e.g. larger than message.max.bytes)
                self.local.keep(d, headers, str(exc.args[0] if exc.args else exc))
                break
        self.producer.poll(0)

    def flush(self, timeout_s: float = 30) -> int:
        """Wait for the dead letters in flight; make those kept locally durable. Returns how many
        are still unacknowledged."""
        remaining = int(self.producer.flush(timeout_s))
        self.local.sync()
        return remaining

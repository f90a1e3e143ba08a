"""The peers' scenario in Quix Streams, run inside its own venv (benchmarks.peers).

A StreamingDataFrame over the payments topic: a 1-hour tumbling window per user with
count, sum and last amount (RocksDB state with its changelog topic, Quix's defaults),
event time from the payload's `ts`; a sink writes each user's newest window values to a
Redis hash once per checkpoint, pipelined (what a user would write). Runs until no record
came for 3 s; prints one line `RESULT={...}`: the records seen, and the seconds from the
first record to the last one plus the final flush (the idle wait is not counted).

Usage: python quix_job.py BOOTSTRAP TOPIC REDIS_URL PREFIX EVENTS STATE_DIR
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
import uuid
from datetime import timedelta

import redis
from quixstreams import Application
from quixstreams.dataframe.windows import Count, Last, Sum
from quixstreams.models.topics import admin as quix_admin
from quixstreams.sinks import BatchingSink, SinkBatch

bootstrap, topic_name, redis_url, prefix, events, state_dir = sys.argv[1:7]
marks: dict[str, float] = {}
IDLE_S = 3.0

# Tansu returns only the topic configs set at creation; Quix needs retention.* to derive its changelog topics.
_inspect = quix_admin.TopicAdmin.inspect_topics


def _inspect_with_defaults(self, topic_names, timeout=30):  # type: ignore[no-untyped-def]  # a Quix Streams callback
    found = _inspect(self, topic_names, timeout=timeout)
    for config in found.values():
        if config is not None:
            config.extra_config.setdefault("retention.ms", "604800000")
            config.extra_config.setdefault("retention.bytes", "-1")
    return found


quix_admin.TopicAdmin.inspect_topics = _inspect_with_defaults


class RedisHashSink(BatchingSink):  # type: ignore[misc]  # quixstreams ships no type information
    def setup(self) -> None:
        self.client = redis.Redis.from_url(redis_url)
        self.client.ping()

    def write(self, batch: SinkBatch) -> None:
        newest = {item.key: item.value for item in batch}
        pipe = self.client.pipeline(transaction=False)
        for key, value in newest.items():
            user = key.decode() if isinstance(key, bytes) else str(key)
            pipe.hset(f"{prefix}:{user}", mapping={"start": value["start"], "count": value["count"],
                                                    "sum": value["sum"], "last_amount": value["last_amount"]})
        started = time.perf_counter()
        pipe.execute()
        marks["last_write_s"] = time.perf_counter() - started


def event_time(value, headers, timestamp, timestamp_type) -> int:  # type: ignore[no-untyped-def]  # a Quix Streams callback
    return int(dt.datetime.fromisoformat(value["ts"]).timestamp() * 1000)


def seen(value):  # type: ignore[no-untyped-def]  # a Quix Streams callback
    now = time.perf_counter()
    marks.setdefault("first", now)
    marks["last"] = now
    marks["seen"] = marks.get("seen", 0) + 1
    return value


app = Application(
    broker_address=bootstrap, consumer_group=f"quix-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest",
    state_dir=state_dir, commit_interval=5.0, loglevel="WARNING",
    consumer_extra_config={"max.partition.fetch.bytes": 8 << 20, "fetch.max.bytes": 64 << 20,
                           "queued.min.messages": 200_000},
)
topic = app.topic(topic_name, value_deserializer="json", timestamp_extractor=event_time)
sdf = app.dataframe(topic).apply(seen)
sdf = sdf.tumbling_window(timedelta(hours=1)).agg(count=Count(), sum=Sum("amount"), last_amount=Last("amount")).current()
sdf.sink(RedisHashSink())
cpu0 = time.process_time()
app.run(timeout=IDLE_S)  # until no record came for IDLE_S (late events for closed windows give no output to count)
print("RESULT=" + json.dumps({"events": int(events), "seen": int(marks.get("seen", 0)),
                              "seconds": marks["last"] - marks["first"] + marks.get("last_write_s", 0.0),
                              "cpu_s": time.process_time() - cpu0}), flush=True)

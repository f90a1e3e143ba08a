"""Freshness: from producing an event to reading its effect with `get_online_features`.

`featurestore run` runs as its own process (the public path) over a fresh topic. This
process produces payments at a fixed rate with event time = now, and every 50 ms a probe
payment of a dedicated user whose amount is a sequence number; a reader polls that user's
last amount online and times each probe from its `produce()` call to the first read that
sees it. Probes never seen count as lost (a failure). Also reported: the rate reached and
the processor's CPU and peak RSS.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from featurestore import FeatureStore
from featurestore.compile import compile_repo
from featurestore.registry import FileRegistry
from featurestore.runtime.kafka import ensure_topics, producer_config

PROBE_USER = 0  # the generated users are 1..n
PROBE_EVERY_S = 0.05
TICK_S = 0.01


def _payment(seq: int, user: int, amount: float, ts: str) -> bytes:
    return (f'{{"payment_id":"f{seq}","user_id":{user},"merchant_id":"m{seq % 500}","amount":{amount},'
            f'"currency":"EUR","country":"FR","ts":"{ts}"}}').encode()


class _Load(threading.Thread):
    """Produces `rate` payments/s in ticks of 10 ms, and a probe every 50 ms."""

    def __init__(self, conf: dict[str, Any], topic: str, rate: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.producer = Producer(conf)
        self.topic, self.rate, self.seconds = topic, rate, seconds
        self.sent: dict[int, float] = {}  # probe sequence -> perf_counter at produce()
        self.produced = 0
        self.elapsed = 0.0

    def run(self) -> None:
        start = time.perf_counter()
        next_probe, seq, probe = start, 0, 0
        tick = 0
        while (now := time.perf_counter()) - start < self.seconds:
            ts = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
            due = int(self.rate * (now - start)) - self.produced
            for _ in range(max(0, due)):
                seq += 1
                self.producer.produce(self.topic, _payment(seq, 1 + seq % 10_000, 1 + seq % 400, ts), key=str(seq % 10_000))
            self.produced += max(0, due)
            if now >= next_probe:
                probe += 1
                self.sent[probe] = time.perf_counter()
                self.producer.produce(self.topic, _payment(-probe, PROBE_USER, float(probe), ts), key=str(PROBE_USER))
                next_probe += PROBE_EVERY_S
            self.producer.poll(0)
            tick += 1
            pause = start + tick * TICK_S - time.perf_counter()
            if pause > 0:
                time.sleep(pause)  # pacing of the load, not a synchronisation
        self.elapsed = time.perf_counter() - start
        self.producer.flush(30)


def _proc_usage(pid: int) -> tuple[float, float]:
    """CPU seconds and peak RSS (MB) of a running process, from /proc (0, 0 elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
        hwm = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmHWM:"))
        return cpu, hwm / 1024
    except (OSError, StopIteration, IndexError, ValueError):
        return 0.0, 0.0


def bench_freshness(b: Any, ctx: dict[str, Any], rate: int, seconds: float, pct: Any) -> None:
    settings = ctx["settings"]
    run = uuid.uuid4().hex[:6]
    repo = ctx["tmp"] / f"fresh-{run}"
    shutil.copytree(ctx["peer_repo"], repo, ignore=shutil.ignore_patterns(".featurestore", "__pycache__"))
    src = repo / "sources.py"
    topic = f"fresh-{run}"
    src.write_text(src.read_text().replace(f'topic="{ctx["topic"]}"', f'topic="{topic}"'))
    plan = compile_repo(repo)
    registry = ctx["tmp"] / f"registry-{run}"
    FileRegistry(registry).apply(plan)
    ensure_topics(settings, [topic], partitions=4)
    project = f"{settings.project}-fresh{run}"
    env = {**os.environ, "FEATURESTORE_PROJECT": project, "FEATURESTORE_REDIS_URL": settings.redis_url,
           "FEATURESTORE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "FEATURESTORE_REGISTRY_PATH": str(registry), "FEATURESTORE_OFFLINE_PATH": str(ctx["tmp"] / f"offline-{run}"),
           "FEATURESTORE_CONSUMER_GROUP": project, "FEATURESTORE_KAFKA_OPTIONS": '{"session.timeout.ms": 6000}'}
    log = ctx["tmp"] / f"run-{run}.log"
    with log.open("wb") as out:  # the child keeps its own handle
        proc = subprocess.Popen([sys.executable, "-m", "featurestore", "run", "--repo", str(repo)], env=env,
                                stdout=subprocess.DEVNULL, stderr=out)
    # the store is read before the processor wrote anything: a new, empty store on purpose
    store = FeatureStore(repo, settings=settings.model_copy(update={"project": project, "registry_path": registry,
                                                                   "allow_empty_online_store": True}))
    feature = next(f"user_txn:{name}" for name in plan.view("user_txn").feature_names if "last" in name)
    try:
        conf = {**producer_config(settings), "linger.ms": 5}
        _wait_for_processor(store, feature, conf, topic, proc, log)
        load = _Load(conf, topic, rate, seconds)
        cpu0, _ = _proc_usage(proc.pid)
        load.start()
        seen: dict[int, float] = {}
        deadline = time.perf_counter() + seconds + 15
        while time.perf_counter() < deadline and (load.is_alive() or len(seen) < len(load.sent)):
            value = _probe_value(store, feature)
            now = time.perf_counter()
            if value is not None:
                for s in range(1, int(value) + 1):
                    if s not in seen and s in load.sent:
                        seen[s] = now
            time.sleep(0.0005)  # polling interval of the reader
        load.join()
        cpu1, rss = _proc_usage(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        store.close()
    lags = [(seen[s] - t) * 1000 for s, t in load.sent.items() if s in seen]
    lost = len(load.sent) - len(lags)
    b.check(lost == 0, f"freshness at {rate:,} ev/s: {lost} of {len(load.sent)} probes never readable online")
    reached = load.produced / max(load.elapsed, 1e-9)
    label = f"freshness at {rate:,} ev/s (peers' view)"
    usage = {"cpu_s": round(cpu1 - cpu0, 2), "peak_rss_mb": round(rss, 1), "rate_reached": round(reached)}
    if lags:
        for q in (0.5, 0.99):
            b.record(label, "featurestore run → get_online_features", f"p{int(q * 100)}", [pct(lags, q)], "ms", **usage)
        print(f"freshness at {rate:,} ev/s (reached {reached:,.0f}): p50 {pct(lags, 0.5):.0f} ms, "
              f"p99 {pct(lags, 0.99):.0f} ms, max {max(lags):.0f} ms, mean {statistics.mean(lags):.0f} ms", flush=True)


def _probe_value(store: FeatureStore, feature: str) -> Any:
    """The probe user's last amount online (None before its first event)."""
    return store.get_online_features([feature], [{"user_id": PROBE_USER}]).to_dict()[feature.split(":")[1]][0]


def _wait_for_processor(store: FeatureStore, feature: str, conf: dict[str, Any], topic: str,
                        proc: subprocess.Popen[bytes], log: Path) -> None:
    """Produce a warm-up probe until the processor (group join included) makes it readable."""
    producer = Producer(conf)
    ts = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
    producer.produce(topic, _payment(0, PROBE_USER, 0.5, ts), key=str(PROBE_USER))
    producer.flush(10)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"featurestore run exited: {log.read_text()[-2000:]}")
        if _probe_value(store, feature) is not None:
            return
        time.sleep(0.1)  # polling for the group join
    raise RuntimeError("the processor did not apply the warm-up event within 90 s")

"""Where the time goes: py-spy samples this process during a region, summarised by layer."""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_DECODE = "decode (column checks, pydantic validation, transforms)"
#: Where a sampled frame's time goes, by the file it is in (first match wins, innermost frame first).
LAYERS = (
    ("Redis I/O (redis-py, hiredis)", ("redis/", "featurestore/online/streaming")),
    ("online states: fold and encode (Python)", ("featurestore/online/",)),
    ("metrics (prometheus_client)", ("prometheus_client/", "featurestore/metrics")),
    (_DECODE, ("featurestore/runtime/decode", "pydantic")),
    ("history (Arrow buffers, Parquet)", ("featurestore/offline/", "pyarrow")),
    ("Faust streams, agents, take buffer", ("faust/",)),
    ("aiokafka consumer / protocol", ("aiokafka/", "kafka/")),
    ("mode services, asyncio loop", ("mode/", "asyncio/", "uvloop")),
    ("Kafka consume, processor loop (confluent-kafka)", ("featurestore/runtime/processor", "confluent_kafka")),
)


#: Layers that own every frame below them (Arrow parsing and compute called to check columns is decoding).
OWNING = ((_DECODE, ("featurestore/runtime/columnar", "featurestore/runtime/events")),)


@contextmanager
def profiled(out: Path | None) -> Iterator[None]:
    """Sample this process with py-spy into `out` (raw format) during the body; None: don't."""
    spy = _start_profiler(out) if out is not None else None
    try:
        yield
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)


def _start_profiler(out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=False)
        exe = str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        return None
    proc = subprocess.Popen([exe, "record", "--pid", str(os.getpid()), "--rate", "200", "--format", "raw",
                             "--output", str(out), "--threads"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # py-spy attaches (not a synchronisation of the measured work)
    return proc


def summarise_profile(raw: Path, top: int = 8) -> list[tuple[str, float]]:
    """Share of busy samples per layer (LAYERS, else "other"), from py-spy's raw output."""
    layers: collections.Counter[str] = collections.Counter()
    total = 0
    if not raw.exists():
        return []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        frames = stack.split(";")
        leaf = frames[-1]
        if any(idle in leaf for idle in ("select", "epoll", "Condition.wait", "_worker (concurrent", "sleep")):
            continue  # idle threads
        n = int(count)
        total += n
        owner = next((name for name, needles in OWNING if any(x in f for f in frames for x in needles)), None)
        if owner:
            layers[owner] += n
            continue
        for frame in reversed(frames):
            layer = next((name for name, needles in LAYERS if any(x in frame for x in needles)), None)
            if layer:
                layers[layer] += n
                break
        else:
            layers["other"] += n
    return [(name, 100 * n / total) for name, n in layers.most_common(top)] if total else []


def profile_path() -> Path:
    return Path(tempfile.mkdtemp(prefix="featurestore-profile-")) / "profile.raw"

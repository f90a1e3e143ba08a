"""The Faust engine beside the default engine: same plan, same events, fresh consumer groups.

The engine runs in this process (`run_faust`, as `featurestore run --engine faust` does);
on the first repetition py-spy samples it and the hot spots are summarised by layer.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from featurestore.runtime.faust_engine import run_faust

#: Where a sampled frame's time goes, by the file it is in (first match wins, innermost frame first).
LAYERS = (
    ("Redis write (Lua tiles, redis-py)", ("featurestore/online/", "redis/")),
    ("decode (pydantic validation, transforms)", ("featurestore/runtime/decode", "pydantic")),
    ("history (Arrow buffers, Parquet)", ("featurestore/offline/", "pyarrow")),
    ("Faust streams, agents, take buffer", ("faust/",)),
    ("aiokafka consumer / protocol", ("aiokafka/", "kafka/")),
    ("mode services, asyncio loop", ("mode/", "asyncio/", "uvloop")),
)


def run_engine(b: Any, plan: Any, settings: Any, n: int, profile_to: Path | None = None) -> float:
    """events/s of the Faust engine from the first record to caught up (history and acks durable)."""
    spy = _start_profiler(profile_to) if profile_to else None
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        stats = run_faust(plan, settings, until_caught_up=True)
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
    b.check(stats.events == n, f"Faust engine applied {stats.events} of {n}")
    assert stats.first_record_at is not None and stats.caught_up_at is not None
    return n / (stats.caught_up_at - stats.first_record_at)


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
        for frame in reversed(frames):
            layer = next((name for name, needles in LAYERS if any(x in frame for x in needles)), None)
            if layer:
                layers[layer] += n
                break
        else:
            layers["other"] += n
    return [(name, 100 * n / total) for name, n in layers.most_common(top)] if total else []


def profile_path() -> Path:
    return Path(tempfile.mkdtemp(prefix="faust-profile-")) / "faust.raw"

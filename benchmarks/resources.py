"""CPU seconds and peak memory of a measured region of this process, and Redis's CPU in it.

Peak RSS is reset at the start of each region where Linux allows it (/proc/self/clear_refs),
so each scenario reports its own peak, not the process's lifetime maximum.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis


@dataclass
class Usage:
    """What a region used: CPU of this process (all threads), its peak RSS, Redis's CPU."""

    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    redis_cpu_s: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"cpu_s": round(self.cpu_s, 2), "peak_rss_mb": round(self.peak_rss_mb, 1), "redis_cpu_s": round(self.redis_cpu_s, 2)}


def _redis_cpu(client: redis.Redis[bytes] | None) -> float:
    if client is None:
        return 0.0
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: of its own address space; getrusage's ru_maxrss would
    carry a parent's peak over fork + exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB; lifetime peak


def children_peak_rss_mb() -> float:
    """Peak RSS (MB) of this process's live child processes (e.g. Spark's JVM), from /proc."""
    total = 0.0
    me = str(os.getpid())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[1] != me:
                continue
            for line in (stat.parent / "status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        except (OSError, IndexError, ValueError):
            continue
    return total


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: the peak is the process's lifetime peak


@contextmanager
def measured(redis_client: redis.Redis[bytes] | None = None) -> Iterator[Usage]:
    """Fill a Usage with what the `with` body used."""
    usage = Usage()
    _reset_peak()
    cpu0, redis0 = time.process_time(), _redis_cpu(redis_client)
    try:
        yield usage
    finally:
        usage.cpu_s = time.process_time() - cpu0
        usage.redis_cpu_s = _redis_cpu(redis_client) - redis0
        usage.peak_rss_mb = peak_rss_mb()


def job_result(cmd: list[str], timeout: float, cwd: Path | None = None) -> tuple[dict[str, Any] | None, str]:
    """Run a measuring job (its own process) and parse the `RESULT={json}` line it prints:
    (the result, or None if it failed or printed none; the tail of its stderr)."""
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT=")), None)
    if done.returncode != 0 or line is None:
        return None, done.stderr[-2000:]
    return dict(json.loads(line[len("RESULT="):])), ""

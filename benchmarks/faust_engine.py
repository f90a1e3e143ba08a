"""The Faust engine beside the default engine: same plan, same events, fresh consumer groups.

The engine runs in this process (`run_faust`, as `featurestore run --engine faust` does);
on the first repetition py-spy samples it (benchmarks.profiling).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from benchmarks.profiling import profiled
from featurestore.runtime.faust_engine import run_faust


def run_engine(b: Any, plan: Any, settings: Any, n: int, profile_to: Path | None = None) -> float:
    """events/s of the Faust engine from the first record to caught up (history and acks durable)."""
    previous = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        with profiled(profile_to):
            stats = run_faust(plan, settings, until_caught_up=True)
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
    b.check(stats.events == n, f"Faust engine applied {stats.events} of {n}")
    assert stats.first_record_at is not None and stats.caught_up_at is not None
    return n / (stats.caught_up_at - stats.first_record_at)

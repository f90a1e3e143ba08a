"""The checkpoint: the one place the commit order is written, used by both stream engines and backfill.

A checkpoint makes everything applied so far durable, then commits the position that covers it:

1. the online states of every batch applied are in Redis (`OnlineWriter.settle`);
2. the history rows buffered so far are handed over and committed to Parquet, per partition;
3. every dead letter produced so far is acknowledged by its destination;
4. only then the engine's position moves on: the consumer offsets are committed (default
   engine), the events are acknowledged (Faust), or nothing (a backfill's position is its
   history's per-partition commit).

A crash between any two steps replays what the position does not cover, and both stores
skip what they already hold, so every event takes effect exactly once. Steps 1-2 (the
hand-over) and 4 (the commit) run on the engine's own thread; steps 2-3's writes may run on
a worker thread while the next batches are applied (`start` / `finish`), one at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from featurestore import metrics
from featurestore.faults import fault_point
from featurestore.offline.history import HistoryWriter
from featurestore.online.writer import OnlineWriter
from featurestore.records import ViewRows

P = TypeVar("P")
T = TypeVar("T")


class Retry(Protocol):
    """How a checkpoint step is retried: `retry(what, action)` runs `action` until it succeeds."""

    def __call__(self, what: str, action: Callable[[], T], /) -> T: ...


class CheckpointStats(Protocol):
    """The counters a checkpoint keeps."""

    checkpoints: int
    history_rows: int


def run_once(what: str, action: Callable[[], T], /) -> T:
    """No retries: a failure is raised (backfill: its rerun resumes where the history stopped)."""
    return action()


@dataclass
class Handover(Generic[P]):
    """What one checkpoint makes durable and the position it then commits."""

    history: dict[str, list[ViewRows]]
    position: P


class Checkpointer(Generic[P]):
    """Runs checkpoints in the documented order for one engine; `commit` moves its position."""

    def __init__(
        self,
        history: HistoryWriter,
        commit: Callable[[P], None],
        stats: CheckpointStats,
        *,
        online: OnlineWriter | None = None,
        dead_letters: Callable[[], None] | None = None,
        retry: Retry = run_once,
        interval_s: float = float("inf"),
        history_place: str = "the offline folder",
        redis_place: str = "Redis",
    ) -> None:
        """`dead_letters`: waits until every dead letter produced so far is acknowledged (raises
        to be retried); `retry`: the engine's retry policy for each write; `interval_s`: how
        often `due` says a periodic checkpoint is needed."""
        self.history = history
        self.online = online
        self._commit = commit
        self._dead_letters = dead_letters
        self._retry = retry
        self.stats = stats
        self.interval_s = interval_s
        self._history_place = history_place
        self._redis_place = redis_place
        self.last_at = time.monotonic()
        self._worker: ThreadPoolExecutor | None = None
        self._pending: tuple[Future[None], Handover[P]] | None = None

    # -- the steps ------------------------------------------------------------------------
    def hand_over(self, position: P) -> Handover[P]:
        """Steps 1-2 on the engine's thread: wait for the online states applied so far, take
        the buffered history rows. `position` must cover exactly what was applied before."""
        if self.online is not None:
            self._retry(f"Redis write to {self._redis_place}", self.online.settle)
        return Handover(self.history.take(), position)

    def make_durable(self, handover: Handover[P]) -> None:
        """Steps 2-3 (any thread): commit the handed-over history rows, acknowledge the dead letters."""
        before = self.history.rows_written
        self._retry(f"history flush to {self._history_place}", lambda: self.history.flush_taken(handover.history))
        self.stats.history_rows += self.history.rows_written - before
        if self._dead_letters is not None:
            self._retry("dead-letter delivery", self._dead_letters)

    def commit(self, handover: Handover[P]) -> None:
        """Step 4 on the engine's thread: move the position past what is now durable."""
        if handover.position:  # something to commit: the crash tests' most dangerous moment
            fault_point("before_offset_commit")
        self._commit(handover.position)
        self.last_at = time.monotonic()
        self.stats.checkpoints += 1
        metrics.CHECKPOINTS.inc()

    # -- whole checkpoints -----------------------------------------------------------------
    def due(self) -> bool:
        """The periodic checkpoint's interval has passed since the last one."""
        return time.monotonic() - self.last_at >= self.interval_s

    def run(self, position: P) -> None:
        """A whole checkpoint, waiting for it (after the background one, if one runs)."""
        self.finish()
        handover = self.hand_over(position)
        self.make_durable(handover)
        self.commit(handover)

    def start(self, position: P) -> None:
        """A periodic checkpoint: hand over now, make durable on a worker thread while the next
        batches are applied; `finish` (on this thread) commits once that is done."""
        self.finish()
        handover = self.hand_over(position)
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending = (self._worker.submit(self.make_durable, handover), handover)
        self.last_at = time.monotonic()

    @property
    def started_done(self) -> bool:
        """A background checkpoint has finished its writes and waits for `finish`."""
        return self._pending is not None and self._pending[0].done()

    def finish(self) -> None:
        """Wait for the background checkpoint, if one runs (its failure is raised here), and commit it."""
        pending, self._pending = self._pending, None
        if pending is not None:
            future, handover = pending
            future.result()
            self.commit(handover)

    def close(self) -> None:
        """Stop the worker thread (after its checkpoint's writes, which are not committed)."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)

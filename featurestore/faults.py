"""Fault injection for crash tests: kill the process at a named point.

Set `FEATURESTORE_FAULT=<point>:<n>` to SIGKILL the process the n-th time execution
reaches `<point>`. Points: `after_online_write` (Redis updated, offsets not committed),
`after_history_staged` (Parquet files written, not committed), `after_history_commit`
(commit file written, files not yet renamed), `before_offset_commit` (everything durable,
Kafka offsets not committed). Unset (the default), every check is one comparison.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

POINTS = ("after_online_write", "after_history_staged", "after_history_commit", "before_offset_commit")


def _parse(spec: str) -> tuple[str, int] | None:
    if not spec:
        return None
    point, _, count = spec.partition(":")
    if point not in POINTS or not count.isdigit():
        raise ValueError(f"FEATURESTORE_FAULT={spec!r}: expected <point>:<n> with point one of {', '.join(POINTS)}")
    return point, int(count)


_UNREAD = ("", 0)
_target: tuple[str, int] | None = _UNREAD  # read from the environment at the first fault point, not at import
_SEEN: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Die here (SIGKILL, no cleanup) if FEATURESTORE_FAULT names this point and occurrence."""
    global _target
    if _target is _UNREAD:
        _target = _parse(os.environ.get("FEATURESTORE_FAULT", ""))
    if _target is None or _target[0] != name:
        return
    _SEEN[name] = _SEEN.get(name, 0) + 1
    if _SEEN[name] == _target[1]:
        os.kill(os.getpid(), signal.SIGKILL)


def crash_loop(
    cmd: list[str], env: dict[str, str], kills: int, seed: int, dangerous: tuple[str, ...] = (),
    random_time: tuple[float, float] = (4.0, 12.0), on_kill: Callable[[str], None] | None = None,
    run_timeout: float | None = None,
) -> dict[str, int]:
    """Run `cmd` (a processor run that exits 0 when caught up) until `kills` runs have been
    SIGKILLed or a run completes, then once more to completion. Runs alternate between a
    fault point (the `dangerous` ones first, then random points at random occurrences) and a
    kill at a random moment within `random_time` seconds; a run taking longer than
    `run_timeout` raises subprocess.TimeoutExpired. Returns kills per kind."""
    import random
    import subprocess
    import tempfile

    rnd = random.Random(seed)
    counts: dict[str, int] = {}
    attempt, finished = 0, False
    while sum(counts.values()) < kills and not finished:
        if attempt % 2 == 1:
            delay = rnd.uniform(*random_time)
            log = tempfile.TemporaryFile()  # not a pipe: nobody reads one while the run goes on
            proc = subprocess.Popen(cmd, env={**env, "FEATURESTORE_FAULT": ""}, stdout=subprocess.DEVNULL, stderr=log)
            try:
                proc.wait(timeout=delay)  # the random kill time itself, not a synchronisation
                finished = proc.returncode == 0
                if not finished:
                    log.seek(0)
                    raise RuntimeError(f"run failed: {log.read()[-3000:].decode(errors='replace')}")
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                kind = "random time"
                counts[kind] = counts.get(kind, 0) + 1
                if on_kill:
                    on_kill(f"after {delay:.1f} s")
            finally:
                log.close()
        else:
            n = attempt // 2
            fault = dangerous[n] if n < len(dangerous) else f"{rnd.choice(POINTS)}:{rnd.randint(1, 3)}"
            res = subprocess.run(cmd, env={**env, "FEATURESTORE_FAULT": fault}, capture_output=True, text=True,
                                 timeout=run_timeout)
            if res.returncode == -signal.SIGKILL:
                kind = fault.split(":")[0]
                counts[kind] = counts.get(kind, 0) + 1
                if on_kill:
                    on_kill(f"at {fault}")
            elif res.returncode == 0:
                finished = True
            else:
                raise RuntimeError(f"run with FEATURESTORE_FAULT={fault!r} failed: {res.stderr[-3000:]}")
        attempt += 1
    if not finished:
        subprocess.run(cmd, env={**env, "FEATURESTORE_FAULT": ""}, check=True, capture_output=True, timeout=run_timeout)
    return counts

"""The crash-loop harness of the exactly-once tests and benchmark: kill a processor run at
fault points (`featurestore.faults`) and at random moments, again and again."""

from __future__ import annotations

import random
import signal
import subprocess
import tempfile
from collections.abc import Callable

from featurestore.faults import POINTS


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
        res = subprocess.run(cmd, env={**env, "FEATURESTORE_FAULT": ""}, capture_output=True, text=True, timeout=run_timeout)
        if res.returncode != 0:
            raise RuntimeError(f"the last run (no fault) failed with exit {res.returncode}: {res.stderr[-3000:]}")
    return counts

"""Peers measured in the same run, each in its own venv (their pins clash with ours:
quixstreams wants confluent-kafka < 2.13). Venvs live in benchmarks/.venvs/ and are made
on first use (PyPI access needed once)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import tempfile
import venv
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
VENVS = HERE.parent / ".venvs"
QUIX = ("quixstreams>=3.20,<4", "redis>=5.0")


def ensure_venv(name: str, requirements: tuple[str, ...]) -> Path:
    """The venv's python, created and filled once (a marker file records what it holds)."""
    root = VENVS / name
    python = root / "bin" / "python"
    marker = root / "requirements.txt"
    if not python.exists() or not marker.exists() or marker.read_text() != "\n".join(requirements):
        print(f"creating the {name} venv in {root} (once) ...", flush=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(root)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError(f"pip install {' '.join(requirements)} failed: {done.stderr.strip().splitlines()[-1:]}")
        marker.write_text("\n".join(requirements))
    return python


def run_quix(b: Any, ctx: dict[str, Any], rep: int) -> tuple[float, float] | None:
    """events/s and CPU s of Quix Streams over the ingest topic; None if its venv cannot be made."""
    settings = ctx["settings"]
    try:
        python = ensure_venv("quix", QUIX)
    except OSError as exc:
        print(f"Quix Streams peer skipped: its venv could not be made ({exc})", flush=True)
        return None
    n = len(ctx["records"])
    prefix = f"bench:quix{rep}"
    with tempfile.TemporaryDirectory(prefix="quix-state-") as state:
        done = subprocess.run(
            [str(python), str(HERE / "quix_job.py"), settings.kafka_bootstrap_servers, ctx["topic"], settings.redis_url,
             prefix, str(n), state], capture_output=True, text=True, timeout=1800)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT=")), None)
    if done.returncode != 0 or line is None:
        b.check(False, f"Quix Streams run failed: {done.stderr[-1500:]}")
        return None
    result = json.loads(line[len("RESULT="):])
    b.check(result["seen"] == n, f"Quix Streams saw {result['seen']} of {n} records")
    _check_quix(b, ctx, prefix)
    return n / result["seconds"], result["cpu_s"]


def _check_quix(b: Any, ctx: dict[str, Any], prefix: str) -> None:
    """Each sampled user's count in its newest window lies between that hour's events that
    arrived in order and all of that hour's events (Quix drops events for closed windows)."""
    import redis

    client = redis.Redis.from_url(ctx["settings"].redis_url)
    per_hour: dict[tuple[int, int], list[int]] = {}
    newest_seen = 0
    for r in ctx["records"]:  # in arrival order; late: arrived after a newer event
        if not r.event:
            continue
        ts = int(dt.datetime.fromisoformat(r.event["ts"]).timestamp() * 1000)
        late = ts < newest_seen
        newest_seen = max(newest_seen, ts)
        counts = per_hour.setdefault((r.event["user_id"], ts - ts % 3_600_000), [0, 0])
        counts[0] += 1
        counts[1] += late
    users = sorted({u for u, _ in per_hour})[:200]
    wrong = 0
    for user in users:
        got = client.hgetall(f"{prefix}:{user}")
        if not got:
            wrong += 1
            continue
        total, late = per_hour.get((user, int(got[b"start"])), [0, 0])
        wrong += not (total - late <= int(got[b"count"]) <= total)
    client.close()
    b.check(wrong == 0, f"Quix Streams: {wrong} of {len(users)} sampled users have a window count outside [on time, all]")

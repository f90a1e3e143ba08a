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

from benchmarks.resources import job_result

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
        result, errors = job_result(
            [str(python), str(HERE / "quix_job.py"), settings.kafka_bootstrap_servers, ctx["topic"], settings.redis_url,
             prefix, str(n), state], 1800)
    if result is None:
        b.check(False, f"Quix Streams run failed: {errors}")
        return None
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
        total, late_total = per_hour.get((user, int(got[b"start"])), [0, 0])
        wrong += not (total - late_total <= int(got[b"count"]) <= total)
    client.close()
    b.check(wrong == 0, f"Quix Streams: {wrong} of {len(users)} sampled users have a window count outside [on time, all]")


FEAST = ("feast[redis,duckdb]==0.67.0",)
#: The row-level columns of the user_payments history that Feast serves (its latest values).
FEAST_FEATURES = {"last_merchant": "string", "last_country": "string", "amount_eur": "double", "is_large": "bool",
                  "amount": "double", "merchant_id": "string", "country": "string"}


def run_feast(b: Any, ctx: dict[str, Any], entity_df: Any) -> None:
    """Feast 0.67 (its own venv) on our run's data: the user_payments history as its FileSource
    (DuckDB offline store, Redis online store): materialize, online reads, a training set."""
    from urllib.parse import urlparse

    import duckdb

    from featurestore import FeatureStore
    from featurestore.offline.history import history_glob

    try:
        python = ensure_venv("feast", FEAST)
    except OSError as exc:
        print(f"Feast peer skipped: its venv could not be made ({exc})", flush=True)
        return
    settings = ctx["ingest_settings"]
    work = Path(tempfile.mkdtemp(prefix="feast-", dir=ctx["tmp"]))
    source = work / "user_payments.parquet"
    glob = history_glob(settings.offline_root, "user_payments")
    duckdb.sql(f"COPY (SELECT user_id, event_timestamp, {', '.join(FEAST_FEATURES)} FROM read_parquet('{glob}', "
               f"hive_partitioning = true)) TO '{source}' (FORMAT parquet)")
    rows = int(duckdb.sql(f"SELECT count(*) FROM '{source}'").fetchall()[0][0])  # type: ignore[union-attr]  # duckdb types sql() as maybe None
    entity_path = work / "entity_df.parquet"
    entity_df.assign(row_id=range(len(entity_df))).to_parquet(entity_path)
    users = sorted({r.event["user_id"] for r in ctx["records"] if r.event})[:200]
    url = urlparse(settings.redis_url)
    sample = list(range(0, len(entity_df), max(1, len(entity_df) // 1000)))
    config = {"repo": str(work / "repo"), "redis": f"{url.hostname}:{url.port or 6379}",
              "db": int((url.path or "/0").strip("/") or 0) + 1, "source": str(source), "features": FEAST_FEATURES,
              "start": (ctx["end"] - dt.timedelta(days=2)).isoformat(), "end": (ctx["end"] + dt.timedelta(hours=1)).isoformat(),
              "users": users, "iters": 300 if b.args.quick else 2000, "entity_df": str(entity_path), "sample": sample}
    (work / "config.json").write_text(json.dumps(config))
    runs: dict[str, list[dict[str, Any]]] = {}
    for rep in range(b.args.reps):
        for phase in ("materialize", "online", "training"):
            result, errors = job_result([str(python), str(HERE / "feast_job.py"), str(work / "config.json"), phase], 1800)
            if result is None:
                b.check(False, f"Feast {phase} failed: {errors}")
                return
            runs.setdefault(phase, []).append(result)
        print(f"Feast rep {rep + 1}: materialize {runs['materialize'][-1]['seconds']:.1f} s, online 1x p99 "
              f"{runs['online'][-1]['1x']['p99']:.2f} ms, training {runs['training'][-1]['seconds']:.1f} s", flush=True)
    # correctness: Feast's latest values are ours (row features: the newest event per user)
    store = FeatureStore(ctx["repo"], settings=settings)
    ours = store.get_online_features(["user_payments:last_merchant", "user_payments:last_country"],
                                     [{"user_id": u} for u in users], at=ctx["end"]).to_dict()
    store.close()
    got = runs["online"][0]["values"]
    wrong = sum(a != c or x != y for a, c, x, y in zip(got["last_merchant"], ours["last_merchant"],
                                                       got["last_country"], ours["last_country"]))
    b.check(wrong == 0, f"Feast's online last_merchant/last_country differ from ours for {wrong} of {len(users)} users")
    training = runs["training"][0]
    b.check(training["rows"] == len(entity_df), f"Feast's training set has {training['rows']} of {len(entity_df)} rows")
    con = duckdb.connect()
    con.register("picked", entity_df.iloc[sample].assign(row_id=sample))
    expected = con.sql(
        f"""SELECT h.last_merchant FROM picked e ASOF LEFT JOIN '{source}' h
            ON e.user_id = h.user_id AND e.event_timestamp >= h.event_timestamp ORDER BY e.row_id""").fetchall()
    wrong = sum(a != c for (a,), c in zip(expected, training["values"]["last_merchant"]))
    b.check(wrong == 0, f"Feast's training last_merchant differs from a DuckDB ASOF join in {wrong} of {len(sample)} rows")
    usage = [{"cpu_s": r["cpu_s"], "peak_rss_mb": r["peak_rss_mb"]} for r in runs["materialize"]]
    b.record(f"load {ctx['materialize'][0][2]:,} history rows into Redis",
             f"Feast 0.67 materialize (user view: {rows:,} rows, latest values, no windows)", "seconds",
             [r["seconds"] for r in runs["materialize"]], "s", usage)
    n_feat = len(FEAST_FEATURES)
    for n in (1, 100):
        for q in ("p50", "p99"):
            b.record(f"online {n}x10", f"Feast 0.67 SDK ({n}x{n_feat} latest values)", q,
                     [r[f"{n}x"][q] for r in runs["online"]], "ms")
    usage = [{"cpu_s": r["cpu_s"], "peak_rss_mb": r["peak_rss_mb"]} for r in runs["training"]]
    b.record(f"training set {len(entity_df):,} rows", f"Feast 0.67 DuckDB store ({n_feat} latest values)", "seconds",
             [r["seconds"] for r in runs["training"]], "s", usage)

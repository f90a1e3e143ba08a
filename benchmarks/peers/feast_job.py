"""Feast 0.67, run in its own venv on the data of our run (one phase per process).

    python feast_job.py CONFIG.json PHASE     PHASE: materialize | online | training

CONFIG: repo (a folder to write the Feast repo into), redis (host:port), db, source (one
Parquet file: our user_payments history, the row-level columns), features (column names),
start / end (ISO times around the data), users (entity ids to read online), iters,
entity_df (Parquet: user_id, event_timestamp), sample (rows whose values are returned for
the correctness check). Prints one line `RESULT={json}`: seconds, CPU s and peak RSS MB of
the phase, and what it read.
"""

from __future__ import annotations

import datetime as dt
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

CONFIG = json.loads(Path(sys.argv[1]).read_text())
PHASE = sys.argv[2]
REPO = Path(CONFIG["repo"])


def write_repo() -> None:
    REPO.mkdir(parents=True, exist_ok=True)
    (REPO / "feature_store.yaml").write_text(
        "project: bench\nprovider: local\n"
        f"registry: {REPO / 'registry.db'}\n"
        f"online_store:\n  type: redis\n  connection_string: \"{CONFIG['redis']},db={CONFIG['db']}\"\n"
        "offline_store:\n  type: duckdb\n"
        "entity_key_serialization_version: 3\n"
    )


def definitions() -> list[Any]:
    from feast import Entity, FeatureView, Field, FileSource, ValueType
    from feast.types import Bool, Float64, String

    types = {"double": Float64, "string": String, "bool": Bool}
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    source = FileSource(name="user_payments_source", path=CONFIG["source"], timestamp_field="event_timestamp")
    view = FeatureView(name="user_payments", entities=[user], ttl=dt.timedelta(days=30),
                       schema=[Field(name=n, dtype=types[t]) for n, t in CONFIG["features"].items()],
                       source=source, online=True)
    return [user, view]


def refs() -> list[str]:
    return [f"user_payments:{name}" for name in CONFIG["features"]]


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def peak_rss_mb() -> float:
    """VmHWM: the peak of this process's own address space (ru_maxrss carries the parent's over fork + exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    from feast import FeatureStore

    if PHASE == "materialize":
        write_repo()
    store = FeatureStore(repo_path=str(REPO))
    out: dict[str, Any] = {}
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if PHASE == "materialize":
        store.apply(definitions())
        t0, cpu0 = time.perf_counter(), time.process_time()  # the materialize call alone, as the anchors timed it
        store.materialize(dt.datetime.fromisoformat(CONFIG["start"]), dt.datetime.fromisoformat(CONFIG["end"]))
    elif PHASE == "online":
        for n in (1, 100):
            rows = [{"user_id": u} for u in CONFIG["users"][:n]]
            lat = []
            for i in range(CONFIG["iters"] + 100):
                a = time.perf_counter()
                store.get_online_features(features=refs(), entity_rows=rows).to_dict()
                if i >= 100:
                    lat.append((time.perf_counter() - a) * 1000)
            out[f"{n}x"] = {"p50": pct(lat, 0.5), "p99": pct(lat, 0.99)}
        got = store.get_online_features(features=refs(), entity_rows=[{"user_id": u} for u in CONFIG["users"]]).to_dict()
        out["values"] = {k: got[k] for k in CONFIG["features"]}
    elif PHASE == "training":
        entity_df = pd.read_parquet(CONFIG["entity_df"])
        t0, cpu0 = time.perf_counter(), time.process_time()
        df = store.get_historical_features(entity_df=entity_df, features=refs()).to_df()
        out["rows"] = len(df)
        seconds = time.perf_counter() - t0
        sample = entity_df.iloc[CONFIG["sample"]]
        merged = sample.merge(df, on=["row_id"], how="left")
        out["values"] = {k: [None if pd.isna(v) else v for v in merged[k]] for k in CONFIG["features"]}
        out["seconds"] = seconds
    out.setdefault("seconds", time.perf_counter() - t0)
    out["cpu_s"] = time.process_time() - cpu0
    out["peak_rss_mb"] = peak_rss_mb()
    print("RESULT=" + json.dumps(out, default=str), flush=True)


if __name__ == "__main__":
    main()

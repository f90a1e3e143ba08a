"""One training-set build in its own process, so its peak RSS is its own.

    python -m benchmarks.training_job CONFIG.json

CONFIG: repo, settings (load_settings overrides), entity_df (Parquet: user_id,
event_timestamp), features, who: "ours" (`FeatureStore.get_historical_features`), "spark"
(the same with engine="spark", Spark in local mode; its start is timed apart) or "raw" (a
hand-written DuckDB ASOF JOIN of the same history, 3 last-value columns). Prints
`RESULT={json}`: seconds of the build (reading the entity frame excluded), rows, CPU s,
peak RSS MB of the process (with Spark, plus its JVM's), and the smallest amount_count_1h.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import duckdb
import pandas as pd

from benchmarks.resources import children_peak_rss_mb, peak_rss_mb
from featurestore import FeatureStore
from featurestore.compile.loader import ensure_importable
from featurestore.config import load_settings
from featurestore.offline.history import history_glob


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    repo = Path(config["repo"])
    ensure_importable(repo)
    settings = load_settings(repo, **config["settings"])
    entity_df = pd.read_parquet(config["entity_df"])
    out: dict[str, float] = {}
    engine = "spark" if config["who"] == "spark" else "duckdb"
    if engine == "spark":
        from featurestore.offline.spark_engine import spark_session

        started = time.perf_counter()
        spark_session()
        out["spark_start_s"] = time.perf_counter() - started
    cpu0, t0 = time.process_time(), time.perf_counter()
    if config["who"] in ("ours", "spark"):
        store = FeatureStore(repo, settings=settings)
        table = store.get_historical_features(entity_df, config["features"], engine=engine).to_arrow()
        out["seconds"] = time.perf_counter() - t0
        out["min_count_1h"] = min(table["amount_count_1h"].to_pylist(), default=0)
        if "amount_vs_1d_mean" in table.column_names:  # checked against its formula on a sample
            head = table.slice(0, 2000).to_pydict()
            out["request_time_ok"] = all(
                v == (round(a / m, 6) if m else None)
                for a, m, v in zip(head["amount"], head["amount_mean_1d"], head["amount_vs_1d_mean"]))
        store.close()
    else:
        con = duckdb.connect()
        con.register("entity_df", entity_df)
        glob = history_glob(settings.offline_root, "user_payments")
        table = con.sql(
            f"""SELECT e.user_id, e.event_timestamp, h.last_merchant, h.last_country, h.amount_eur
                FROM entity_df e ASOF LEFT JOIN read_parquet('{glob}', hive_partitioning=true) h
                ON e.user_id = h.user_id AND e.event_timestamp >= h.event_timestamp""")
        table = (getattr(table, "to_arrow_table", None) or table.arrow)()
        out["seconds"] = time.perf_counter() - t0
    out["rows"] = table.num_rows
    out["cpu_s"] = time.process_time() - cpu0
    out["peak_rss_mb"] = peak_rss_mb() + (children_peak_rss_mb() if engine == "spark" else 0.0)
    print("RESULT=" + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

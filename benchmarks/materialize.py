"""Loading the Parquet history into the online store, beside the raw floor.

Ours: `featurestore rebuild-online`'s load (`rebuild_view`): each entity's state (windows,
tiles, the exactly-once marks) computed at once from its whole history, as streaming left it.
Raw floor (what Feast's materialize does): DuckDB picks the latest row per key, then one
pipelined HSET per key of its row-level values; no windows.
"""

from __future__ import annotations

import time
from typing import Any

import duckdb
import orjson

from benchmarks.resources import measured
from featurestore import FeatureStore
from featurestore.offline.history import history_glob
from featurestore.runtime.rebuild import count_history, rebuild_view


def bench_materialize(b: Any, ctx: dict[str, Any], rep: int) -> None:
    source = ctx["ingest_settings"]
    plan = ctx["plan"]
    target = source.model_copy(update={"project": f"{source.project}-m{rep}"})
    client = source.redis_client()
    rows = sum(count_history(source.offline_root, v) for v in plan.views)
    skew_ms = int(source.max_future_skew_s * 1000)
    with measured(client) as usage:
        t0 = time.perf_counter()
        replayed = sum(rebuild_view(client, target.project, source.offline_root, view, skew_ms) for view in plan.views)
        ours = time.perf_counter() - t0
    b.check(replayed == rows, f"rebuild read {replayed} of {rows} history rows")
    with measured(client) as raw_usage:
        t0 = time.perf_counter()
        keys = _raw_latest_per_key(client, source, plan, f"bench:raw-m{rep}")
        raw = time.perf_counter() - t0
    ctx.setdefault("materialize", []).append((ours, raw, rows, keys, usage.as_dict(), raw_usage.as_dict()))
    if rep == 0:  # the rebuilt online values are the streamed ones
        users = sorted({r.event["user_id"] for r in ctx["records"] if r.event})[:200]
        feats = [f"user_payments:{f}" for f in plan.view("user_payments").feature_names]
        entity_rows = [{"user_id": u} for u in users]
        got = []
        for settings in (source, target):
            store = FeatureStore(ctx["repo"], settings=settings)
            got.append(store.get_online_features(feats, entity_rows, at=ctx["end"]).to_dict())
            store.close()
        b.check(got[0] == got[1], "online values rebuilt from the history differ from the streamed ones")
    client.close()


def _raw_latest_per_key(client: Any, settings: Any, plan: Any, prefix: str) -> int:
    """The latest history row per key of every view, HSET with its row-level values."""
    written = 0
    for view in plan.views:
        keys = [k.name for k in view.join_keys]
        cols = [f.name for f in view.row_features] or [name for name, _ in view.history_columns][:1]
        glob = history_glob(settings.offline_root, view.name)
        select = ", ".join(f'"{c}"' for c in keys + cols)
        table = duckdb.connect().sql(
            f"SELECT {select}, epoch_ms(event_timestamp) AS _ts FROM read_parquet('{glob}', hive_partitioning = true) "
            f"QUALIFY row_number() OVER (PARTITION BY {', '.join(keys)} ORDER BY event_timestamp DESC, _offset DESC) = 1"
        ).fetchall()
        pipe = client.pipeline(transaction=False)
        width = len(keys)
        for i, row in enumerate(table):
            key = f"{prefix}:{view.name}:" + "|".join(str(v) for v in row[:width])
            fields = {c: orjson.dumps(v) for c, v in zip(cols, row[width:-1])}
            pipe.hset(key, mapping={"_ts": row[-1], **fields})
            if i % 5000 == 4999:
                pipe.execute()
        pipe.execute()
        written += len(table)
    return written

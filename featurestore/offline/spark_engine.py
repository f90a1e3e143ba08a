"""Point-in-time features computed by Apache Spark: the semantics of
`featurestore.offline.point_in_time` (DuckDB), for histories larger than one machine.

The same rules, written as Spark SQL: an entity row at time t sees the events of its entity
with event time <= t (in "as_served" mode, only those processed by t and not dropped as
late); its row features are those of the newest such event (ties: higher partition, then
offset); a window of W in tiles of B covers events with ceil(t / B) * B - W < ts <= t; the
TTL makes a whole view NULL when the newest event is older. Each aggregation's SQL comes from
the one aggregation spec (`featurestore.aggregations`), with Spark's dialect where it differs.

Each entity row is joined with its entity's events up to its time (a range join that Spark
distributes by join key), then grouped per row. The history is read as Parquet files: Spark,
like DuckDB, skips files whose names start with `.` or `_`, so staged files and commit
records are never read (docs/storage.md, "The history as a format").

Needs `pip install 'featurestore[spark]'` and Java 17 or newer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from featurestore.errors import ConfigError, FeatureRequestError
from featurestore.offline.history import has_history, view_dir
from featurestore.offline.point_in_time import MODES, result_type, select_features, windowed_by_join
from featurestore.offline.sql import identifier as _q
from featurestore.offline.sql import literal
from featurestore.plan import ViewPlan

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

_SPARK_TYPES = {"int": "BIGINT", "float": "DOUBLE", "str": "STRING", "bool": "BOOLEAN", "datetime": "TIMESTAMP"}


def _driver_memory() -> str:
    """Local mode's heap (the driver runs the tasks): half of this machine's memory, 1 to 16 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return "2g"
    return f"{max(1, min(16, total // 2**31))}g"


def spark_session(master: str | None = None) -> SparkSession:
    """The active Spark session, or a new one on `master` (default `local[*]`: this machine's
    cores) set up as the SQL here expects (UTC, double-quoted identifiers)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("the Spark engine needs PySpark: pip install 'featurestore[spark]' (and Java 17 or newer)") from None
    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        active.conf.set("spark.sql.session.timeZone", "UTC")
        active.conf.set("spark.sql.ansi.doubleQuotedIdentifiers", "true")
        return active
    try:
        builder: Any = SparkSession.builder
        session: SparkSession = (builder.master(master or "local[*]").appName("featurestore")
                   .config("spark.sql.session.timeZone", "UTC")
                   .config("spark.sql.ansi.doubleQuotedIdentifiers", "true")
                   .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                   .config("spark.ui.enabled", "false")
                   .config("spark.ui.showConsoleProgress", "false")
                   .config("spark.sql.shuffle.partitions", str(max(16, 4 * (os.cpu_count() or 1))))
                   .config("spark.driver.memory", os.environ.get("FEATURESTORE_SPARK_DRIVER_MEMORY", _driver_memory()))
                   .getOrCreate())
        session.sparkContext.setLogLevel("ERROR")
        return session
    except Exception as exc:  # no Java, or a cluster that does not answer
        raise ConfigError(f"cannot start Spark on {master or 'local[*]'}: {str(exc).splitlines()[0] if str(exc) else exc!r}. "
                          "Spark needs Java 17 or newer (Debian: apt-get install openjdk-17-jre-headless) and a "
                          "reachable master") from None


def _history(spark: SparkSession, offline_root: Path, view: ViewPlan, snapshot: Sequence[dict[str, Any]] | None) -> DataFrame:
    frame = spark.read.option("mergeSchema", "true").parquet(str(view_dir(offline_root, view.name)))
    if snapshot is not None:
        covered = " OR ".join(f"(_topic = {literal(s['topic'])} AND _partition = {int(s['partition'])} "
                              f"AND _offset <= {int(s['last_offset'])})" for s in snapshot) or "FALSE"
        frame = frame.where(covered)
    return frame


def spark_point_in_time_features(
    spark: SparkSession,
    offline_root: Path,
    view: ViewPlan,
    features: Sequence[str],
    keys: pa.Table,
    t_ms: pa.Array,
    mode: str = "corrected",
    snapshot: Sequence[dict[str, Any]] | None = None,
) -> pa.Table:
    """Feature values of `view` for each row of `keys` at times `t_ms` (int64 ms), computed by
    Spark; the same values as `point_in_time_features` (DuckDB). Rows in the input order."""
    if mode not in MODES:
        raise FeatureRequestError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    types = {f.name: f.dtype for f in view.row_features} | {a.name: a.dtype for a in view.aggregations}
    if not has_history(offline_root, view.name) or len(keys) == 0:
        return pa.table({n: pa.nulls(len(keys), result_type(view, n, types[n])) for n in features})
    entity = keys.append_column("_t", t_ms).append_column("_row", pa.array(range(len(keys)), pa.int64()))
    spark.createDataFrame(entity).createOrReplaceTempView("fs_entity_rows")
    _history(spark, offline_root, view, snapshot).createOrReplaceTempView("fs_history")
    result = spark.sql(spark_view_query(view, features, mode)).toArrow()
    out = {}
    for name in features:
        want = result_type(view, name, types[name])
        col = result.column(name)
        out[name] = col.cast(want) if col.type != want else col
    return pa.table(out)


def spark_view_query(view: ViewPlan, features: Sequence[str], mode: str) -> str:
    """The Spark SQL of one view's features over `fs_entity_rows` (join keys, `_t`, `_row`)
    and `fs_history` (the view's history files)."""
    keys = [k.name for k in view.join_keys]
    rows = {r.name: r for r in view.row_features}
    aggs = [a for a in view.aggregations if a.name in features]
    want_rows = [n for n in features if n in rows]
    served = mode == "as_served"
    key_eq = " AND ".join(f"e.{_q(k)} = h.{_q(k)}" for k in keys)
    casts = ", ".join(f"CAST({_q(k.name)} AS {_SPARK_TYPES[k.dtype]}) AS {_q(k.name)}" for k in view.join_keys)
    hist_cols = ", ".join(_q(c) for c in keys + [name for name, _ in view.history_columns])
    processed = " AND h._pa <= e._t" if served else ""
    ttl = f"l._t - l._latest <= {view.ttl_ms}" if view.ttl_ms is not None else "TRUE"
    bound = f" AND h._ts >= e._t - {view.ttl_ms}" if view.ttl_ms is not None and served else ""
    sql = f"""
    WITH e AS (SELECT {casts}, CAST(_t AS BIGINT) AS _t, _row FROM fs_entity_rows),
    h AS (
        SELECT {hist_cols}, unix_millis(event_timestamp) AS _ts, _partition, _offset,
               unix_millis(_processed_at) AS _pa,
               named_struct('t', unix_millis(event_timestamp), 'p', _partition, 'o', _offset) AS _seq
        FROM fs_history
        {'WHERE NOT coalesce(_late, false)' if served else ''}
    ),
    latest AS (
        SELECT e._row, first(e._t) AS _t, max(h._ts) AS _latest
               {''.join(f', max_by(h.{_q(n)}, h._seq) AS {_q("r_" + n)}' for n in want_rows)}
        FROM e LEFT JOIN h ON {key_eq} AND h._ts <= e._t{processed}{bound}
        GROUP BY e._row
    )"""
    if aggs:
        sql += windowed_by_join(aggs, key_eq, processed, engine="spark")
    return sql + select_features(features, set(rows), ttl, bool(aggs))

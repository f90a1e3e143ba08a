"""Point-in-time correct feature values from the Parquet history, computed by DuckDB.

For an entity row with timestamp t (epoch ms) and a view with TTL:
- the entity is *alive* if its newest event with event time <= t is at most TTL old
  (t - ts <= TTL); otherwise every feature of the view is NULL;
- a row-level feature is the value of that newest event (ties: higher partition, offset);
- an aggregation over window W with tiles of B covers events with
  ceil(t / B) * B - W < ts <= t, exactly as the online store merges tiles (lifetime: every
  event with ts <= t), counting only events whose `where` column is true if it has one.
Events with ts > t are never used: no value from the future. In "as_served" mode, events
processed after t, or dropped online as too late, are not used either.

Row-level features are an ASOF join. Windowed aggregations are window functions over one
time-ordered stream per entity holding its events and its training rows: each training
row's frame is its window, so the cost grows with rows + events, not with rows x events in
a window. "as_served" at each row's time depends on when each event was processed, which is
no frame; it is a range join.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from featurestore.aggregations import FUNCTIONS
from featurestore.errors import FeatureRequestError
from featurestore.offline.history import ARROW_TYPES, has_history
from featurestore.offline.sql import identifier as _q
from featurestore.offline.sql import read_history
from featurestore.plan import AggregationPlan, ViewPlan

_SQL_TYPES = {"int": "BIGINT", "float": "DOUBLE", "str": "VARCHAR", "bool": "BOOLEAN", "datetime": "TIMESTAMPTZ"}


def window_start_sql(agg: AggregationPlan, t: str = "e._t", engine: str = "duckdb") -> str | None:
    """SQL of the exclusive lower event-time bound of the window read at time `t`: the end of
    the tile holding t, less the window (None: lifetime). `engine`: "duckdb" or "spark"."""
    if agg.window_ms is None:
        return None
    b, w = agg.tile_ms, agg.window_ms
    if engine == "spark":
        return f"((({t}) div {b} + CAST(({t}) % {b} > 0 AS BIGINT)) * {b} - {w})"
    return f"(({t} // {b} + ({t} % {b} > 0)::BIGINT) * {b} - {w})"




def agg_sql(agg: AggregationPlan, window: str | None = None, engine: str = "duckdb") -> str:
    """SQL of one aggregation: over the joined rows `h` (window None), or over the named
    window frame of the union `u` (probe rows carry NULL values, so no filter keeps them)."""
    ref: Callable[[str], str] = (lambda c: f"h.{_q(c)}") if window is None else _value
    col = ref(agg.column)
    conds = [f"{col} IS NOT NULL"]
    start = window_start_sql(agg, engine=engine)
    if start is not None and window is None:  # a frame bounds the window itself
        conds.insert(0, f"h._ts > {start}")
    if agg.where is not None:
        conds.append(f"{ref(agg.where)} IS TRUE")
    cond = f"FILTER (WHERE {' AND '.join(conds)})" + (f" OVER {window}" if window else "")
    seq = "h._seq" if window is None else "_seq"
    return FUNCTIONS[agg.function].sql_for(engine)(col, cond, seq, agg.dtype, agg.k or 0)




def _value(column: str) -> str:
    """The union's copy of a history column (NULL on entity rows, even for a join key)."""
    return _q("v:" + column)


def _frame(agg: AggregationPlan) -> str:
    """The window frame of `agg` over the union ordered by time: the events of the window read
    at the current row's time (peers at the same instant included: the upper edge is ts <= t)."""
    start = window_start_sql(agg, "_ts")
    if start is None:
        return "RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
    # ts > start  <=>  ts >= start + 1 (integer ms)  <=>  ts >= _ts - (_ts - start - 1)
    return f"RANGE BETWEEN (_ts - 1 - {start}) PRECEDING AND CURRENT ROW"


def _needs_seq(aggs: Sequence[AggregationPlan]) -> bool:
    """Whether an aggregation orders events by (time, partition, offset)."""
    return any(FUNCTIONS[a.function].ordered for a in aggs)


def _windowed_by_frames(view: ViewPlan, aggs: Sequence[AggregationPlan]) -> str:
    """Windowed aggregations as window functions over the history and the entity rows in one
    time-ordered stream per entity: each entity row's frame is its window (no range join)."""
    keys = ", ".join(_q(k.name) for k in view.join_keys)
    used = dict.fromkeys([a.column for a in aggs] + [a.where for a in aggs if a.where])
    columns = ", ".join(f"{_q(c)} AS {_value(c)}" for c in used)
    frames: dict[str, str] = {}
    for a in aggs:
        frames.setdefault(_frame(a), f"w{len(frames)}")
    values = ", ".join(f"{agg_sql(a, frames[_frame(a)])} AS {_q('a_' + a.name)}" for a in aggs)
    windows = ", ".join(f"{name} AS (PARTITION BY {keys} ORDER BY _ts {frame})" for frame, name in frames.items())
    return f""",
    u AS (
        SELECT {keys}, _ts, {columns}{', _seq' if _needs_seq(aggs) else ''}, NULL::BIGINT AS _row FROM h
        UNION ALL BY NAME
        SELECT {keys}, _t AS _ts, _row FROM e
    ),
    windowed AS (
        SELECT _row, {values}
        FROM u
        WINDOW {windows}
        QUALIFY _row IS NOT NULL
    )"""


#: Training-set modes: every event by event time, or what the online store held at each instant.
MODES = ("corrected", "as_served")


def _view_query(view: ViewPlan, features: Sequence[str], history: str, mode: str, served_at_row_time: bool = True) -> str:
    keys = [k.name for k in view.join_keys]
    rows = {r.name: r for r in view.row_features}
    aggs = [a for a in view.aggregations if a.name in features]
    key_eq = " AND ".join(f"e.{_q(k)} = h.{_q(k)}" for k in keys)
    hist_cols = ", ".join(_q(c) for c in keys + [name for name, _ in view.history_columns])
    want_rows = [n for n in features if n in rows]
    ttl = f"l._t - l._latest <= {view.ttl_ms}" if view.ttl_ms is not None else "TRUE"
    served = mode == "as_served"
    # the global event order, for first / last / last_n and the as-served newest values
    seq = ("row_number() OVER (ORDER BY epoch_ms(event_timestamp), _partition, _offset) AS _seq"
           if served or _needs_seq(aggs) else "NULL AS _seq")
    processed = " AND h._pa <= e._t" if served and served_at_row_time else ""
    sql = f"""
    WITH h AS (
        SELECT {hist_cols}, epoch_ms(event_timestamp) AS _ts, _partition, _offset,
               epoch_ms(_processed_at) AS _pa,
               {seq}
        FROM {history}
        {'WHERE _late IS NOT TRUE' if served else ''}
    ),"""
    if served:
        # what the online store held at e._t: events processed by then and not dropped as late
        bound = f" AND h._ts >= e._t - {view.ttl_ms}" if view.ttl_ms is not None else ""
        sql += f"""
    latest AS (
        SELECT e._row, any_value(e._t) AS _t, max(h._ts) AS _latest
               {''.join(f', arg_max(h.{_q(n)}, h._seq) AS {_q("r_" + n)}' for n in want_rows)}
        FROM e LEFT JOIN h ON {key_eq} AND h._ts <= e._t{processed}{bound}
        GROUP BY e._row
    )"""
    else:
        sql += f"""
    newest AS (
        SELECT * FROM h
        QUALIFY row_number() OVER (PARTITION BY {', '.join(_q(k) for k in keys)}, _ts
                                   ORDER BY _partition DESC, _offset DESC) = 1
    ),
    latest AS (
        SELECT e._row, e._t, h._ts AS _latest{''.join(f', h.{_q(n)} AS {_q("r_" + n)}' for n in want_rows)}
        FROM e ASOF LEFT JOIN newest h ON {key_eq} AND e._t >= h._ts
    )"""
    if aggs and not processed:
        sql += _windowed_by_frames(view, aggs)
    elif aggs:
        # as served at each row's time: which events count depends on the row (processed by
        # then), not only on time, so this one is a range join
        sql += windowed_by_join(aggs, key_eq, processed)
    return sql + select_features(features, set(rows), ttl, bool(aggs))


def windowed_by_join(aggs: Sequence[AggregationPlan], key_eq: str, processed: str, engine: str = "duckdb") -> str:
    """The `windowed` CTE as a range join: each entity row `e` with its entity's events `h` up
    to its time (from the earliest window start), aggregated per row."""
    starts = [window_start_sql(a, engine=engine) for a in aggs]
    if any(x is None for x in starts):
        lower = ""  # a lifetime aggregation reads every event up to e._t
    else:
        lower = " AND h._ts > " + ("least(" + ", ".join(str(x) for x in starts) + ")" if len(starts) > 1 else str(starts[0]))
    return f""",
    windowed AS (
        SELECT e._row{''.join(f', {agg_sql(a, engine=engine)} AS {_q("a_" + a.name)}' for a in aggs)}
        FROM e LEFT JOIN h ON {key_eq} AND h._ts <= e._t{lower}{processed}
        GROUP BY e._row
    )"""


def select_features(features: Sequence[str], row_features: set[str], ttl: str, windowed: bool) -> str:
    """The final SELECT: each feature from `latest` (row features) or `windowed`, NULL when the
    entity has no event yet or its newest is older than the TTL (`ttl`: the SQL condition)."""
    select = []
    for name in features:
        src = f'l.{_q("r_" + name)}' if name in row_features else f'w.{_q("a_" + name)}'
        select.append(f"CASE WHEN l._latest IS NOT NULL AND {ttl} THEN {src} END AS {_q(name)}")
    return f"""
    SELECT {', '.join(select)}
    FROM latest l {'JOIN windowed w ON l._row = w._row' if windowed else ''}
    ORDER BY l._row
    """


def point_in_time_features(
    offline_root: Path,
    view: ViewPlan,
    features: Sequence[str],
    keys: pa.Table,
    t_ms: pa.Array,
    con: duckdb.DuckDBPyConnection | None = None,
    mode: str = "corrected",
    served_at_row_time: bool = True,
    snapshot: Sequence[dict[str, Any]] | None = None,
) -> pa.Table:
    """Feature values of `view` for each row of `keys` (join key columns) at times `t_ms` (int64 ms).

    `mode`: "corrected" uses every event by event time (late ones included); "as_served"
    only events the online store had applied by each instant (processed by then, not late);
    with `served_at_row_time=False`, every event processed so far that was not late (what
    the online store holds now, evaluated at each instant: the consistency check).
    `snapshot` (`history_snapshot`): read the history only as far as it went then.
    Returns a table with one column per feature, rows in the input order.
    """
    if mode not in MODES:
        raise FeatureRequestError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    types = {f.name: f.dtype for f in view.row_features} | {a.name: a.dtype for a in view.aggregations}
    if not has_history(offline_root, view.name):
        return pa.table({n: pa.nulls(len(keys), result_type(view, n, types[n])) for n in features})
    con = con or duckdb.connect()
    e = keys.append_column("_t", t_ms).append_column("_row", pa.array(range(len(keys)), pa.int64()))
    casts = ", ".join(f"CAST({_q(k.name)} AS {_SQL_TYPES[k.dtype]}) AS {_q(k.name)}" for k in view.join_keys)
    con.register("entity_input", e)
    con.execute(f"CREATE OR REPLACE TEMP TABLE e AS SELECT {casts}, _t, _row FROM entity_input")
    con.unregister("entity_input")
    history = read_history(offline_root, view.name, snapshot)
    relation = con.sql(_view_query(view, features, history, mode, served_at_row_time))
    fetch = getattr(relation, "to_arrow_table", None) or relation.arrow  # DuckDB 2.x / 1.x
    return fetch()


def result_type(view: ViewPlan, name: str, dtype: str) -> pa.DataType:
    for a in view.aggregations:
        if a.name == name:
            result = FUNCTIONS[a.function].result_dtype(dtype)
            return pa.list_(ARROW_TYPES[dtype]) if result == "list" else ARROW_TYPES[result]
    return ARROW_TYPES[dtype]

"""The aggregation functions, each defined once (pure): the per-tile statistics it keeps, how
a window's statistics finish into its value online, its SQL offline, and its types.

A tile keeps statistics, and two tiles' statistics merge the same way wherever they meet
(`featurestore.online.fold` for streaming, backfill and `rebuild-online`; the online
reader across an entity's partitions):

| statistic | kept as | two tiles merge by |
| --- | --- | --- |
| `c` count | a float64 column | adding |
| `s` sum, `q` sum of squares | two float64 columns: hi and lo of the exact sum (further terms apart) | exact addition |
| `m` min, `M` max | a float64 column | min, max |
| `f` first, `l` last | the oldest / newest event: (tile, time, offset) and its value | the smaller / greater (time, partition, offset) |
| `n` newest k | the k newest events, as `l` | the k greatest |
| `d` distinct | 64-bit hashes of the values, the `DISTINCT_KEEP` smallest per tile | union, keeping the smallest |

A window merges the statistics of its tiles (`featurestore.plan.windows`), then
`Function.finish` (numeric statistics) or `Function.pick` (items) gives the value; training
sets compute the same value over the raw events with `Function.sql` (DuckDB; Spark's dialect
where it differs in `Function.spark_sql`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: Numeric statistics, kept as float64 columns of one row per tile (in this column order).
PACKED_STATS = "csqmM"
#: Statistics kept as item tables (rows of events or hashes).
ITEM_STATS = "flnd"
#: Order of statistics within a tile set.
STAT_ORDER = PACKED_STATS + ITEM_STATS

#: A window's merged statistics of many entities: statistic -> one value per entity (None: no tile).
Gathered = dict[str, list[Any]]
#: An item of a window: (its order (event time, partition, offset), its value).
Item = tuple[tuple[int, int, int], Any]


@dataclass(frozen=True)
class Function:
    """One aggregation function."""

    name: str
    stats: tuple[str, ...]
    """The per-tile statistics it needs."""
    result: str
    """Its result type: "int", "float", "list" (of the input type), "input" (the input
    column's type), or "sum" (int for int/bool input, else float)."""
    sql: Callable[[str, str, str, str, int], str]
    """SQL of the aggregate over (column, FILTER clause, order column, input dtype, k)."""
    finish: Callable[[Gathered, str], list[Any]] | None = None
    """Numeric functions: the values of many entities from their window's statistics (and the input dtype)."""
    pick: Callable[[list[Item], int], Any] | None = None
    """first / last / last_n: the value from the window's items (and k)."""
    numeric_input: bool = False
    ordered: bool = False
    """It picks events by (event time, partition, offset)."""
    spark_sql: Callable[[str, str, str, str, int], str] | None = None
    """Its Spark SQL where it differs from `sql` (the order column is then a struct of
    (event time, partition, offset))."""

    def sql_for(self, engine: str) -> Callable[[str, str, str, str, int], str]:
        """The SQL of this aggregate for "duckdb" or "spark"."""
        return self.spark_sql or self.sql if engine == "spark" else self.sql

    @property
    def packed(self) -> bool:
        """Its statistics are numeric (packed rows), not item tables."""
        return self.stats[0] in PACKED_STATS

    def result_dtype(self, dtype: str) -> str:
        """The dtype of its values for an input column of `dtype` ("list" values hold `dtype`)."""
        if self.result == "input":
            return dtype
        if self.result == "sum":
            return "int" if dtype in ("int", "bool") else "float"
        return self.result


def _integral(dtype: str) -> bool:
    return dtype in ("int", "bool")


def _sum_sql(col: str, cond: str, dtype: str) -> str:
    zero, target = ("0", "BIGINT") if _integral(dtype) else ("0.0", "DOUBLE")
    return f"coalesce(sum({col}::{target}) {cond}, {zero})::{target}"


def _spread(got: Gathered, squared: bool) -> list[Any]:
    out: list[Any] = []
    for total, squares, count in zip(got["s"], got["q"], got["c"]):
        if not count:
            out.append(None)
            continue
        var = max(0.0, (squares - total * total / count) / count)
        out.append(var if squared else math.sqrt(var))
    return out


def _extreme(stat: str) -> Callable[[Gathered, str], list[Any]]:
    def finish(got: Gathered, dtype: str) -> list[Any]:
        values = got[stat]
        return [None if x is None else int(round(x)) for x in values] if _integral(dtype) else values
    return finish


def _spark_newest(col: str, cond: str, seq: str, dtype: str, k: int) -> str:
    """Spark's last_n: the k values of greatest order, newest first; NULL when none (as DuckDB's)."""
    items = f"collect_list(named_struct('s', {seq}, 'v', {col})) {cond}"
    return (f"CASE WHEN count({col}) {cond} = 0 THEN NULL "
            f"ELSE slice(transform(sort_array({items}, false), x -> x.v), 1, {k}) END")


def _newest(items: list[Item], k: int) -> list[Any]:
    return [v for _, v in sorted(items, key=lambda it: it[0], reverse=True)[:k]]


FUNCTIONS: dict[str, Function] = {f.name: f for f in (
    Function("count", ("c",), "int", lambda col, cond, seq, dtype, k: f"count({col}) {cond}",
             finish=lambda got, dtype: got["c"]),
    Function("sum", ("s",), "sum", lambda col, cond, seq, dtype, k: _sum_sql(col, cond, dtype),
             finish=lambda got, dtype: [int(round(x)) for x in got["s"]] if _integral(dtype) else got["s"],
             numeric_input=True),
    Function("mean", ("s", "c"), "float",
             lambda col, cond, seq, dtype, k: f"(sum({col}::DOUBLE) {cond}) / nullif(count({col}) {cond}, 0)",
             finish=lambda got, dtype: [x / c if c else None for x, c in zip(got["s"], got["c"])], numeric_input=True),
    Function("min", ("m",), "input", lambda col, cond, seq, dtype, k: f"min({col}) {cond}", finish=_extreme("m"),
             numeric_input=True),
    Function("max", ("M",), "input", lambda col, cond, seq, dtype, k: f"max({col}) {cond}", finish=_extreme("M"),
             numeric_input=True),
    Function("stddev", ("c", "s", "q"), "float", lambda col, cond, seq, dtype, k: f"stddev_pop({col}::DOUBLE) {cond}",
             finish=lambda got, dtype: _spread(got, squared=False), numeric_input=True),
    Function("variance", ("c", "s", "q"), "float", lambda col, cond, seq, dtype, k: f"var_pop({col}::DOUBLE) {cond}",
             finish=lambda got, dtype: _spread(got, squared=True), numeric_input=True),
    Function("first", ("f",), "input", lambda col, cond, seq, dtype, k: f"arg_min({col}, {seq}) {cond}",
             pick=lambda items, k: min(items, key=lambda it: it[0])[1], ordered=True,
             spark_sql=lambda col, cond, seq, dtype, k: f"min_by({col}, {seq}) {cond}"),
    Function("last", ("l",), "input", lambda col, cond, seq, dtype, k: f"arg_max({col}, {seq}) {cond}",
             pick=lambda items, k: max(items, key=lambda it: it[0])[1], ordered=True,
             spark_sql=lambda col, cond, seq, dtype, k: f"max_by({col}, {seq}) {cond}"),
    Function("last_n", ("n",), "list", lambda col, cond, seq, dtype, k: f"(list({col} ORDER BY {seq} DESC) {cond})[1:{k}]",
             pick=_newest, ordered=True, spark_sql=_spark_newest),
    Function("count_distinct", ("d",), "int", lambda col, cond, seq, dtype, k: f"count(DISTINCT {col}) {cond}"),
)}
#: The aggregation functions' names, in documentation order.
AGGREGATION_FUNCTIONS: tuple[str, ...] = tuple(FUNCTIONS)


def stats_of(functions: Sequence[str]) -> tuple[str, ...]:
    """The statistics a tile set of these functions keeps, in `STAT_ORDER`."""
    wanted = {s for f in functions for s in FUNCTIONS[f].stats}
    return tuple(s for s in STAT_ORDER if s in wanted)

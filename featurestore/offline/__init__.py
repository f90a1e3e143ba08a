"""Offline store: Hive-partitioned Parquet history and DuckDB point-in-time training sets."""

from featurestore.offline.history import HistoryWriter, history_glob, history_schema
from featurestore.offline.point_in_time import point_in_time_features

__all__ = ["HistoryWriter", "history_glob", "history_schema", "point_in_time_features"]

"""Results of feature requests, convertible to dict, pandas and Arrow."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    import pandas as pd


class OnlineResponse:
    """Online feature values: join key columns, then one column per requested feature.

    A value is None unless its status is `present`: `not_found` (no event for the entity),
    `null` (no value, e.g. the max of an empty window), `expired` (newest event older than
    the view's TTL), `stale` (older than the request's max_staleness) or, for a request-time
    feature, `error` (its function failed for that row: `status_detail(name)` says why). `event_time(name)`
    is the time of the newest event applied to the entity in the feature's view;
    `staleness(name)` is how old that event was when the values were read.
    """

    def __init__(
        self,
        columns: dict[str, list[Any]],
        statuses: Mapping[str, list[str]] | None = None,
        event_ms: dict[str, list[int | None]] | None = None,
        read_at_ms: int | None = None,
        details: dict[str, list[str | None]] | None = None,
        variants: list[str] | None = None,
    ) -> None:
        self._columns = columns
        self.variants = variants
        """For a rollout service, the variant that served each row (None otherwise)."""
        self._details = details or {}
        self._statuses = statuses or {}
        self._event_ms = event_ms or {}
        self.read_at_ms = read_at_ms
        """When the values were evaluated (epoch ms)."""

    def status(self, feature: str) -> list[str]:
        """Per entity row: present, null, not_found, expired, stale, or (request-time
        features) error."""
        return list(self._statuses[feature])

    def status_detail(self, feature: str) -> list[str | None]:
        """Per entity row: why a value has status `error` (what its function raised or
        returned), None elsewhere."""
        return list(self._details.get(feature) or [None] * len(self._statuses[feature]))

    def event_time_ms(self, feature: str) -> list[int | None]:
        """Per entity row: the newest event time (epoch ms) behind the value, None if no event."""
        return list(self._event_ms[feature])

    def event_time(self, feature: str) -> list[dt.datetime | None]:
        """Per entity row: the newest event time behind the value as an aware datetime."""
        return [None if t is None else dt.datetime.fromtimestamp(t / 1000, dt.timezone.utc) for t in self._event_ms[feature]]

    def staleness(self, feature: str) -> list[dt.timedelta | None]:
        """Per entity row: read time minus event time."""
        at = self.read_at_ms or 0
        return [None if t is None else dt.timedelta(milliseconds=at - t) for t in self._event_ms[feature]]

    @property
    def feature_names(self) -> list[str]:
        return list(self._statuses)

    @property
    def column_names(self) -> list[str]:
        """Join keys, then features."""
        return list(self._columns)

    def column(self, name: str) -> list[Any]:
        return self._columns[name]

    def to_dict(self) -> dict[str, list[Any]]:
        return {k: list(v) for k, v in self._columns.items()}

    def to_arrow(self) -> pa.Table:
        return pa.table(self._columns)

    def to_pandas(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame(self._columns)

    def __repr__(self) -> str:
        return f"OnlineResponse({self._columns!r})"


class TrainingSet:
    """A point-in-time correct training set: the entity rows plus one column per feature.

    `manifest` says how it was built (registry version and plan hash, features, mode, a hash
    of the entity rows, and how far each view's history went): `FeatureStore.rebuild_training_set`
    builds the same set from it later, whatever was appended to the history since."""

    def __init__(self, table: pa.Table, manifest: dict[str, Any] | None = None) -> None:
        self._table = table
        self.manifest = manifest or {}

    def write_manifest(self, path: Path | str) -> None:
        """The manifest as JSON (e.g. beside the Parquet file: `train.manifest.json`)."""
        import json

        Path(path).write_text(json.dumps(self.manifest, indent=2, sort_keys=True) + "\n")

    def to_arrow(self) -> pa.Table:
        return self._table

    def to_pandas(self) -> pd.DataFrame:
        frame: pd.DataFrame = self._table.to_pandas()
        return frame

    def to_parquet(self, path: Path | str) -> None:
        pq.write_table(self._table, str(path))

    def __len__(self) -> int:
        return int(self._table.num_rows)

"""Results of feature requests, convertible to dict, pandas and Arrow."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    import pandas as pd


class OnlineResponse:
    """Online feature values: join key columns, then one column per requested feature.

    Missing entities and values past their view's TTL are None.
    """

    def __init__(self, columns: dict[str, list[Any]]) -> None:
        self._columns = columns

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
    """A point-in-time correct training set: the entity rows plus one column per feature."""

    def __init__(self, table: pa.Table) -> None:
        self._table = table

    def to_arrow(self) -> pa.Table:
        return self._table

    def to_pandas(self) -> pd.DataFrame:
        return self._table.to_pandas()

    def to_parquet(self, path: Path | str) -> None:
        pq.write_table(self._table, str(path))

    def __len__(self) -> int:
        return self._table.num_rows

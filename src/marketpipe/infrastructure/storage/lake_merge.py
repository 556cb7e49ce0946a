"""Stored lake files as v2 tables, and the merge of new bars into them (month partitions, upgrades).

A merge works on the stored decimals themselves: rows are never converted to float64 and back, so a month that is
merged again and again keeps every value exactly as it was parsed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from marketpipe.domain.bar_frame import TIMESTAMP_COLUMN
from marketpipe.domain.errors import SchemaError, StorageError
from marketpipe.infrastructure.arrow_frames import to_pandas_exact
from marketpipe.infrastructure.storage.lake_schema import (
    LAKE_FORMAT_V2,
    LAKE_SCHEMA,
    file_format,
    frame_to_lake_table,
)


def read_lake_table(path: Path) -> pa.Table:
    """A stored file as a table of :data:`LAKE_SCHEMA`: a v2 file as it is, a v1 file converted (its rows
    ``written_at`` the file's modification time).

    Raises:
        SchemaError: a v1 file with a column the v2 schema does not have (the message names the file).
        StorageError: the file cannot be read, or claims to be v2 without the v2 schema.
    """
    try:
        table = pq.read_table(path)
        written_at = path.stat().st_mtime_ns // 1000
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"Cannot read {path}: {exc}") from exc
    if file_format(table.schema) == LAKE_FORMAT_V2:
        if not table.schema.equals(LAKE_SCHEMA, check_metadata=False):
            raise StorageError(f"{path} says it is lake format 2 but its schema differs: {table.schema}")
        return table
    return lake_table_from_v1(table, written_at, source=str(path))


def lake_table_from_v1(table: pa.Table, written_at: int, *, source: str = "a v1 file") -> pa.Table:
    """A v1 (float64) table as a v2 table: values exact where they read back as the same float64, nearest
    decimal plus ``float_values`` elsewhere (nothing is lost)."""
    try:
        return frame_to_lake_table(to_pandas_exact(table), written_at)
    except SchemaError as exc:
        raise SchemaError(f"{source}: {exc}") from None


def merge_lake_tables(existing: pa.Table, new: pa.Table) -> pa.Table:
    """``existing`` and ``new`` (each sorted by ``ts_ns``, unique) as one sorted table; where both hold a bar,
    ``new``'s row wins."""
    new_ts = new.column(TIMESTAMP_COLUMN).to_numpy()
    old_ts = existing.column(TIMESTAMP_COLUMN).to_numpy()
    kept = existing.filter(pa.array(~np.isin(old_ts, new_ts, assume_unique=True)))
    merged = pa.concat_tables([kept, new])
    ts = merged.column(TIMESTAMP_COLUMN).to_numpy()
    if len(ts) > 1 and not bool(np.all(np.diff(ts) > 0)):
        merged = merged.take(np.argsort(ts, kind="stable"))
    return merged.combine_chunks()

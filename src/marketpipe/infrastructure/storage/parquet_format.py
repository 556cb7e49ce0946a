"""How marketpipe encodes Parquet files: compression, encodings, row groups, statistics.

One place, so every writer of the lake produces files with the same layout. Integer columns (timestamps,
counts) use DELTA_BINARY_PACKED, which turns regularly spaced timestamps into a few bits per row; dictionary
encoding is off because prices rarely repeat exactly. Statistics are written for every column so readers
(DuckDB, pyarrow) can skip row groups by time.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from marketpipe.domain.errors import InvalidInputError

COMPRESSIONS = ("zstd", "snappy", "gzip", "brotli", "lz4", "none")
DEFAULT_COMPRESSION = "zstd"
DEFAULT_ROW_GROUP_SIZE = 64 * 1024


def check_compression(compression: str) -> str:
    """Return the normalised codec name or raise InvalidInputError."""
    codec = str(compression).lower()
    if codec not in COMPRESSIONS:
        raise InvalidInputError(f"Unknown compression {compression!r}; choose one of {', '.join(COMPRESSIONS)}")
    return codec


def write_bars_table(
    table: pa.Table,
    path: Path,
    *,
    compression: str = DEFAULT_COMPRESSION,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    sort_column: str | None = "ts_ns",
) -> None:
    """Write ``table`` to ``path`` (not atomically: use :func:`atomic_write` around it)."""
    integer_columns = [f.name for f in table.schema if pa.types.is_integer(f.type) or pa.types.is_timestamp(f.type)]
    sorting = None
    if sort_column is not None and sort_column in table.column_names:
        sorting = [pq.SortingColumn(table.column_names.index(sort_column))]
    pq.write_table(
        table,
        path,
        compression=check_compression(compression),
        row_group_size=row_group_size,
        use_dictionary=[f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_dictionary(f.type)],
        column_encoding={name: "DELTA_BINARY_PACKED" for name in integer_columns},
        write_statistics=True,
        sorting_columns=sorting,
    )

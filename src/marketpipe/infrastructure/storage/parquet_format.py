"""How marketpipe encodes Parquet files: compression, encodings, row groups, statistics.

One place, so every writer of the lake produces files with the same layout. Integer columns (timestamps,
counts) use DELTA_BINARY_PACKED, which turns regularly spaced timestamps into a few bits per row; dictionary
encoding is off because prices rarely repeat exactly. Statistics are written for every column so readers
(DuckDB, pyarrow) can skip row groups by time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from marketpipe.domain.errors import InvalidInputError, SchemaError
from marketpipe.infrastructure.storage.atomic import atomic_write

COMPRESSIONS = ("zstd", "snappy", "gzip", "brotli", "lz4", "none")
DEFAULT_COMPRESSION = "zstd"
DEFAULT_ROW_GROUP_SIZE = 64 * 1024


def bars_to_table(bars: pd.DataFrame, *, nthreads: int | None = None) -> pa.Table:
    """A validated bar frame as an Arrow table; SchemaError for an extra column Parquet cannot store (complex
    numbers, arbitrary Python objects)."""
    try:
        return pa.Table.from_pandas(bars, preserve_index=False, nthreads=nthreads)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise SchemaError(f"A column cannot be stored in Parquet: {exc}") from None


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


@dataclass(frozen=True, slots=True)
class ParquetWriteOptions:
    """Compression and row-group size of a writer, and the one way it puts a table on disk (atomically)."""

    compression: str = DEFAULT_COMPRESSION
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE

    def __post_init__(self) -> None:
        object.__setattr__(self, "compression", check_compression(self.compression))
        if not isinstance(self.row_group_size, int) or self.row_group_size < 1:
            raise InvalidInputError(f"row_group_size must be a positive integer, got {self.row_group_size!r}")

    def write(self, table: pa.Table, target: Path, *, overwrite: bool = True) -> Path:
        """Write ``table`` to ``target`` through a temporary file and a rename (see ``atomic_write``)."""
        return atomic_write(
            target,
            lambda path: write_bars_table(
                table, path, compression=self.compression, row_group_size=self.row_group_size
            ),
            overwrite=overwrite,
        )

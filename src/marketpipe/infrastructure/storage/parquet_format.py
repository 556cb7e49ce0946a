"""How marketpipe encodes Parquet files: compression, encodings, row groups, statistics.

One place, so every writer of the lake produces files with the same layout. Integer columns (timestamps,
counts, and in format v2 the prices: DECIMAL(18,8) stored on INT64) use DELTA_BINARY_PACKED, which turns regularly
spaced timestamps and slowly moving prices into a few bits per row; v2's 16-byte volumes use BYTE_STREAM_SPLIT,
which lines their high (mostly zero) bytes up for zstd; dictionary encoding is off because prices rarely repeat
exactly. Statistics are written for every column and ``sorting_columns`` declares ``ts_ns``, so readers (DuckDB,
pyarrow, Spark) skip row groups by time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from marketpipe.config import ENV_LAKE_FORMAT
from marketpipe.domain.errors import InvalidInputError, SchemaError
from marketpipe.infrastructure.arrow_decimals import with_float64_decimals
from marketpipe.infrastructure.storage.atomic import atomic_write
from marketpipe.infrastructure.storage.lake_schema import (
    LAKE_FORMAT_V2,
    LAKE_FORMATS,
    LAKE_SCHEMA,
    PRICE_TYPE,
    frame_to_lake_table,
    now_micros,
)

COMPRESSIONS = ("zstd", "snappy", "gzip", "brotli", "lz4", "none")
DEFAULT_COMPRESSION = "zstd"
DEFAULT_ROW_GROUP_SIZE = 64 * 1024


def bars_to_table(bars: pd.DataFrame, *, nthreads: int | None = None) -> pa.Table:
    """A validated bar frame as an Arrow table as it is (format v1); SchemaError for an extra column Parquet cannot
    store (complex numbers, arbitrary Python objects)."""
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


def _lake_encoding(data_type: pa.DataType) -> str | None:
    """DELTA_BINARY_PACKED for what is stored on INT64 (times, counts, DECIMAL(18,8) prices), BYTE_STREAM_SPLIT for
    the 16-byte DECIMAL(38,8) quantities, the writer's default (PLAIN) for the rest."""
    if pa.types.is_integer(data_type) or pa.types.is_timestamp(data_type) or data_type == PRICE_TYPE:
        return "DELTA_BINARY_PACKED"
    return None


LAKE_ENCODINGS = {f.name: e for f in LAKE_SCHEMA if (e := _lake_encoding(f.type)) is not None}
LAKE_SORTING = [pq.SortingColumn(LAKE_SCHEMA.names.index("ts_ns"))]


def write_lake_table(
    table: pa.Table,
    path: Path,
    *,
    compression: str = DEFAULT_COMPRESSION,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
) -> None:
    """Write a table of the v2 :data:`LAKE_SCHEMA` to ``path`` (not atomically: use :func:`atomic_write`)."""
    if not table.schema.equals(LAKE_SCHEMA, check_metadata=False):
        raise SchemaError(f"Not a lake v2 table: {table.schema}")
    pq.write_table(
        table.replace_schema_metadata(LAKE_SCHEMA.metadata),
        path,
        compression=check_compression(compression),
        row_group_size=row_group_size,
        use_dictionary=False,
        column_encoding=LAKE_ENCODINGS,
        store_decimal_as_integer=True,
        write_statistics=True,
        sorting_columns=LAKE_SORTING,
    )


def check_lake_format(lake_format: int | str) -> int:
    """The lake format number (1 or 2) or InvalidInputError."""
    try:
        number = int(lake_format)
    except (TypeError, ValueError):
        number = 0
    if number not in LAKE_FORMATS:
        raise InvalidInputError(f"Unknown lake format {lake_format!r}; use 1 (float64) or {LAKE_FORMAT_V2} (decimal)")
    return number


def resolve_lake_format(lake_format: int | str | None) -> int:
    """The format new files are written in: ``lake_format`` if given, else ``MARKETPIPE_LAKE_FORMAT``, else 2."""
    if lake_format is None:
        lake_format = os.environ.get(ENV_LAKE_FORMAT, "").strip() or LAKE_FORMAT_V2
    return check_lake_format(lake_format)


@dataclass(frozen=True, slots=True)
class ParquetWriteOptions:
    """How a writer puts bars on disk: lake format, compression, row-group size, and the one atomic write."""

    compression: str = DEFAULT_COMPRESSION
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE
    lake_format: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "compression", check_compression(self.compression))
        object.__setattr__(self, "lake_format", resolve_lake_format(self.lake_format))
        if not isinstance(self.row_group_size, int) or self.row_group_size < 1:
            raise InvalidInputError(f"row_group_size must be a positive integer, got {self.row_group_size!r}")

    @property
    def is_v2(self) -> bool:
        return self.lake_format == LAKE_FORMAT_V2

    def table_of(self, bars: pd.DataFrame, written_at: int | None = None) -> pa.Table:
        """A validated bar frame as the table this writer stores: the v2 lake schema (rows written ``written_at``,
        default now), or v1's float64 columns as given."""
        if self.is_v2:
            return frame_to_lake_table(bars, now_micros() if written_at is None else written_at)
        return bars_to_table(with_float64_decimals(bars))

    def write(self, table: pa.Table, target: Path, *, overwrite: bool = True, temp_dir: Path | None = None) -> Path:
        """Write ``table`` to ``target`` through a temporary file (in ``temp_dir``) and a rename (``atomic_write``)."""
        writer = write_lake_table if table.schema.equals(LAKE_SCHEMA, check_metadata=False) else write_bars_table

        def write(path: Path) -> None:
            writer(table, path, compression=self.compression, row_group_size=self.row_group_size)

        return atomic_write(target, write, overwrite=overwrite, temp_dir=temp_dir)

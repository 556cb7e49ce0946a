"""Reading bars from lake files: projection and time filters pushed into the Parquet scan, duplicates resolved.

Files are read in parallel threads, each one only in the row groups whose ``ts_ns`` statistics meet the range and
only in the columns asked for. Format v1 (float64) and v2 (decimal) files are read side by side: v2 decimals become
float64 correctly rounded (bit-identical to ``float`` of the decimal's text), or stay decimals for exact readers.
When two files hold the same bar (a backfill job beside the original, a day file beside a month file), the bar
written last wins: by the rows' ``written_at`` (v2), or the file's modification time (v1 files carry no such
column).
"""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from marketpipe.domain.bar_frame import (
    PRICE_COLUMNS,
    REQUIRED_COLUMNS,
    TIMESTAMP_COLUMN,
    empty_bar_frame,
    ns_to_timestamps,
)
from marketpipe.domain.errors import InvalidInputError, SchemaError, StorageError
from marketpipe.infrastructure.arrow_decimals import is_decimal
from marketpipe.infrastructure.arrow_frames import to_pandas_exact
from marketpipe.infrastructure.storage.lake_layout import Granularity, LakeFile, overlapping_files
from marketpipe.infrastructure.storage.lake_schema import (
    BAR_COLUMNS,
    DECIMAL_COLUMNS,
    FLOAT_VALUES,
    INTERNAL_COLUMNS,
    LAKE_FORMAT_V2,
    WRITTEN_AT,
    decimal_floats,
    decode_values,
    file_format,
)

RANK = "__written_at"
READ_ATTEMPTS = 3


@dataclass(frozen=True)
class _Request:
    columns: list[str] | None
    start_ns: int | None
    end_ns: int | None
    exact: bool
    ranks: bool


def read_bar_files(
    files: list[LakeFile],
    *,
    columns: list[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    keep_duplicates: bool = False,
    timestamps: bool = False,
    exact: bool = False,
) -> pd.DataFrame:
    """Bars of ``files`` with ``start_ns <= ts_ns < end_ns``, sorted by ``ts_ns``, one row per timestamp.

    ``columns`` selects columns (``ts_ns`` is always included); without it, every bar column that holds a value
    in some file is returned (a v2 file's columns that are null throughout are not). ``keep_duplicates=True``
    returns every stored row (for quality reports). ``timestamps=True`` returns ``ts_ns`` as a first column
    ``timestamp`` (datetime64[ns, UTC]). ``exact=True`` returns decimal columns as Arrow decimals
    (``decimal128(p, 8)[pyarrow]``) where every value is an exact decimal, float64 otherwise (the four prices
    together: all decimals or all floats). Raises SchemaError for unknown columns and StorageError for unreadable
    files.
    """
    if columns is not None:
        if not all(isinstance(c, str) for c in columns):
            raise InvalidInputError(f"Column names must be strings: {columns!r}")
        columns = list(dict.fromkeys([TIMESTAMP_COLUMN, *columns]))
    files = sorted(files, key=lambda f: (f.key.period, f.key.granularity is Granularity.DAY, f.name))
    request = _Request(columns, start_ns, end_ns, exact, ranks=not keep_duplicates and bool(overlapping_files(files)))
    table = _read_with_retries(files, request)
    increasing = table is None or _strictly_increasing(table)
    if not increasing and not keep_duplicates and not request.ranks:
        # Bars repeated across files whose periods do not meet (trading days in different time zones): rank them.
        table = _read_with_retries(files, dataclasses.replace(request, ranks=True))
    if table is None:  # nothing listed, or every listed file deleted meanwhile
        empty = empty_bar_frame(columns)
        return ns_to_timestamps(empty) if timestamps else empty
    if not increasing:
        table = _one_row_per_bar(table, keep_duplicates)
    if RANK in table.column_names:
        table = table.drop_columns([RANK])
    if exact:  # prices are compared with each other: all decimals, or (if one of them needs floats) all floats
        prices = [name for name in PRICE_COLUMNS if name in table.column_names]
        if any(pa.types.is_floating(table.schema.field(name).type) for name in prices):
            table = _decimals_as_floats(table, set(prices))
    if columns is not None:
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            stored = sorted({name for f in files for name in _stored_names(f)})
            raise SchemaError(f"Unknown columns {missing}; stored columns are {stored}")
        table = table.select(columns)
    else:  # the lake schema's order (v1 files stored their own), then any column only v1 files have
        known = [name for name in BAR_COLUMNS if name in table.column_names]
        table = table.select([*known, *(name for name in table.column_names if name not in known)])
    if timestamps:  # a zero-copy view of ts_ns, first
        stamps = table.column(TIMESTAMP_COLUMN).cast(pa.timestamp("ns", tz="UTC"))
        table = table.drop_columns([TIMESTAMP_COLUMN]).add_column(0, "timestamp", stamps)
    return to_pandas_exact(table, decimals_as_arrow=exact)


def _read_with_retries(files: list[LakeFile], request: _Request) -> pa.Table | None:
    for attempt in range(1, READ_ATTEMPTS + 1):
        present = files if attempt == 1 else [f for f in files if f.path.exists()]
        try:
            return _scan(present, request) if present else None
        except (OSError, pa.ArrowException) as exc:
            # A concurrent delete (and maybe re-write) may have swapped a listed file: retry with what is there.
            if attempt == READ_ATTEMPTS:
                raise StorageError(f"Cannot read lake files: {exc}") from exc
    return None


def _scan(files: list[LakeFile], request: _Request) -> pa.Table | None:
    """The rows of ``files``, decoded and concatenated in file order (None if every one was deleted)."""
    if len(files) == 1:  # one file: its columns are decoded in parallel instead
        found = [_read_one(files[0], request, use_threads=True)]
    else:
        with ThreadPoolExecutor(max_workers=min(len(files), os.cpu_count() or 1)) as pool:
            found = list(pool.map(lambda lake_file: _read_one(lake_file, request), files))
    tables = [t for t in found if t is not None]
    if not tables:
        return None
    return _concat(tables)


def _read_one(lake_file: LakeFile, request: _Request, *, use_threads: bool = False) -> pa.Table | None:
    """One file's rows in the range, decoded (None if the file is gone; once open, a concurrent delete or
    replace cannot affect it)."""
    try:
        parquet = pq.ParquetFile(lake_file.path)
    except FileNotFoundError:
        return None
    with parquet:
        is_v2 = file_format(parquet.schema_arrow) == LAKE_FORMAT_V2
        wanted = _file_columns(parquet, request, is_v2)
        table = _read_range(parquet, wanted, request.start_ns, request.end_ns, use_threads)
    table = decode_values(table, exact=request.exact)
    if request.ranks:
        if WRITTEN_AT in table.column_names:
            rank = table.column(WRITTEN_AT).cast(pa.int64())
            table = table.drop_columns([WRITTEN_AT])
        else:
            rank = pa.array(np.full(table.num_rows, lake_file.modified_us(), dtype=np.int64))
        table = table.append_column(RANK, rank)
    return table


def _file_columns(parquet: pq.ParquetFile, request: _Request, is_v2: bool) -> list[str]:
    """What to read of one file: the requested columns it has (all its bar columns when none were requested,
    leaving out v2 optional columns that are null throughout), their ``float_values`` where any is set, and
    ``written_at`` when ranks are needed."""
    names = parquet.schema_arrow.names
    if not is_v2:
        return list(names) if request.columns is None else [c for c in request.columns if c in names]
    with_values = _columns_with_values(parquet.metadata)
    if request.columns is not None:
        wanted = [c for c in request.columns if c in names and c not in INTERNAL_COLUMNS]
    else:
        wanted = [c for c in names if c not in INTERNAL_COLUMNS and (c in REQUIRED_COLUMNS or c in with_values)]
    wanted += [f"{FLOAT_VALUES}.{c}" for c in wanted if c in DECIMAL_COLUMNS and f"{FLOAT_VALUES}.{c}" in with_values]
    if request.ranks:
        wanted.append(WRITTEN_AT)
    return wanted


def _columns_with_values(metadata: pq.FileMetaData) -> set[str]:
    """Column paths holding a non-null value in some row group (unknown statistics count as holding one)."""
    found = set()
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for i in range(group.num_columns):
            chunk = group.column(i)
            stats = chunk.statistics
            if stats is None or not stats.has_null_count or stats.null_count < chunk.num_values:
                found.add(chunk.path_in_schema)
    return found


def _read_range(
    parquet: pq.ParquetFile, columns: list[str], start_ns: int | None, end_ns: int | None, use_threads: bool
) -> pa.Table:
    """Rows in ``[start_ns, end_ns)``: row groups chosen by statistics, edges cut by binary search.

    Files declaring ``sorting_columns = ts_ns`` (every file marketpipe writes) need no per-row filter; other files
    are filtered row by row.
    """
    metadata = parquet.metadata
    index = parquet.schema_arrow.names.index(TIMESTAMP_COLUMN)
    groups, is_sorted = [], metadata.num_row_groups > 0
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        sorting = group.sorting_columns
        is_sorted = is_sorted and bool(sorting) and sorting[0].column_index == index and not sorting[0].descending
        stats = group.column(index).statistics
        if (
            stats is not None
            and stats.has_min_max
            and ((end_ns is not None and stats.min >= end_ns) or (start_ns is not None and stats.max < start_ns))
        ):
            continue
        groups.append(i)
    if TIMESTAMP_COLUMN not in columns:
        columns = [TIMESTAMP_COLUMN, *columns]
    table = parquet.read_row_groups(groups, columns=columns, use_threads=use_threads)
    if start_ns is None and end_ns is None:
        return table
    ts = table.column(TIMESTAMP_COLUMN).to_numpy()
    if is_sorted:
        low = 0 if start_ns is None else int(np.searchsorted(ts, start_ns, side="left"))
        high = len(ts) if end_ns is None else int(np.searchsorted(ts, end_ns, side="left"))
        return table.slice(low, max(high - low, 0))
    return table.filter(_time_filter(start_ns, end_ns))


def _time_filter(start_ns: int | None, end_ns: int | None) -> pc.Expression:
    keep = pc.scalar(True)
    if start_ns is not None:
        keep = keep & (ds.field(TIMESTAMP_COLUMN) >= pa.scalar(int(start_ns), pa.int64()))
    if end_ns is not None:
        keep = keep & (ds.field(TIMESTAMP_COLUMN) < pa.scalar(int(end_ns), pa.int64()))
    return keep


def _concat(tables: list[pa.Table]) -> pa.Table:
    """One table of decoded file tables; a column that is decimal in one and float64 in another becomes float64."""
    if len(tables) == 1:
        return tables[0]
    types: dict[str, set[pa.DataType]] = {}
    for table in tables:
        for field in table.schema:
            types.setdefault(field.name, set()).add(field.type)
    mixed = {name for name, kinds in types.items() if len(kinds) > 1 and any(is_decimal(k) for k in kinds)}
    if mixed:
        tables = [_decimals_as_floats(table, mixed) for table in tables]
    return pa.concat_tables(tables, promote_options="permissive")


def _decimals_as_floats(table: pa.Table, names: set[str]) -> pa.Table:
    for name in names & set(table.column_names):
        column = table.column(name)
        if is_decimal(column.type):
            table = table.set_column(table.column_names.index(name), name, decimal_floats(column))
    return table


def _strictly_increasing(table: pa.Table) -> bool:
    ts = table.column(TIMESTAMP_COLUMN).to_numpy()
    return len(ts) < 2 or bool(np.all(np.diff(ts) > 0))


def _one_row_per_bar(table: pa.Table, keep_duplicates: bool) -> pa.Table:
    """A table whose ``ts_ns`` is not strictly increasing, sorted by it; unless ``keep_duplicates``, the
    last-written row of each bar only."""
    ts = table.column(TIMESTAMP_COLUMN).to_numpy()
    if keep_duplicates or RANK not in table.column_names:
        return table.take(np.argsort(ts, kind="stable"))
    # Rank every row by when it was written, keep the newest per timestamp (the later file on a tie).
    order = np.lexsort((np.arange(len(ts)), table.column(RANK).to_numpy(), ts))
    ts_sorted = ts[order]
    keep = np.r_[ts_sorted[1:] != ts_sorted[:-1], True]
    return table.take(order[keep])


def _stored_names(lake_file: LakeFile) -> list[str]:
    try:
        return [n for n in pq.read_schema(lake_file.path).names if n not in INTERNAL_COLUMNS]
    except (OSError, pa.ArrowException):
        return []

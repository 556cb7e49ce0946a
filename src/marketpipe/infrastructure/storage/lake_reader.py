"""Reading bars from lake files: projection and time filters pushed into the Parquet scan, duplicates resolved.

Files are scanned together by ``pyarrow.dataset`` (parallel, row groups skipped by their ``ts_ns`` statistics).
When two files hold the same bar (a backfill job beside the original, a day file beside a month file), the
bar from the most recently written file wins.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from marketpipe.domain.bar_frame import TIMESTAMP_COLUMN, empty_bar_frame, ns_to_timestamps
from marketpipe.domain.errors import InvalidInputError, SchemaError, StorageError
from marketpipe.infrastructure.arrow_frames import to_pandas_exact
from marketpipe.infrastructure.storage.lake_layout import LakeFile

FILENAME_FIELD = "__filename"
READ_ATTEMPTS = 3


def read_bar_files(
    files: list[LakeFile],
    *,
    columns: list[str] | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    keep_duplicates: bool = False,
    timestamps: bool = False,
) -> pd.DataFrame:
    """Bars of ``files`` with ``start_ns <= ts_ns < end_ns``, sorted by ``ts_ns``, one row per timestamp.

    ``columns`` selects columns (``ts_ns`` is always included). ``keep_duplicates=True`` returns every stored
    row (for quality reports). ``timestamps=True`` returns ``ts_ns`` as a first column ``timestamp``
    (datetime64[ns, UTC]), converted in Arrow without copying. Raises SchemaError for unknown columns and
    StorageError for unreadable files.
    """
    if columns is not None:
        if not all(isinstance(c, str) for c in columns):
            raise InvalidInputError(f"Column names must be strings: {columns!r}")
        columns = list(dict.fromkeys([TIMESTAMP_COLUMN, *columns]))
    for attempt in range(1, READ_ATTEMPTS + 1):
        present = files if attempt == 1 else [f for f in files if f.path.exists()]
        try:
            table = _scan(present, columns, start_ns, end_ns, keep_duplicates) if present else None
            if table is None:  # every listed file was deleted meanwhile
                empty = empty_bar_frame(columns)
                return ns_to_timestamps(empty) if timestamps else empty
            break
        except (OSError, pa.ArrowException) as exc:
            # A concurrent delete (and maybe re-write) may have swapped a listed file: retry with what is there.
            if attempt == READ_ATTEMPTS:
                raise StorageError(f"Cannot read lake files: {exc}") from exc
    if timestamps:
        stamps = table.column(TIMESTAMP_COLUMN).cast(pa.timestamp("ns", tz="UTC"))
        table = table.drop_columns([TIMESTAMP_COLUMN]).add_column(0, "timestamp", stamps)
    return to_pandas_exact(table)


def _scan(
    files: list[LakeFile], columns: list[str] | None, start_ns: int | None, end_ns: int | None, keep_duplicates: bool
) -> pa.Table | None:
    """The rows of ``files`` (None if every one of them was deleted since it was listed)."""
    paths = [str(f.path) for f in files]
    if len(paths) == 1:  # one file: its columns are decoded in parallel instead
        found = [_read_one(paths[0], columns, start_ns, end_ns, use_threads=True)]
    else:
        with ThreadPoolExecutor(max_workers=min(len(paths), os.cpu_count() or 1)) as pool:
            found = list(pool.map(lambda path: _read_one(path, columns, start_ns, end_ns), paths))
    # A file deleted between the listing and its opening is left out, as if listed a moment later.
    files = [f for f, t in zip(files, found, strict=True) if t is not None]
    paths = [str(f.path) for f in files]
    tables = [t for t in found if t is not None]
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    if columns is not None:
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            stored = pa.unify_schemas([pq.read_schema(p) for p in paths], promote_options="permissive").names
            raise SchemaError(f"Unknown columns {missing}; stored columns are {stored}")
        table = table.select(columns)
    ts = table.column(TIMESTAMP_COLUMN).to_numpy()
    if len(ts) > 1 and not bool(np.all(np.diff(ts) > 0)):
        if keep_duplicates:
            return table.take(np.argsort(ts, kind="stable"))
        schema = pa.unify_schemas([pq.read_schema(p) for p in paths], promote_options="permissive")
        dataset = ds.dataset(paths, schema=schema, format="parquet")
        table = _sorted_newest_wins(dataset, table, files, columns, start_ns, end_ns)
    return table


def _read_one(
    path: str, columns: list[str] | None, start_ns: int | None, end_ns: int | None, *, use_threads: bool = False
) -> pa.Table | None:
    """One file's rows in ``[start_ns, end_ns)``: row groups chosen by statistics, edges cut by binary search.

    Files declaring ``sorting_columns = ts_ns`` (every file marketpipe writes) need no per-row filter; other files
    are filtered row by row. None if the file is gone; once open, a concurrent delete or replace cannot affect it.
    """
    try:
        parquet = pq.ParquetFile(path)
    except FileNotFoundError:
        return None
    with parquet:
        return _read_open(parquet, columns, start_ns, end_ns, use_threads=use_threads)


def _read_open(
    parquet: pq.ParquetFile,
    columns: list[str] | None,
    start_ns: int | None,
    end_ns: int | None,
    *,
    use_threads: bool = False,
) -> pa.Table:
    metadata = parquet.metadata
    names = parquet.schema_arrow.names
    index = names.index(TIMESTAMP_COLUMN)
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
    wanted = None if columns is None else [c for c in columns if c in names]
    table = parquet.read_row_groups(groups, columns=wanted, use_threads=use_threads)
    if start_ns is None and end_ns is None:
        return table
    ts = table.column(TIMESTAMP_COLUMN).to_numpy()
    if is_sorted:
        low = 0 if start_ns is None else int(np.searchsorted(ts, start_ns, side="left"))
        high = len(ts) if end_ns is None else int(np.searchsorted(ts, end_ns, side="left"))
        return table.slice(low, max(high - low, 0))
    return table.filter(_time_filter(start_ns, end_ns))


def _time_filter(start_ns: int | None, end_ns: int | None) -> pc.Expression | None:
    expression = None
    if start_ns is not None:
        expression = ds.field(TIMESTAMP_COLUMN) >= pa.scalar(int(start_ns), pa.int64())
    if end_ns is not None:
        upper = ds.field(TIMESTAMP_COLUMN) < pa.scalar(int(end_ns), pa.int64())
        expression = upper if expression is None else expression & upper
    return expression


def _sorted_newest_wins(
    dataset: ds.Dataset,
    table: pa.Table,
    files: list[LakeFile],
    columns: list[str] | None,
    start_ns: int | None,
    end_ns: int | None,
) -> pa.Table:
    ts = table.column(TIMESTAMP_COLUMN).to_numpy()
    order = np.argsort(ts, kind="stable")
    if bool(np.all(np.diff(ts[order]) > 0)):
        return table.take(order)
    # Duplicates: rank every row by when its file was written, keep the newest per timestamp.
    wanted = (columns or dataset.schema.names) + [FILENAME_FIELD]
    table = dataset.to_table(columns=wanted, filter=_time_filter(start_ns, end_ns))
    written = {str(f.path): _mtime_ns(f) for f in files}
    rank = np.array([written.get(name, 0) for name in table.column(FILENAME_FIELD).to_pylist()], dtype=np.int64)
    ts = table.column(TIMESTAMP_COLUMN).to_numpy()
    order = np.lexsort((rank, ts))
    ts_sorted = ts[order]
    keep = np.r_[ts_sorted[1:] != ts_sorted[:-1], True]
    return table.drop_columns([FILENAME_FIELD]).take(order[keep])


def _mtime_ns(lake_file: LakeFile) -> int:
    try:
        return lake_file.path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0

"""ParquetManager: month-partitioned warm storage (seed 004), one file per (interval, symbol, month).

Layout: ``{root}/frame=1h/symbol=BTCUSDT/date=2024-01/data.parquet``, beside the day/job partitions of
ParquetStorageEngine under the same hive keys (see docs/storage.md). Writing a month that exists merges: rows
are de-duplicated on the bar timestamp with the newer write winning, sorted, and the file is replaced
atomically under an inter-process lock.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from marketpipe.domain.bar_frame import (
    TIMESTAMP_COLUMN,
    timestamps_to_ns,
    validate_bar_frame,
)
from marketpipe.domain.errors import DataValidationError, InvalidInputError, PartitionNotFoundError
from marketpipe.domain.value_objects import Interval, Symbol, datetime_to_ns
from marketpipe.infrastructure.storage.atomic import list_dir, path_lock, remove_stale_temp_files
from marketpipe.infrastructure.storage.lake_layout import (
    PARQUET_SUFFIX,
    Granularity,
    LakeFile,
    PartitionKey,
    hive_value,
    iter_lake_files,
    lake_temp_dir,
    parse_period,
    remove_empty_dirs,
    summarize_files,
)
from marketpipe.infrastructure.storage.lake_merge import merge_lake_tables, read_lake_table
from marketpipe.infrastructure.storage.lake_reader import read_bar_files
from marketpipe.infrastructure.storage.lake_schema import LAKE_FORMAT_V2, file_format
from marketpipe.infrastructure.storage.parquet_format import DEFAULT_COMPRESSION, ParquetWriteOptions

log = logging.getLogger(__name__)

MONTH_ROW_GROUP_SIZE = 16_384  # about 11 days of 1m bars: a one-day query reads one or two row groups


class ParquetManager:
    """Month partitions of bars, read by date range with partition pruning, projection and row-group skipping.

    Frames passed in have a ``timestamp`` column (datetime; naive means UTC) or ``ts_ns`` (int64 epoch ns), and
    ``open``, ``high``, ``low``, ``close``, ``volume`` (float64, or exact Arrow decimals); optional columns of the
    lake's schema (quote/taker volumes, ``trade_count``, ...) are kept. Frames returned have ``timestamp``
    (datetime64[ns, UTC]) first, sorted ascending, and float64 prices (bit-identical to the stored decimals' text).

    Parameters:
        root: the lake's root directory.
        compression: ``zstd`` (default), ``snappy``, ``gzip``, ``brotli``, ``lz4`` or ``none``.
        row_group_size: rows per row group (default 16,384: about 11 days of 1m bars).
        lake_format: 2 (exact decimals, default) or 1 (float64); default ``MARKETPIPE_LAKE_FORMAT`` or 2.

    Raises:
        SchemaError, EmptyDataError, DataValidationError: a frame with wrong columns/types or bad bars.
        InvalidInputError: a bad symbol, interval, month, compression or date range.
        PartitionNotFoundError: statistics of a month that is not stored.

    Examples:
        >>> manager = ParquetManager("data/lake")  # doctest: +SKIP
        >>> manager.write_partition(df, "btcusdt", "1h", 2024, 1)  # doctest: +SKIP
        >>> manager.read_date_range("btcusdt", "1h", datetime(2024, 1, 1), datetime(2024, 3, 31))  # doctest: +SKIP
        >>> manager.list_partitions("btcusdt", "1h")  # doctest: +SKIP
        [(2024, 1), (2024, 2), (2024, 3)]
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        compression: str = DEFAULT_COMPRESSION,
        *,
        row_group_size: int = MONTH_ROW_GROUP_SIZE,
        lake_format: int | None = None,
    ) -> None:
        self._root = Path(root)
        self._options = ParquetWriteOptions(compression, row_group_size, lake_format)

    @property
    def root(self) -> Path:
        return self._root

    @property
    def lake_format(self) -> int:
        return int(self._options.lake_format or LAKE_FORMAT_V2)

    def get_partition_path(self, symbol: str, interval: str, year: int, month: int) -> Path:
        return PartitionKey.month(interval, symbol, year, month).path_under(self._root)

    def write_partition(self, df: pd.DataFrame, symbol: str, interval: str, year: int, month: int) -> Path:
        """Store the bars of one month, merging with what the month already holds (newer rows win).

        Every bar must open within the month (UTC). Returns the partition file's path.
        """
        key = PartitionKey.month(interval, symbol, year, month)
        new = validate_bar_frame(_without_key_columns(timestamps_to_ns(df), key))
        key.check_contains(new[TIMESTAMP_COLUMN].to_numpy())
        return self._store_month(key, new, None)

    def write_months(self, df: pd.DataFrame, symbol: str, interval: str) -> list[Path]:
        """Store bars of any span: split by month (UTC), each month merged and replaced atomically.

        The frame is validated once; months are converted and written in parallel (conversion, encoding,
        compression and fsync release the GIL; each month holds its own lock). If a month fails, the error is
        raised after the others have finished, and the months written stay written. Returns the partition files,
        oldest first.
        """
        series = PartitionKey.month(interval, symbol, 1970, 1)
        bars = validate_bar_frame(_without_key_columns(timestamps_to_ns(df), series))
        table = None if self._options.is_v2 else self._options.table_of(bars)
        months = bars[TIMESTAMP_COLUMN].to_numpy().astype("datetime64[ns]").astype("datetime64[M]")
        starts = np.flatnonzero(np.r_[True, months[1:] != months[:-1]])  # bars are sorted: months are runs
        jobs: list[tuple[PartitionKey, pd.DataFrame, pa.Table | None]] = []
        for lo, hi in itertools.pairwise([*starts.tolist(), len(bars)]):
            year, month = divmod(int(months[lo].astype(np.int64)), 12)
            key = PartitionKey.month(interval, symbol, 1970 + year, month + 1)
            month_bars = bars.iloc[lo:hi]
            if table is None:  # v2: each month converts its own bars, in its thread (numpy releases the GIL)
                jobs.append((key, month_bars, None))
                continue
            # v1: a month stores what validating it alone would give: counts nullable only if one of its own is.
            tightened = _without_needless_nulls(month_bars)
            if tightened is None:
                jobs.append((key, month_bars, table.slice(lo, hi - lo)))
            else:
                jobs.append((key, tightened, self._options.table_of(tightened)))
        if len(jobs) == 1:
            return [self._store_month(*jobs[0])]
        # Twice the cores: while one month waits on fsync, another is encoding.
        with ThreadPoolExecutor(max_workers=min(len(jobs), 2 * (os.cpu_count() or 1))) as pool:
            futures = [pool.submit(self._store_month, *job) for job in jobs]
        return [future.result() for future in futures]

    def _store_month(self, key: PartitionKey, new: pd.DataFrame, table: pa.Table | None) -> Path:
        """Write validated bars of one month (``table``: ``new`` as this writer stores it, or None to convert it
        here, stamped with the time of the conversion), merging with a stored month."""
        if table is None:
            table = self._options.table_of(new)
        target = key.path_under(self._root)
        temp_dir = lake_temp_dir(self._root)
        with path_lock(key.lock_path_under(self._root)):
            remove_stale_temp_files(target, temp_dir)
            if target.exists():
                table = self._merged(key, target, new, table)
            self._options.write(table, target, temp_dir=temp_dir)
        log.debug("wrote %d bars to %s", table.num_rows, target)
        return target

    def _merged(self, key: PartitionKey, target: Path, new: pd.DataFrame, table: pa.Table) -> pa.Table:
        """The stored month with ``new`` merged in (new rows win), in this writer's format."""
        if self._options.is_v2:
            return merge_lake_tables(read_lake_table(target), table)
        existing = read_bar_files([LakeFile(key, target, 0)])
        merged = pd.concat([_nullable_integers(existing), _nullable_integers(new)], ignore_index=True)
        merged = merged.drop_duplicates(TIMESTAMP_COLUMN, keep="last").sort_values(TIMESTAMP_COLUMN)
        merged = validate_bar_frame(merged)
        tightened = _without_needless_nulls(merged)  # a merge must not change a column's stored dtype
        return self._options.table_of(merged if tightened is None else tightened)

    def read_partition(
        self, symbol: str, interval: str, year: int, month: int, columns: list[str] | None = None
    ) -> pd.DataFrame:
        """All bars of one month (empty frame if the month is not stored); ``columns`` selects columns
        (``timestamp`` is always returned)."""
        key = PartitionKey.month(interval, symbol, year, month)
        path = key.path_under(self._root)
        files = [LakeFile(key, path, 0)] if path.exists() else []
        return read_bar_files(files, columns=_stored_names(columns), timestamps=True)

    def read_date_range(
        self,
        symbol: str,
        interval: str,
        start: datetime | date,
        end: datetime | date,
        columns: list[str] | None = None,
    ) -> pd.DataFrame:
        """Bars with ``start <= timestamp < end`` (start inclusive, end exclusive), sorted.

        Only the month partitions that overlap the range are opened; within them, row groups outside the range
        are skipped by their statistics. ``columns`` selects columns (``timestamp`` is always returned).
        """
        start_ns, end_ns = datetime_to_ns(start), datetime_to_ns(end)
        if end_ns < start_ns:
            raise InvalidInputError(f"end {end} precedes start {start}")
        files = self._month_files(symbol, interval, start_ns, end_ns)
        return read_bar_files(files, columns=_stored_names(columns), start_ns=start_ns, end_ns=end_ns, timestamps=True)

    def get_partition_stats(self, symbol: str, interval: str, year: int, month: int) -> dict[str, Any]:
        """Statistics of one stored month, from its Parquet footer only (no data is read).

        Returns ``rows``, ``size_mb`` and ``size_bytes`` (on disk), ``columns``, ``row_groups``, ``min_date`` and
        ``max_date`` (first and last bar, UTC; None if empty), ``compression``, ``lake_format`` (1 or 2) and
        ``bytes_per_row``. Raises PartitionNotFoundError if the month is not stored.
        """
        key = PartitionKey.month(interval, symbol, year, month)
        path = key.path_under(self._root)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise PartitionNotFoundError(f"Partition not found: {key.relative_dir}") from None
        summary = summarize_files([LakeFile(key, path, size)])
        if not summary:  # deleted between the stat and the footer read
            raise PartitionNotFoundError(f"Partition not found: {key.relative_dir}")
        metadata = pq.read_metadata(path)
        first, last = summary[0].first_ts_ns, summary[0].last_ts_ns
        codec = metadata.row_group(0).column(0).compression.lower() if metadata.num_row_groups else None
        return {
            "rows": metadata.num_rows,
            "size_mb": round(size / 1_048_576, 2),
            "size_bytes": size,
            "columns": len(metadata.schema.to_arrow_schema()),
            "row_groups": metadata.num_row_groups,
            "min_date": None if first is None else pd.Timestamp(first, unit="ns", tz="UTC"),
            "max_date": None if last is None else pd.Timestamp(last, unit="ns", tz="UTC"),
            "compression": codec,
            "lake_format": file_format(metadata.schema.to_arrow_schema()),
            "bytes_per_row": round(size / metadata.num_rows, 2) if metadata.num_rows else None,
        }

    def list_partitions(self, symbol: str, interval: str) -> list[tuple[int, int]]:
        """Stored months as ``(year, month)``, oldest first."""
        return [(f.period.year, f.period.month) for f in self._month_files(symbol, interval) if f.path.exists()]

    def list_symbols(self, interval: str | None = None) -> list[str]:
        return sorted({f.symbol for f in iter_lake_files(self._root, frame=interval, granularity=Granularity.MONTH)})

    def delete_partition(self, symbol: str, interval: str, year: int, month: int) -> bool:
        """Delete one month; True if it existed."""
        key = PartitionKey.month(interval, symbol, year, month)
        path = key.path_under(self._root)
        with path_lock(key.lock_path_under(self._root)):
            try:
                path.unlink()
            except FileNotFoundError:
                return False
        remove_empty_dirs(path.parent, stop=self._root)
        return True

    def _month_files(
        self, symbol: str, interval: str, start_ns: int | None = None, end_ns: int | None = None
    ) -> list[LakeFile]:
        """Month files of a series overlapping ``[start_ns, end_ns)``, oldest first, from one directory listing.

        A month directory may hold no file (a concurrent delete); readers skip files that are gone.
        """
        series = PartitionKey.month(interval, symbol, 1970, 1)  # validated once; each month only changes its date
        files = []
        for period_dir in list_dir(self._root / series.relative_dir.parent, "date=*"):
            parsed = parse_period(hive_value(period_dir, "date") or "")
            if parsed is None or parsed[1] is not Granularity.MONTH:
                continue
            key = dataclasses.replace(series, period=parsed[0])
            if key.overlaps(start_ns, end_ns):
                files.append(LakeFile(key, period_dir / f"{key.name}{PARQUET_SUFFIX}", 0))
        return files

    def __repr__(self) -> str:
        return (
            f"ParquetManager(root={str(self._root)!r}, compression={self._options.compression!r}, "
            f"lake_format={self.lake_format})"
        )


def _stored_names(columns: list[str] | None) -> list[str] | None:
    """Requested columns as the reader names them (``timestamp`` is ``ts_ns``, returned as ``timestamp``)."""
    return None if columns is None else [TIMESTAMP_COLUMN if c == "timestamp" else c for c in columns]


_NULLABLE_INTEGERS = {"i": "Int64", "u": "UInt64"}
_PLAIN_INTEGERS = {"Int64": "int64", "UInt64": "uint64"}


def _nullable_integers(bars: pd.DataFrame) -> pd.DataFrame:
    """Integer columns other than ``ts_ns`` as nullable Int64/UInt64: concatenated with a frame lacking them they
    stay exact and integer (float64 would round counts and nanosecond close times above 2**53)."""
    nullable = {
        name: _NULLABLE_INTEGERS[dtype.kind]
        for name, dtype in bars.dtypes.items()
        if name != TIMESTAMP_COLUMN and isinstance(dtype, np.dtype) and dtype.kind in _NULLABLE_INTEGERS
    }
    return bars.astype(nullable) if nullable else bars


def _without_needless_nulls(bars: pd.DataFrame) -> pd.DataFrame | None:
    """``bars`` with nullable integer columns that hold no null made plain int64/uint64; None if there are none."""
    needless = {
        name: _PLAIN_INTEGERS[dtype.name]
        for name, dtype in bars.dtypes.items()
        if dtype.name in _PLAIN_INTEGERS and not bars[name].isna().any()
    }
    return bars.astype(needless) if needless else None


def _without_key_columns(df: pd.DataFrame, key: PartitionKey) -> pd.DataFrame:
    """Drop ``symbol``/``interval`` columns after checking they agree with the partition."""
    expected = {"symbol": key.symbol.value, "interval": key.frame.value}
    present = [c for c in expected if c in df.columns]
    for column in present:
        normalise = Symbol if column == "symbol" else Interval
        raw = df[column].astype(str)
        canonical = {value: _canonical(normalise, value) for value in raw.unique()}
        mismatched = (raw.map(canonical) != expected[column]).to_numpy()
        if mismatched.any():
            raise DataValidationError(
                "partition_mismatch",
                f"Column {column!r} disagrees with the partition value {expected[column]!r}",
                mismatched.nonzero()[0].tolist(),
            )
    return df.drop(columns=present)


def _canonical(normalise: type[Symbol] | type[Interval], value: str) -> str | None:
    try:
        return normalise(value).value
    except ValueError:
        return None

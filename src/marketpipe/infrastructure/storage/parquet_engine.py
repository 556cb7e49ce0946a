"""ParquetStorageEngine: day-partitioned, job-addressed Parquet files (seed 000's raw lake).

Layout: ``{root}/frame=1m/symbol=AAPL/date=2024-01-01/{job_id}.parquet``, where ``date`` is the trading day in the
exchange's time zone (UTC unless configured, as crypto trades around the clock). Each write validates the bars,
writes a temporary file beside the lake and renames it into place under an inter-process lock, so concurrent
writers and crashes never leave a half-written file where readers look.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Mapping
from datetime import date
from pathlib import Path

import pandas as pd

from marketpipe.domain.bar_frame import TIMESTAMP_COLUMN, timestamps_to_ns, validate_bar_frame
from marketpipe.domain.errors import DataValidationError, InvalidInputError
from marketpipe.domain.value_objects import Symbol, validate_identifier
from marketpipe.infrastructure.storage.atomic import path_lock, remove_stale_temp_files
from marketpipe.infrastructure.storage.lake_layout import (
    HIVE_KEYS,
    FileSummary,
    Granularity,
    LakeFile,
    PartitionKey,
    day_bounds_ns,
    iter_lake_files,
    lake_temp_dir,
    remove_empty_dirs,
    summarize_files,
)
from marketpipe.infrastructure.storage.lake_reader import read_bar_files
from marketpipe.infrastructure.storage.parquet_format import (
    DEFAULT_COMPRESSION,
    DEFAULT_ROW_GROUP_SIZE,
    ParquetWriteOptions,
)

log = logging.getLogger(__name__)

PARTITION_COLUMNS = HIVE_KEYS


class ParquetStorageEngine:
    """Reads and writes bars in a hive-partitioned Parquet lake.

    Parameters:
        root: the lake's root directory (created on first write).
        compression: ``zstd`` (default), ``snappy``, ``gzip``, ``brotli``, ``lz4`` or ``none``.
        row_group_size: rows per Parquet row group.
        timezone: the IANA time zone whose calendar days are the trading days (default ``UTC``); e.g.
            ``America/New_York`` for US equities, whose extended hours (04:00-20:00) cross UTC midnight in winter.
        timezones: per-symbol time zones overriding ``timezone`` (``{"AAPL": "America/New_York"}``).
        lake_format: 2 (exact decimals, default) or 1 (float64); default ``MARKETPIPE_LAKE_FORMAT`` or 2.

    Raises (from ``write``):
        EmptyDataError, SchemaError, DataValidationError: the frame breaks a data rule; nothing is written.
        InvalidInputError: a frame, symbol or job id that is not acceptable (e.g. could escape the root).
        FileExistsError: the job file exists and ``overwrite`` is False.

    Concurrency: any number of threads and processes may write and read at once. Two writers of the same job
    file with ``overwrite=False``: exactly one succeeds, the other gets FileExistsError.

    Examples:
        >>> engine = ParquetStorageEngine(root="data/raw", compression="zstd")  # doctest: +SKIP
        >>> engine.write(df, frame="1m", symbol="AAPL", trading_day=date(2024, 1, 1),
        ...              job_id="AAPL_2024-01-01")  # doctest: +SKIP
        PosixPath('data/raw/frame=1m/symbol=AAPL/date=2024-01-01/AAPL_2024-01-01.parquet')
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        compression: str = DEFAULT_COMPRESSION,
        *,
        row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
        timezone: str = "UTC",
        timezones: Mapping[str, str] | None = None,
        lake_format: int | None = None,
    ) -> None:
        self._root = Path(root)
        self._options = ParquetWriteOptions(compression, row_group_size, lake_format)
        self._timezone = timezone
        self._timezones = {Symbol(symbol).value: zone for symbol, zone in (timezones or {}).items()}
        for zone in {timezone, *self._timezones.values()}:
            day_bounds_ns(date(2000, 1, 1), zone)  # an unknown zone fails here, not at the first write
        self.log = log

    @property
    def root(self) -> Path:
        return self._root

    @property
    def compression(self) -> str:
        return self._options.compression

    def timezone_of(self, symbol: str) -> str:
        """The time zone whose calendar days are ``symbol``'s trading days."""
        return self._timezones.get(Symbol(symbol).value, self._timezone)

    # ------------------------------------------------------------------ writing
    def write(
        self,
        df: pd.DataFrame,
        *,
        frame: str,
        symbol: str,
        trading_day: date,
        job_id: str,
        overwrite: bool = False,
    ) -> Path:
        """Validate ``df`` and store it as the job file of one (frame, symbol, day); returns the file's path.

        All bars must open within ``trading_day`` in the symbol's time zone (see ``timezone``). Columns ``frame``,
        ``symbol`` and ``date``, if present, must match the partition and are not stored twice (the path carries
        them).
        """
        key = PartitionKey.day(frame, symbol, _as_date(trading_day), job_id)
        bars = validate_bar_frame(timestamps_to_ns(df))
        bars = _drop_partition_columns(bars, key)
        key.check_contains(bars[TIMESTAMP_COLUMN].to_numpy(), self.timezone_of(key.symbol.value))
        table = self._options.table_of(bars)

        final_path = key.path_under(self._root)
        temp_dir = lake_temp_dir(self._root)
        with path_lock(key.lock_path_under(self._root)):
            remove_stale_temp_files(final_path, temp_dir)
            if final_path.exists() and not overwrite:
                raise FileExistsError(f"File already exists: {final_path}")
            self._options.write(table, final_path, overwrite=overwrite, temp_dir=temp_dir)
        self.log.debug("wrote %d bars to %s", table.num_rows, final_path)
        return final_path

    def load_job_bars(self, job_id: str, frame: str | None = None) -> dict[str, pd.DataFrame]:
        """Every bar a job wrote, one frame per symbol, sorted by ``ts_ns``.

        If the job wrote several frames (intervals) for one symbol, pass ``frame`` to choose one.
        """
        validate_identifier(job_id, "job id")
        files = [f for f in self.list_files(frame=frame) if f.job_id == job_id]
        by_symbol: dict[str, list[LakeFile]] = defaultdict(list)
        for stored in files:
            by_symbol[stored.symbol].append(stored)
        result: dict[str, pd.DataFrame] = {}
        for symbol, symbol_files in sorted(by_symbol.items()):
            frames = {f.frame for f in symbol_files}
            if len(frames) > 1:
                raise InvalidInputError(
                    f"Job {job_id!r} wrote frames {sorted(frames)} for {symbol}; pass frame= to choose one"
                )
            result[symbol] = read_bar_files(symbol_files)
        return result

    def load_symbol_data(
        self,
        symbol: str,
        frame: str,
        start_date: date | None = None,
        end_date: date | None = None,
        *,
        columns: list[str] | None = None,
    ) -> pd.DataFrame:
        """Bars of ``symbol`` and ``frame`` on days ``start_date`` to ``end_date`` (both inclusive), sorted.

        Where several jobs wrote the same bar, the most recently written file wins. An empty frame with the
        required columns is returned when nothing is stored.
        """
        start_date = None if start_date is None else _as_date(start_date)
        end_date = None if end_date is None else _as_date(end_date)
        if start_date is not None and end_date is not None and end_date < start_date:
            raise InvalidInputError(f"end_date {end_date} precedes start_date {start_date}")
        files = [
            f
            for f in self.list_files(frame=frame, symbol=symbol)
            if (start_date is None or f.trading_day >= start_date) and (end_date is None or f.trading_day <= end_date)
        ]
        return read_bar_files(files, columns=columns)

    # ------------------------------------------------------------------ listing
    def list_files(self, frame: str | None = None, symbol: str | None = None) -> list[LakeFile]:
        """Every job file (day partitions only), optionally of one frame and/or symbol, in path order."""
        return list(iter_lake_files(self._root, frame=frame, symbol=symbol, granularity=Granularity.DAY))

    def list_frames(self) -> list[str]:
        return sorted({f.frame for f in self.list_files()})

    def list_symbols(self, frame: str | None = None) -> list[str]:
        return sorted({f.symbol for f in self.list_files(frame=frame)})

    def list_jobs(self) -> list[str]:
        return sorted({f.job_id for f in self.list_files()})

    def list_trading_days(self, symbol: str, frame: str) -> list[date]:
        return sorted({f.trading_day for f in self.list_files(frame=frame, symbol=symbol)})

    def summarize(self, files: list[LakeFile] | None = None) -> list[FileSummary]:
        """Rows and first/last timestamp of each job file, from Parquet footers (no data pages are read)."""
        return summarize_files(self.list_files() if files is None else files)

    # ------------------------------------------------------------------ deleting
    def delete_job(self, job_id: str) -> int:
        """Delete every file a job wrote; returns how many files were removed."""
        validate_identifier(job_id, "job id")
        return self._delete([f for f in self.list_files() if f.job_id == job_id])

    def delete_partition(self, frame: str, symbol: str, trading_day: date) -> int:
        """Delete every job file of one (frame, symbol, day); returns how many files were removed."""
        day = _as_date(trading_day)
        return self._delete([f for f in self.list_files(frame=frame, symbol=symbol) if f.trading_day == day])

    def _delete(self, files: list[LakeFile]) -> int:
        removed = 0
        for stored in files:
            with path_lock(stored.key.lock_path_under(self._root)):
                try:
                    stored.path.unlink()
                    removed += 1
                except FileNotFoundError:
                    continue
            remove_empty_dirs(stored.path.parent, stop=self._root)
        return removed

    def __repr__(self) -> str:
        return f"ParquetStorageEngine(root={str(self._root)!r}, compression={self._options.compression!r})"


def _as_date(value: date) -> date:
    if hasattr(value, "date") and callable(value.date):  # datetime or pandas Timestamp
        day: date = value.date()
        return day
    if isinstance(value, date):
        return value
    raise InvalidInputError(f"trading_day must be a date, got {value!r}")


def _drop_partition_columns(bars: pd.DataFrame, key: PartitionKey) -> pd.DataFrame:
    expected = {"frame": key.frame.value, "symbol": key.symbol.value, "date": key.period_text}
    present = [c for c in PARTITION_COLUMNS if c in bars.columns]
    for column in present:
        values = bars[column].astype(str)
        if column == "symbol":
            values = values.str.upper()
        mismatched = (values != expected[column]).to_numpy()
        if mismatched.any():
            raise DataValidationError(
                "partition_mismatch",
                f"Column {column!r} disagrees with the partition value {expected[column]!r}",
                mismatched.nonzero()[0].tolist(),
            )
    return bars.drop(columns=present)

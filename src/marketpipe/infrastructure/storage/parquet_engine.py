"""ParquetStorageEngine: day-partitioned, job-addressed Parquet files (seed 000's raw lake).

Layout: ``{root}/frame=1m/symbol=AAPL/date=2024-01-01/{job_id}.parquet``. Each write validates the bars,
writes a temporary file and renames it into place under an inter-process lock, so concurrent writers and
crashes never leave a half-written file where readers look.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from marketpipe.domain.bar_frame import REQUIRED_COLUMNS, TIMESTAMP_COLUMN, validate_bar_frame
from marketpipe.domain.errors import DataValidationError, InvalidInputError, SchemaError, StorageError
from marketpipe.domain.value_objects import Interval, Symbol, datetime_to_ns, validate_identifier
from marketpipe.infrastructure.storage.atomic import atomic_write, path_lock, remove_stale_temp_files
from marketpipe.infrastructure.storage.lake_layout import PARQUET_SUFFIX, DayPartitionKey, hive_value
from marketpipe.infrastructure.storage.parquet_format import (
    DEFAULT_COMPRESSION,
    DEFAULT_ROW_GROUP_SIZE,
    check_compression,
    write_bars_table,
)

log = logging.getLogger(__name__)

PARTITION_COLUMNS = ("frame", "symbol", "date")


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One job file of the lake."""

    frame: str
    symbol: str
    trading_day: date
    job_id: str
    path: Path
    size_bytes: int


@dataclass(frozen=True, slots=True)
class FileSummary:
    """Row count and time span of a job file, read from its Parquet footer only."""

    file: StoredFile
    rows: int
    first_ts_ns: int | None
    last_ts_ns: int | None


class ParquetStorageEngine:
    """Reads and writes bars in a hive-partitioned Parquet lake.

    Parameters:
        root: the lake's root directory (created on first write).
        compression: ``zstd`` (default), ``snappy``, ``gzip``, ``brotli``, ``lz4`` or ``none``.
        row_group_size: rows per Parquet row group.

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
    ) -> None:
        self._root = Path(root)
        self._compression = check_compression(compression)
        self._row_group_size = row_group_size
        self.log = log

    @property
    def root(self) -> Path:
        return self._root

    @property
    def compression(self) -> str:
        return self._compression

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

        All bars must open within ``trading_day`` (UTC). Columns ``frame``, ``symbol`` and ``date``, if
        present, must match the partition and are not stored twice (the path carries them).
        """
        key = DayPartitionKey.of(frame, symbol, _as_date(trading_day), job_id)
        bars = validate_bar_frame(df)
        bars = _drop_partition_columns(bars, key)
        _check_within_day(bars, key.trading_day)
        table = pa.Table.from_pandas(bars, preserve_index=False)

        final_path = key.path_under(self._root)
        with path_lock(key.lock_path_under(self._root)):
            remove_stale_temp_files(final_path)
            if final_path.exists() and not overwrite:
                raise FileExistsError(f"File already exists: {final_path}")
            atomic_write(final_path, self._writer(table), overwrite=overwrite)
        self.log.debug("wrote %d bars to %s", table.num_rows, final_path)
        return final_path

    def _writer(self, table: pa.Table):  # noqa: ANN202 - a closure passed to atomic_write
        def write(path: Path) -> None:
            write_bars_table(table, path, compression=self._compression, row_group_size=self._row_group_size)

        return write

    # ------------------------------------------------------------------ reading
    def load_job_bars(self, job_id: str, frame: str | None = None) -> dict[str, pd.DataFrame]:
        """Every bar a job wrote, one frame per symbol, sorted by ``ts_ns``.

        If the job wrote several frames (intervals) for one symbol, pass ``frame`` to choose one.
        """
        validate_identifier(job_id, "job id")
        files = [f for f in self.list_files(frame=frame) if f.job_id == job_id]
        by_symbol: dict[str, list[StoredFile]] = defaultdict(list)
        for stored in files:
            by_symbol[stored.symbol].append(stored)
        result: dict[str, pd.DataFrame] = {}
        for symbol, symbol_files in sorted(by_symbol.items()):
            frames = {f.frame for f in symbol_files}
            if len(frames) > 1:
                raise InvalidInputError(
                    f"Job {job_id!r} wrote frames {sorted(frames)} for {symbol}; pass frame= to choose one"
                )
            result[symbol] = self._read_files(symbol_files)
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
        if start_date is not None and end_date is not None and end_date < start_date:
            raise InvalidInputError(f"end_date {end_date} precedes start_date {start_date}")
        files = [
            f
            for f in self.list_files(frame=frame, symbol=symbol)
            if (start_date is None or f.trading_day >= start_date) and (end_date is None or f.trading_day <= end_date)
        ]
        return self._read_files(files, columns=columns)

    def _read_files(self, files: list[StoredFile], columns: list[str] | None = None) -> pd.DataFrame:
        if columns is not None:
            unknown = [c for c in columns if not isinstance(c, str)]
            if unknown:
                raise InvalidInputError(f"Column names must be strings: {unknown}")
            columns = list(dict.fromkeys([TIMESTAMP_COLUMN, *columns]))
        if not files:
            return pd.DataFrame(
                {
                    c: pd.Series(dtype="int64" if c == TIMESTAMP_COLUMN else "float64")
                    for c in (columns or REQUIRED_COLUMNS)
                }
            )
        files = sorted(files, key=lambda f: (f.trading_day, _mtime_ns(f.path), f.job_id))
        per_day = defaultdict(int)
        for f in files:
            per_day[f.trading_day] += 1
        try:
            paths = [str(f.path) for f in files]
            schema = pa.unify_schemas([pq.read_schema(p) for p in paths], promote_options="permissive")
            if columns is not None:
                missing = [c for c in columns if c not in schema.names]
                if missing:
                    raise SchemaError(f"Unknown columns {missing}; stored columns are {schema.names}")
            if max(per_day.values()) == 1:
                table = ds.dataset(paths, schema=schema, format="parquet").to_table(columns=columns)
                return table.to_pandas().sort_values(TIMESTAMP_COLUMN, kind="stable").reset_index(drop=True)
            tables = [pq.read_table(p, columns=columns, schema=schema) for p in paths]
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"Cannot read lake files: {exc}") from exc
        frame = pa.concat_tables(tables).to_pandas()
        # Later files (newer writes) win: stable sort keeps file order among equal timestamps.
        frame = frame.sort_values(TIMESTAMP_COLUMN, kind="stable")
        frame = frame.drop_duplicates(TIMESTAMP_COLUMN, keep="last")
        return frame.reset_index(drop=True)

    # ------------------------------------------------------------------ listing
    def list_files(self, frame: str | None = None, symbol: str | None = None) -> list[StoredFile]:
        """Every job file, optionally of one frame and/or symbol, in path order."""
        frame_dirs = [self._root / f"frame={Interval(frame)}"] if frame else sorted(self._root.glob("frame=*"))
        wanted_symbol = Symbol(symbol).value if symbol else None
        found: list[StoredFile] = []
        for frame_dir in frame_dirs:
            frame_value = hive_value(frame_dir, "frame")
            symbol_dirs = (
                [frame_dir / f"symbol={wanted_symbol}"] if wanted_symbol else sorted(frame_dir.glob("symbol=*"))
            )
            for symbol_dir in symbol_dirs:
                for date_dir in sorted(symbol_dir.glob("date=*")):
                    day = _parse_day(hive_value(date_dir, "date"))
                    if day is None or frame_value is None:
                        self.log.warning("ignoring unexpected directory %s", date_dir)
                        continue
                    for path in sorted(date_dir.glob(f"*{PARQUET_SUFFIX}")):
                        if path.name.startswith((".", "_")):
                            continue
                        with contextlib.suppress(FileNotFoundError):
                            found.append(
                                StoredFile(
                                    frame=frame_value,
                                    symbol=hive_value(symbol_dir, "symbol") or "",
                                    trading_day=day,
                                    job_id=path.name[: -len(PARQUET_SUFFIX)],
                                    path=path,
                                    size_bytes=path.stat().st_size,
                                )
                            )
        return found

    def list_frames(self) -> list[str]:
        return sorted({f.frame for f in self.list_files()})

    def list_symbols(self, frame: str | None = None) -> list[str]:
        return sorted({f.symbol for f in self.list_files(frame=frame)})

    def list_jobs(self) -> list[str]:
        return sorted({f.job_id for f in self.list_files()})

    def list_trading_days(self, symbol: str, frame: str) -> list[date]:
        return sorted({f.trading_day for f in self.list_files(frame=frame, symbol=symbol)})

    def summarize(self, files: list[StoredFile] | None = None) -> list[FileSummary]:
        """Rows and first/last timestamp of each file, from Parquet footers (no data pages are read)."""
        summaries = []
        for stored in self.list_files() if files is None else files:
            try:
                metadata = pq.read_metadata(stored.path)
            except (OSError, pa.ArrowException) as exc:
                raise StorageError(f"Cannot read footer of {stored.path}: {exc}") from exc
            first, last = _timestamp_bounds(metadata)
            summaries.append(FileSummary(stored, metadata.num_rows, first, last))
        return summaries

    # ------------------------------------------------------------------ deleting
    def delete_job(self, job_id: str) -> int:
        """Delete every file a job wrote; returns how many files were removed."""
        validate_identifier(job_id, "job id")
        return self._delete([f for f in self.list_files() if f.job_id == job_id])

    def delete_partition(self, frame: str, symbol: str, trading_day: date) -> int:
        """Delete every job file of one (frame, symbol, day); returns how many files were removed."""
        day = _as_date(trading_day)
        return self._delete([f for f in self.list_files(frame=frame, symbol=symbol) if f.trading_day == day])

    def _delete(self, files: list[StoredFile]) -> int:
        removed = 0
        for stored in files:
            key = DayPartitionKey.of(stored.frame, stored.symbol, stored.trading_day, stored.job_id)
            with path_lock(key.lock_path_under(self._root)):
                try:
                    stored.path.unlink()
                    removed += 1
                except FileNotFoundError:
                    continue
            _remove_empty_dirs(stored.path.parent, stop=self._root)
        return removed

    def __repr__(self) -> str:
        return f"ParquetStorageEngine(root={str(self._root)!r}, compression={self._compression!r})"


def _as_date(value: date) -> date:
    if hasattr(value, "date") and callable(value.date):  # datetime or pandas Timestamp
        return value.date()
    if isinstance(value, date):
        return value
    raise InvalidInputError(f"trading_day must be a date, got {value!r}")


def _parse_day(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def _drop_partition_columns(bars: pd.DataFrame, key: DayPartitionKey) -> pd.DataFrame:
    expected = {"frame": key.frame.value, "symbol": key.symbol.value, "date": key.trading_day.isoformat()}
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


def _check_within_day(bars: pd.DataFrame, day: date) -> None:
    start_ns = datetime_to_ns(day)
    end_ns = datetime_to_ns(day + timedelta(days=1))
    ts = bars[TIMESTAMP_COLUMN].to_numpy()
    outside = (ts < start_ns) | (ts >= end_ns)
    if outside.any():
        raise DataValidationError(
            "partition_mismatch", f"Bars open outside trading day {day} (UTC)", outside.nonzero()[0].tolist()
        )


def _timestamp_bounds(metadata: pq.FileMetaData) -> tuple[int | None, int | None]:
    schema = metadata.schema.to_arrow_schema()
    if TIMESTAMP_COLUMN not in schema.names or metadata.num_rows == 0:
        return None, None
    index = schema.names.index(TIMESTAMP_COLUMN)
    lows, highs = [], []
    for i in range(metadata.num_row_groups):
        stats = metadata.row_group(i).column(index).statistics
        if stats is None or not stats.has_min_max:
            return None, None
        lows.append(stats.min)
        highs.append(stats.max)
    return min(lows), max(highs)


def _remove_empty_dirs(directory: Path, stop: Path) -> None:
    """Remove ``directory`` and its parents up to (not including) ``stop`` while they are empty."""
    stop = stop.resolve()
    current = directory
    while current.resolve() != stop and stop in current.resolve().parents:
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent

"""Hive-style paths of the lake, shared by every writer and reader.

Two kinds of partition live side by side under the same keys ``frame``, ``symbol``, ``date``:

- day partitions (ParquetStorageEngine): ``frame=1m/symbol=BTCUSDT/date=2024-01-01/{job_id}.parquet``;
- month partitions (ParquetManager): ``frame=1h/symbol=BTCUSDT/date=2024-01/data.parquet``.

``date`` is the partition's period: a day (``YYYY-MM-DD``) or a month (``YYYY-MM``). Because the keys are the
same, one glob (``**/*.parquet`` with hive partitioning) reads the whole lake in DuckDB, pyarrow and polars.
Every path component is built from a validated value (Interval, Symbol, date, job id), so no caller-given
string can escape the lake root. Nothing but Parquet data lives under the root: locks and temporary files are
kept beside it, in the lake's work directory (:func:`lake_work_dir`), where no engine scanning the lake meets them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from marketpipe.domain.errors import DataValidationError, InvalidInputError, StorageError
from marketpipe.domain.value_objects import Interval, Symbol, datetime_to_ns, next_month, validate_identifier
from marketpipe.infrastructure.storage.atomic import list_dir

PARQUET_SUFFIX = ".parquet"
WORK_DIR_SUFFIX = ".marketpipe"
LEGACY_LOCKS_DIR = "_locks"  # where lake format v1 kept its locks, inside the lake
# A trading day in an exchange's time zone (UTC-12 to UTC+14) lies within the UTC day and one day either side.
DAY_SPAN_MARGIN = timedelta(days=1)
HIVE_KEYS = ("frame", "symbol", "date")  # the partition keys of every lake path, in order
MONTH_FILE_NAME = "data"


class Granularity(StrEnum):
    DAY = "day"
    MONTH = "month"


@dataclass(frozen=True, slots=True)
class PartitionKey:
    """One file of the lake: (frame, symbol, period, file name without suffix)."""

    frame: Interval
    symbol: Symbol
    period: date
    granularity: Granularity
    name: str

    @classmethod
    def day(cls, frame: str | Interval, symbol: str | Symbol, trading_day: date, job_id: str) -> PartitionKey:
        return cls(Interval(frame), Symbol(symbol), trading_day, Granularity.DAY, validate_identifier(job_id, "job id"))

    @classmethod
    def month(cls, frame: str | Interval, symbol: str | Symbol, year: int, month: int) -> PartitionKey:
        return cls(Interval(frame), Symbol(symbol), month_start(year, month), Granularity.MONTH, MONTH_FILE_NAME)

    @property
    def period_text(self) -> str:
        return self.period.isoformat() if self.granularity is Granularity.DAY else self.period.strftime("%Y-%m")

    @property
    def relative_dir(self) -> Path:
        return Path(f"frame={self.frame}", f"symbol={self.symbol}", f"date={self.period_text}")

    @property
    def period_end(self) -> date:
        """The first day after the partition's period."""
        return self.period + timedelta(days=1) if self.granularity is Granularity.DAY else next_month(self.period)

    @property
    def span_ns(self) -> tuple[int, int]:
        """The time span ``[start, end)`` the partition covers, in epoch nanoseconds (UTC).

        A month partition covers its UTC month; a day partition its trading day, which may be an exchange's day in
        its own time zone: its span includes the UTC day before and after (pruning only; writers check the day).
        """
        if self.granularity is Granularity.MONTH:
            return datetime_to_ns(self.period), datetime_to_ns(next_month(self.period))
        start = self.period - DAY_SPAN_MARGIN
        return datetime_to_ns(start), datetime_to_ns(self.period + timedelta(days=1) + DAY_SPAN_MARGIN)

    def overlaps(self, start_ns: int | None, end_ns: int | None) -> bool:
        """Whether the partition's span meets ``[start_ns, end_ns)``; a None bound is open."""
        low, high = self.span_ns
        return (end_ns is None or low < end_ns) and (start_ns is None or start_ns < high)

    def check_contains(self, ts_ns: np.ndarray, timezone: str = "UTC") -> None:
        """Raise DataValidationError naming the rows whose timestamps fall outside the partition's period: its UTC
        month, or its trading day in ``timezone`` (an IANA name)."""
        if self.granularity is Granularity.MONTH:
            low, high = datetime_to_ns(self.period), datetime_to_ns(next_month(self.period))
        else:
            low, high = day_bounds_ns(self.period, timezone)
        outside = (ts_ns < low) | (ts_ns >= high)
        if outside.any():
            raise DataValidationError(
                "partition_mismatch",
                f"Bars open outside {'trading day' if self.granularity is Granularity.DAY else 'month'} "
                f"{self.period_text} ({'UTC' if self.granularity is Granularity.MONTH else timezone})",
                outside.nonzero()[0].tolist(),
            )

    def path_under(self, root: Path) -> Path:
        return root / self.relative_dir / f"{self.name}{PARQUET_SUFFIX}"

    def lock_path_under(self, root: Path) -> Path:
        return lake_lock_dir(root) / self.relative_dir / f"{self.name}.lock"


@dataclass(frozen=True, slots=True)
class LakeFile:
    """A data file found in the lake."""

    key: PartitionKey
    path: Path
    size_bytes: int

    @property
    def frame(self) -> str:
        return self.key.frame.value

    @property
    def symbol(self) -> str:
        return self.key.symbol.value

    @property
    def period(self) -> date:
        return self.key.period

    @property
    def name(self) -> str:
        return self.key.name

    trading_day = period  # day partitions: the trading day
    job_id = name  # day partitions: the job that wrote the file

    def modified_us(self) -> int:
        """The file's modification time in microseconds since the epoch (0 if it is gone): when a v1 file, which
        has no ``written_at`` column, was written."""
        try:
            return self.path.stat().st_mtime_ns // 1000
        except FileNotFoundError:
            return 0


@dataclass(frozen=True, slots=True)
class FileSummary:
    """Row count and time span of a lake file, read from its Parquet footer only."""

    file: LakeFile
    rows: int
    first_ts_ns: int | None
    last_ts_ns: int | None


def lake_work_dir(root: Path) -> Path:
    """The bookkeeping directory of the lake at ``root`` (its locks and temporary files).

    It sits beside the lake, ``{parent}/.{name}.marketpipe``, on the same file system (renames of temporary files
    into the lake stay atomic), so that nothing but Parquet data lives under the root: DuckDB's ``lake/**``,
    Spark's ``basePath`` and polars' directory scans never meet a lock or a half-written file. A root that is a
    mount point (its parent is another file system) keeps it inside, hidden: ``{root}/.marketpipe``.
    """
    resolved = root.resolve()
    if resolved.parent == resolved or os.path.ismount(resolved):
        return resolved / WORK_DIR_SUFFIX
    return resolved.parent / f".{resolved.name}{WORK_DIR_SUFFIX}"


def lake_lock_dir(root: Path) -> Path:
    """Where the lake's inter-process locks live (mirroring the lake's tree)."""
    return lake_work_dir(root) / "locks"


def lake_temp_dir(root: Path) -> Path:
    """Where the lake's writers put a file before renaming it into the lake."""
    return lake_work_dir(root) / "tmp"


def day_bounds_ns(day: date, timezone: str = "UTC") -> tuple[int, int]:
    """``[start, end)`` of a calendar day in an IANA time zone, in epoch nanoseconds."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise InvalidInputError(f"Unknown time zone {timezone!r}: use an IANA name like 'America/New_York'") from exc
    start = datetime.combine(day, time(), zone)
    end = datetime.combine(day + timedelta(days=1), time(), zone)
    return datetime_to_ns(start), datetime_to_ns(end)


def month_start(year: int, month: int) -> date:
    try:
        return date(int(year), int(month), 1)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"Invalid partition month {year!r}-{month!r}: {exc}") from exc


def parse_period(text: str) -> tuple[date, Granularity] | None:
    """``("2024-01-01")`` -> day partition, ``("2024-01")`` -> month partition, anything else -> None."""
    with contextlib.suppress(ValueError):
        if len(text) == 10:
            return date.fromisoformat(text), Granularity.DAY
        if len(text) == 7 and text[4] == "-":
            return date(int(text[:4]), int(text[5:]), 1), Granularity.MONTH
    return None


def hive_value(directory: Path, key: str) -> str | None:
    """``"1m"`` for a directory named ``frame=1m`` and key ``frame``; None if it is not that key."""
    prefix = f"{key}="
    return directory.name[len(prefix) :] if directory.name.startswith(prefix) else None


def iter_lake_files(
    root: Path,
    *,
    frame: str | None = None,
    symbol: str | None = None,
    granularity: Granularity | None = None,
) -> Iterator[LakeFile]:
    """Data files of the lake in path order, optionally of one frame, symbol and partition granularity.

    Directories that do not parse as partitions (not ours) are skipped.
    """
    frame_dirs = [root / f"frame={Interval(frame)}"] if frame is not None else list_dir(root, "frame=*")
    symbol_glob = f"symbol={Symbol(symbol)}" if symbol is not None else "symbol=*"
    for frame_dir in frame_dirs:
        try:
            frame_value = Interval(hive_value(frame_dir, "frame") or "")
        except ValueError:
            continue
        for symbol_dir in list_dir(frame_dir, symbol_glob):
            try:
                symbol_value = Symbol(hive_value(symbol_dir, "symbol") or "")
            except ValueError:
                continue
            for period_dir in list_dir(symbol_dir, "date=*"):
                parsed = parse_period(hive_value(period_dir, "date") or "")
                if parsed is None or (granularity is not None and parsed[1] is not granularity):
                    continue
                for path in list_dir(period_dir, f"*{PARQUET_SUFFIX}"):
                    if path.name.startswith((".", "_")):
                        continue
                    key = PartitionKey(
                        frame_value, symbol_value, parsed[0], parsed[1], path.name[: -len(PARQUET_SUFFIX)]
                    )
                    with contextlib.suppress(FileNotFoundError):
                        yield LakeFile(key, path, path.stat().st_size)


def overlapping_files(files: list[LakeFile]) -> list[LakeFile]:
    """The files sharing a day or month with another file of the same frame and symbol (two jobs of one day, a day
    inside a stored month): only they can hold the same bar twice."""
    by_series: dict[tuple[str, str], list[LakeFile]] = {}
    for lake_file in files:
        by_series.setdefault((lake_file.frame, lake_file.symbol), []).append(lake_file)
    found = []
    for series in by_series.values():
        series.sort(key=lambda f: f.key.period)
        reach: date | None = None  # the latest end of the files before this one
        for i, lake_file in enumerate(series):
            earlier = reach is not None and reach > lake_file.period
            later = i + 1 < len(series) and series[i + 1].period < lake_file.key.period_end
            if earlier or later:
                found.append(lake_file)
            reach = lake_file.key.period_end if reach is None else max(reach, lake_file.key.period_end)
    return found


def summarize_files(files: list[LakeFile], timestamp_column: str = "ts_ns") -> list[FileSummary]:
    """Rows and first/last timestamp of each file, from Parquet footers (no data pages are read).

    A file deleted after it was listed (a concurrent delete) is left out, as the readers leave it out; a file that
    is there but unreadable raises StorageError.
    """
    summaries = []
    for lake_file in files:
        metadata = _footer_unless_deleted(lake_file.path)
        if metadata is not None:
            first, last = _timestamp_bounds(metadata, timestamp_column)
            summaries.append(FileSummary(lake_file, metadata.num_rows, first, last))
    return summaries


def _footer_unless_deleted(path: Path) -> pq.FileMetaData | None:
    for attempt in (1, 2):  # deleted and written again between the two reads: the second one decides
        try:
            return pq.read_metadata(path)
        except (OSError, pa.ArrowException) as exc:
            if not path.exists():
                return None
            if attempt == 2:
                raise StorageError(f"Cannot read footer of {path}: {exc}") from exc
    return None


def _timestamp_bounds(metadata: pq.FileMetaData, column: str) -> tuple[int | None, int | None]:
    names = metadata.schema.to_arrow_schema().names
    if column not in names or metadata.num_rows == 0:
        return None, None
    index = names.index(column)
    lows, highs = [], []
    for i in range(metadata.num_row_groups):
        stats = metadata.row_group(i).column(index).statistics
        if stats is None or not stats.has_min_max:
            return None, None
        lows.append(stats.min)
        highs.append(stats.max)
    return min(lows), max(highs)


def remove_empty_dirs(directory: Path, stop: Path) -> None:
    """Remove ``directory`` and its parents up to (not including) ``stop`` while they are empty."""
    stop = stop.resolve()
    current = directory
    while current.resolve() != stop and stop in current.resolve().parents:
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent

"""Hot storage operations: what the hot store holds, loading bars into it, and moving old bars to the lake."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pandas as pd

from marketpipe.config import DEFAULT_HOT_DAYS, Settings
from marketpipe.domain.errors import InvalidInputError, SchemaError
from marketpipe.domain.value_objects import Interval, Symbol, to_utc
from marketpipe.infrastructure.database.factory import open_hot_store
from marketpipe.infrastructure.database.hot_store import HotStore
from marketpipe.infrastructure.repositories.hybrid_repository import (
    HybridMarketDataRepository,
    MigratedMonth,
    utc_now,
)
from marketpipe.infrastructure.repositories.parquet_repository import ParquetMarketDataRepository
from marketpipe.infrastructure.repositories.postgres_repository import PostgresMarketDataRepository


@dataclass(frozen=True)
class SeriesStatus:
    """One symbol and interval in the hot store, and how much of it is older than the cutoff."""

    symbol: str
    interval: str
    rows: int
    oldest: datetime
    newest: datetime
    to_migrate: int


class HotStorage:
    """The hot store and the lake behind one :class:`HybridMarketDataRepository`.

    Examples:
        >>> with HotStorage.open(Settings.from_env()) as hot:  # doctest: +SKIP
        ...     hot.status()
        ...     hot.migrate()
    """

    def __init__(
        self,
        store: HotStore,
        lake_dir: str | os.PathLike[str],
        hot_days: int = DEFAULT_HOT_DAYS,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.repository = HybridMarketDataRepository(
            PostgresMarketDataRepository(store), ParquetMarketDataRepository(lake_dir), hot_days, clock=clock
        )

    @classmethod
    def open(cls, settings: Settings, hot_days: int | None = None) -> HotStorage:
        """The hot store of ``MARKETPIPE_DB_URL`` and the lake under the data directory."""
        return cls(
            open_hot_store(settings.db_url), settings.lake_dir, settings.hot_days if hot_days is None else hot_days
        )

    def cutoff(self) -> datetime:
        return self.repository.cutoff()

    def status(self) -> list[SeriesStatus]:
        """Rows, oldest and newest bar per symbol and interval, and how many bars ``migrate`` would move."""
        pending = {(s.symbol, s.interval): s.rows for s in self.store.series(before=self.cutoff())}
        return [
            SeriesStatus(s.symbol, s.interval, s.rows, s.oldest, s.newest, pending.get((s.symbol, s.interval), 0))
            for s in self.store.series()
        ]

    def migrate(
        self,
        symbols: Iterable[str] = (),
        intervals: Iterable[str] = (),
        *,
        on_month: Callable[[MigratedMonth], None] | None = None,
    ) -> dict[tuple[str, str], int]:
        """Move bars older than the cutoff to the lake (every series, or only the given symbols/intervals).

        Returns the bars moved per (symbol, interval) that had anything to move.
        """
        wanted_symbols = {Symbol(s).value for s in symbols}
        wanted_intervals = {Interval(i).value for i in intervals}
        moved: dict[tuple[str, str], int] = {}
        for series in self.store.series(before=self.cutoff()):
            if wanted_symbols and series.symbol not in wanted_symbols:
                continue
            if wanted_intervals and series.interval not in wanted_intervals:
                continue
            key = (series.symbol, series.interval)
            moved[key] = self.repository.migrate_to_warm_storage(*key, on_month=on_month)
        return moved

    def load_file(self, path: str | os.PathLike[str], *, symbol: str | None = None, interval: str | None = None) -> int:
        """Upsert the bars of a CSV (optionally compressed) or Parquet file into the hot store.

        The file has ``timestamp`` (ISO 8601; naive means UTC) or ``ts_ns`` and the bar columns, and names its
        symbol and interval in columns or through the arguments (what ``export_csv`` writes loads as is).
        """
        return self.store.insert_market_data(read_bar_file(Path(path)), symbol=symbol, interval=interval)

    def load_from_lake(
        self, symbol: str, interval: str, start: datetime | None = None, end: datetime | None = None
    ) -> int:
        """Copy a series' bars in ``[start, end)`` (default: from the cutoff on) from the lake into the hot store."""
        warm = self.repository.warm
        start = self.cutoff() if start is None else to_utc(start)
        if end is None:
            newest = warm.latest_timestamp(symbol, interval)
            if newest is None:
                return 0
            end = newest + timedelta(microseconds=1)
        bars = warm.get_by_date_range(symbol, interval, start, end) if end > start else None
        if bars is None or bars.empty:
            return 0
        return self.store.insert_market_data(bars, symbol=symbol, interval=interval)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> HotStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def read_bar_file(path: Path) -> pd.DataFrame:
    """A frame of bars from a CSV or Parquet file, with ``timestamp`` parsed as UTC datetimes."""
    if not path.is_file():
        raise InvalidInputError(f"No such file: {path}")
    try:
        frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except (ValueError, OSError) as exc:
        raise SchemaError(f"Cannot read bars from {path}: {exc}") from exc
    if "timestamp" in frame.columns and not pd.api.types.is_datetime64_any_dtype(frame["timestamp"].dtype):
        if pd.api.types.is_numeric_dtype(frame["timestamp"].dtype):
            raise SchemaError(
                f"{path}: column 'timestamp' holds numbers; use ISO 8601 times, or name epoch nanoseconds 'ts_ns'"
            )
        try:
            frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise SchemaError(f"{path}: column 'timestamp' is not ISO 8601 times: {exc}") from exc
    return frame

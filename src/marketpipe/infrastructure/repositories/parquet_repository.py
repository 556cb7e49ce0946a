"""ParquetMarketDataRepository: warm storage of bars in month partitions (seed 004), IMarketDataRepository."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import date, datetime

import pandas as pd

from marketpipe.domain.bar_frame import empty_bar_frame, ns_to_timestamps, split_market_data
from marketpipe.domain.entities import OHLCVBar
from marketpipe.domain.errors import InvalidInputError
from marketpipe.domain.repositories import IMarketDataRepository
from marketpipe.domain.value_objects import ns_to_datetime
from marketpipe.infrastructure.storage.parquet_manager import ParquetManager


class ParquetMarketDataRepository(IMarketDataRepository):
    """Bars in the lake's month partitions; writes merge (upsert on timestamp), reads prune months.

    Examples:
        >>> repo = ParquetMarketDataRepository("data/lake")  # doctest: +SKIP
        >>> repo.save(bars)                     # list of OHLCVBar, or a DataFrame with symbol/interval columns
        >>> repo.get_by_date_range("btcusdt", "1h", datetime(2023, 1, 1), datetime(2024, 1, 1))  # doctest: +SKIP
    """

    def __init__(self, root: str | os.PathLike[str] | ParquetManager, compression: str = "zstd") -> None:
        self._manager = root if isinstance(root, ParquetManager) else ParquetManager(root, compression)

    @property
    def manager(self) -> ParquetManager:
        return self._manager

    def get_by_date_range(
        self, symbol: str, interval: str, start: datetime | date, end: datetime | date
    ) -> pd.DataFrame:
        return self._manager.read_date_range(symbol, interval, start, end)

    def save(
        self, data: pd.DataFrame | Sequence[OHLCVBar], *, symbol: str | None = None, interval: str | None = None
    ) -> int:
        """Store bars, split by symbol, interval and month (months in parallel, each atomically); returns how
        many bars were written."""
        written = 0
        for (sym, ivl), bars in split_market_data(data, symbol=symbol, interval=interval).items():
            self._manager.write_months(bars, sym, ivl)
            written += len(bars)
        return written

    def exists(self, symbol: str, interval: str, start: datetime | date, end: datetime | date) -> bool:
        return not self._manager.read_date_range(symbol, interval, start, end, columns=["timestamp"]).empty

    def get_latest(self, symbol: str, interval: str, limit: int = 100) -> pd.DataFrame:
        """The ``limit`` most recent bars, oldest first; reads months newest-first until it has enough."""
        if not isinstance(limit, int) or limit < 1:
            raise InvalidInputError(f"limit must be a positive integer, got {limit!r}")
        chunks: list[pd.DataFrame] = []
        have = 0
        for year, month in reversed(self._manager.list_partitions(symbol, interval)):
            chunk = self._manager.read_partition(symbol, interval, year, month)
            chunks.append(chunk)
            have += len(chunk)
            if have >= limit:
                break
        if not chunks:
            return ns_to_timestamps(empty_bar_frame())
        return pd.concat(reversed(chunks), ignore_index=True).tail(limit).reset_index(drop=True)

    def latest_timestamp(self, symbol: str, interval: str) -> datetime | None:
        """Open time of the newest stored bar, or None."""
        latest = self.get_latest(symbol, interval, limit=1)
        return None if latest.empty else ns_to_datetime(int(latest["timestamp"].iloc[0].value))

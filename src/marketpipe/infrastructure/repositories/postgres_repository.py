"""PostgresMarketDataRepository: hot storage of recent bars (seed 004), IMarketDataRepository over a hot store."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

import pandas as pd

from marketpipe.domain.entities import OHLCVBar
from marketpipe.domain.repositories import IMarketDataRepository
from marketpipe.infrastructure.database.hot_store import HotStore


class PostgresMarketDataRepository(IMarketDataRepository):
    """Recent bars in the hot store: ``SupabaseClient`` (PostgreSQL) or ``SqliteHotStore`` (embedded default).

    Examples:
        >>> repo = PostgresMarketDataRepository(SupabaseClient(url="postgresql://..."))  # doctest: +SKIP
        >>> repo.get_latest("btcusdt", "1h", limit=100)  # doctest: +SKIP
        >>> repo.save(market_data_list)  # doctest: +SKIP
    """

    def __init__(self, client: HotStore) -> None:
        self._client = client

    @property
    def client(self) -> HotStore:
        return self._client

    def get_by_date_range(
        self, symbol: str, interval: str, start: datetime | date, end: datetime | date
    ) -> pd.DataFrame:
        return self._client.get_market_data(symbol, interval, start, end)

    def save(
        self, data: pd.DataFrame | Sequence[OHLCVBar], *, symbol: str | None = None, interval: str | None = None
    ) -> int:
        """Upsert bars (one transaction); returns how many were written."""
        return self._client.insert_market_data(data, symbol=symbol, interval=interval)

    def exists(self, symbol: str, interval: str, start: datetime | date, end: datetime | date) -> bool:
        return self._client.has_market_data(symbol, interval, start, end)

    def get_latest(self, symbol: str, interval: str, limit: int = 100) -> pd.DataFrame:
        return self._client.get_latest_market_data(symbol, interval, limit)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._client.describe()!r})"

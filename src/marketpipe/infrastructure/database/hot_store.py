"""The hot-store contract: recent bars (and regime classifications) in a SQL database, read and written as frames.

Two implementations honour it and one contract test suite runs against both: :class:`SupabaseClient`
(PostgreSQL, production) and :class:`SqliteHotStore` (embedded default, no server).

Frames returned carry ``timestamp`` (bar open time, ``datetime64[ns, UTC]``), ``open``, ``high``, ``low``,
``close``, ``volume`` (float64), sorted by timestamp, plus whichever optional lake columns (``trade_count``,
``quote_volume``, ``taker_buy_base_volume``, ``taker_buy_quote_volume``, ``vwap``) hold a value in some returned
row. Ranges are half-open ``[start, end)``; naive datetimes are UTC.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pandas as pd

from marketpipe.domain.entities import OHLCVBar


@dataclass(frozen=True)
class HotSeries:
    """What the hot store holds for one symbol and interval."""

    symbol: str
    interval: str
    rows: int
    oldest: datetime
    newest: datetime


class HotStore(ABC):
    """Recent bars keyed by (symbol, interval, timestamp); every write is an idempotent upsert."""

    @abstractmethod
    def insert_market_data(
        self, df: pd.DataFrame | Sequence[OHLCVBar], *, symbol: str | None = None, interval: str | None = None
    ) -> int:
        """Upsert bars; returns how many rows were written.

        ``df`` names its symbol and interval in ``symbol``/``interval`` columns or through the keyword arguments;
        its times are a datetime ``timestamp`` column (or ``ts_ns``). Bars are validated like the lake's (OHLC
        rules, finite prices, no duplicate timestamps) and the whole call is one transaction: all rows or none.
        """

    @abstractmethod
    def get_market_data(self, symbol: str, interval: str, start: datetime | date, end: datetime | date) -> pd.DataFrame:
        """Bars with ``start <= timestamp < end``, oldest first."""

    @abstractmethod
    def get_latest_market_data(self, symbol: str, interval: str, limit: int = 100) -> pd.DataFrame:
        """The ``limit`` most recent bars, oldest first."""

    @abstractmethod
    def has_market_data(self, symbol: str, interval: str, start: datetime | date, end: datetime | date) -> bool:
        """Whether any bar lies in ``[start, end)`` (an index probe, not a read)."""

    @abstractmethod
    def extent(self, symbol: str, interval: str) -> tuple[datetime, datetime] | None:
        """Open times of the oldest and newest stored bar (UTC), or None when nothing is stored."""

    @abstractmethod
    def delete_market_data(self, symbol: str, interval: str, bars: pd.DataFrame) -> int:
        """Delete exactly these bars, in one transaction; returns how many rows were deleted.

        A stored row is deleted only if its timestamp is in ``bars`` and every value equals the given one, so a
        row rewritten since ``bars`` was read survives (hot-to-warm migration relies on this).
        """

    @abstractmethod
    def series(self, *, before: datetime | None = None) -> list[HotSeries]:
        """What is stored per symbol and interval (only bars older than ``before``, if given), sorted."""

    @abstractmethod
    def insert_regime_classification(
        self,
        symbol: str,
        interval: str,
        timestamp: datetime,
        regime: int,
        probabilities: Mapping[Any, float],
        features: Mapping[str, Any] | None = None,
    ) -> None:
        """Upsert the regime of one bar; ``probabilities`` and ``features`` are stored as JSON documents."""

    @abstractmethod
    def get_regime_classifications(
        self,
        symbol: str,
        interval: str,
        start: datetime | date | None = None,
        end: datetime | date | None = None,
    ) -> pd.DataFrame:
        """Classifications in ``[start, end)`` (all when omitted), oldest first.

        Columns: ``timestamp``, ``regime`` (int64), ``probabilities`` and ``features`` (dicts, JSON keys are
        strings: ``{0: 0.1}`` comes back as ``{"0": 0.1}``).
        """

    @abstractmethod
    def describe(self) -> str:
        """Where the store is, safe to print."""

    def close(self) -> None:  # noqa: B027 - optional for stores without resources
        """Release connections."""

    def __enter__(self) -> HotStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""The layout of Binance's public data archive (data.binance.vision) for klines.

``{base}/data/{spot|futures/um|futures/cm}/{monthly|daily}/klines/{SYMBOL}/{interval}/{SYMBOL}-{interval}-{period}.zip``
with ``period`` = ``YYYY-MM`` (monthly) or ``YYYY-MM-DD`` (daily), and beside each archive a ``.CHECKSUM`` file
holding ``<sha256 hex>  <archive file name>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum

from marketpipe.domain.errors import InvalidInputError
from marketpipe.domain.value_objects import Interval, Symbol

DEFAULT_BASE_URL = "https://data.binance.vision"
ENV_BASE_URL = "MARKETPIPE_BINANCE_BASE_URL"

# Binance's kline intervals, in the spelling its archive uses ("1mo" is "1M" in the REST API).
BINANCE_INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1mo")
KLINE_COLUMNS = (
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_asset_volume",
    "number_of_trades",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
    "ignore",
)


class Market(StrEnum):
    """Which Binance market: spot, USD-M futures (um) or COIN-M futures (cm)."""

    SPOT = "spot"
    UM = "um"
    CM = "cm"

    @property
    def path(self) -> str:
        return "spot" if self is Market.SPOT else f"futures/{self.value}"

    def lake_symbol(self, symbol: str) -> str:
        """The symbol the lake stores this market's bars under: ``BTCUSDT`` (spot), ``BTCUSDT.UM``, ``BTCUSD_PERP.CM``.

        Spot and futures contracts share names but not prices, so they must never share a partition.
        """
        base = Symbol(symbol).value
        return base if self is Market.SPOT else Symbol(f"{base}.{self.value.upper()}").value


def split_lake_symbol(lake_symbol: str) -> tuple[Market, str]:
    """The market and exchange symbol a lake symbol stands for (the inverse of :meth:`Market.lake_symbol`)."""
    value = Symbol(lake_symbol).value
    base, dot, suffix = value.rpartition(".")
    if dot and suffix.lower() in (Market.UM.value, Market.CM.value):
        return Market(suffix.lower()), base
    return Market.SPOT, value


class Granularity(StrEnum):
    MONTHLY = "monthly"
    DAILY = "daily"


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One kline archive of the Binance layout."""

    market: Market
    symbol: Symbol
    interval: Interval
    granularity: Granularity
    period: date  # first day of the month (monthly) or the day (daily)

    @classmethod
    def of(
        cls, market: str | Market, symbol: str, interval: str, granularity: str | Granularity, period: date
    ) -> ArchiveFile:
        ivl = binance_interval(interval)
        mkt = Market(market)
        if ivl.value == "1s" and mkt is not Market.SPOT:
            raise InvalidInputError("1s klines exist only for the spot market")
        gran = Granularity(granularity)
        first = period.replace(day=1) if gran is Granularity.MONTHLY else period
        return cls(mkt, Symbol(symbol), ivl, gran, first)

    @property
    def period_text(self) -> str:
        return self.period.strftime("%Y-%m") if self.granularity is Granularity.MONTHLY else self.period.isoformat()

    @property
    def file_name(self) -> str:
        return f"{self.symbol}-{self.interval}-{self.period_text}.zip"

    @property
    def csv_name(self) -> str:
        return self.file_name[: -len(".zip")] + ".csv"

    @property
    def relative_path(self) -> str:
        """Path below the base URL (also the path below a local mirror or cache root)."""
        return f"data/{self.market.path}/{self.granularity.value}/klines/{self.symbol}/{self.interval}/{self.file_name}"

    @property
    def checksum_path(self) -> str:
        return self.relative_path + ".CHECKSUM"

    def url(self, base_url: str) -> str:
        return f"{base_url.rstrip('/')}/{self.relative_path}"


def binance_interval(value: str) -> Interval:
    """An Interval Binance publishes klines for; anything else is refused."""
    interval = Interval(value)
    if interval.value not in BINANCE_INTERVALS:
        raise InvalidInputError(f"Binance has no {interval} klines; intervals: {', '.join(BINANCE_INTERVALS)}")
    return interval


def checksum_line(sha256_hex: str, file_name: str) -> str:
    """The text of a ``.CHECKSUM`` file, exactly as Binance writes it."""
    return f"{sha256_hex}  {file_name}\n"

"""The OHLCV bar entity."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from datetime import datetime

from marketpipe.domain.errors import DataValidationError
from marketpipe.domain.value_objects import Interval, Symbol, ns_to_datetime


@dataclass(frozen=True, slots=True)
class OHLCVBar:
    """One bar: open, high, low, close and volume of ``symbol`` over ``[timestamp, timestamp + interval)``.

    ``timestamp_ns`` is the bar's open time in nanoseconds since the Unix epoch (UTC). Volumes are floats:
    crypto volumes are fractional and are never truncated. Construction checks the bar's invariants and raises
    :class:`DataValidationError` if ``low <= open, close <= high`` or ``volume >= 0`` does not hold, or a price
    is not finite.
    """

    symbol: Symbol
    timestamp_ns: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    interval: Interval = field(default_factory=lambda: Interval("1m"))
    trade_count: int | None = None
    quote_volume: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "symbol", Symbol(self.symbol))
        object.__setattr__(self, "interval", Interval(self.interval))
        timestamp: object = self.timestamp_ns  # checked at run time: callers may pass any object
        if isinstance(timestamp, bool) or not isinstance(timestamp, numbers.Integral):
            raise DataValidationError("timestamp", f"timestamp_ns must be an int, got {timestamp!r}")
        object.__setattr__(self, "timestamp_ns", int(self.timestamp_ns))
        for name in ("open", "high", "low", "close", "volume"):
            value = getattr(self, name)
            if not isinstance(value, bool) and isinstance(value, numbers.Real):
                object.__setattr__(self, name, float(value))
        prices = (self.open, self.high, self.low, self.close)
        if not all(isinstance(p, float) and math.isfinite(p) for p in prices):
            raise DataValidationError("finite_prices", f"Bar {self._where()} has a non-finite price: {prices}")
        if not (self.low <= min(self.open, self.close) and max(self.open, self.close) <= self.high):
            raise DataValidationError(
                "ohlc_invariant",
                f"Bar {self._where()} breaks low <= open, close <= high: "
                f"o={self.open} h={self.high} l={self.low} c={self.close}",
            )
        if not (isinstance(self.volume, float) and math.isfinite(self.volume) and self.volume >= 0):
            raise DataValidationError("volume", f"Bar {self._where()} has invalid volume {self.volume!r}")

    def _where(self) -> str:
        return f"{self.symbol}@{self.timestamp_ns}"

    @property
    def timestamp(self) -> datetime:
        """The bar's open time as an aware UTC datetime."""
        return ns_to_datetime(self.timestamp_ns)

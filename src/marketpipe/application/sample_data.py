"""Realistic synthetic bars: a seeded geometric random walk with consistent OHLC and fractional volumes."""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pandas as pd

from marketpipe.domain.value_objects import Interval, datetime_to_ns


def random_walk_bars(
    start: datetime | date,
    periods: int,
    *,
    interval: str = "1m",
    start_price: float = 40_000.0,
    volatility: float = 0.0008,
    seed: int = 0,
    price_decimals: int = 2,
    binance_columns: bool = False,
) -> pd.DataFrame:
    """``periods`` bars from ``start`` in the lake's bar-frame form (``ts_ns``, OHLCV, ``trade_count``).

    Prices are rounded to ``price_decimals`` (the tick size) and always satisfy ``low <= open, close <= high``;
    volumes are fractional (5 decimals). ``binance_columns=True`` adds the rest of Binance's kline columns as
    their archives carry them: ``quote_volume`` and ``taker_buy_quote_volume`` (volume x a price inside the bar,
    8 decimals), ``taker_buy_base_volume`` (a share of the volume) and ``close_time_ns``.
    """
    rng = np.random.default_rng(seed)
    step = Interval(interval).nanoseconds
    ts = datetime_to_ns(start) + np.arange(periods, dtype=np.int64) * step
    close = np.round(start_price * np.exp(np.cumsum(rng.normal(0.0, volatility, periods))), price_decimals)
    open_ = np.r_[np.round(start_price, price_decimals), close[:-1]]
    high = np.round(np.maximum(open_, close) * (1 + np.abs(rng.normal(0.0, volatility / 2, periods))), price_decimals)
    low = np.round(np.minimum(open_, close) * (1 - np.abs(rng.normal(0.0, volatility / 2, periods))), price_decimals)
    high = np.maximum(high, np.maximum(open_, close))
    low = np.minimum(low, np.minimum(open_, close))
    volume = np.round(rng.lognormal(2.0, 1.0, periods), 5)
    trades = rng.integers(1, 5_000, periods)
    bars = pd.DataFrame(
        {
            "ts_ns": ts,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": volume,
            "trade_count": trades,
        }
    )
    if binance_columns:
        vwap = low + (high - low) * rng.uniform(0.0, 1.0, periods)
        taker_base = np.round(volume * rng.uniform(0.3, 0.7, periods), 5)
        bars["quote_volume"] = np.round(volume * vwap, 8)
        bars["taker_buy_base_volume"] = taker_base
        bars["taker_buy_quote_volume"] = np.round(taker_base * vwap, 8)
        bars["close_time_ns"] = ts + step - 1_000_000
    return bars
